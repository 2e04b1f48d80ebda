# Copyright 2026 The braintrace authors. Licensed under the Apache License, Version 2.0.
"""The added cells (UR-LSTM, minGRU, minLSTM, MinimalRNN, CFN, LRU): forward against plain-JAX
references, D-RTRL against BPTT (exact for the element-wise cells), and both online algorithms run."""

import brainstate
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import braintrace
import braintrace.nn as bnn
from tests._support import models
from tests._support.oracle import (
    assert_grads_close,
    bptt_grads,
    cosine,
    flat,
    online_grads,
    restore_states,
    snapshot_states,
)

IN, OUT, STEPS = 3, 4, 5


def _dense(p, xh):
    return xh @ p["weight"] + (p["bias"] if "bias" in p else 0.0)


def _params(cell):
    return {".".join(k): s.value for k, s in cell.states(brainstate.ParamState).items()}


def _mini_gru(p, s, x):
    (h,) = s
    z = jax.nn.sigmoid(_dense(p["Wz.weight"], x))
    h = (1 - z) * h + z * _dense(p["Wh.weight"], x)
    return (h,), h


def _mini_lstm(p, s, x):
    (h,) = s
    f, i = jax.nn.sigmoid(_dense(p["Wf.weight"], x)), jax.nn.sigmoid(_dense(p["Wi.weight"], x))
    h = f / (f + i) * h + i / (f + i) * _dense(p["Wh.weight"], x)
    return (h,), h


def _minimal(p, s, x):
    (h,) = s
    z = jnp.tanh(_dense(p["Wx.weight"], x))
    u = jax.nn.sigmoid(_dense(p["Wu.weight"], jnp.concatenate([z, h], -1)))
    h = u * h + (1 - u) * z
    return (h,), h


def _cfn(p, s, x):
    (h,) = s
    xh = jnp.concatenate([x, h], -1)
    theta, eta = jax.nn.sigmoid(_dense(p["Wt.weight"], xh)), jax.nn.sigmoid(_dense(p["We.weight"], xh))
    h = theta * jnp.tanh(h) + eta * jnp.tanh(_dense(p["Wx.weight"], x))
    return (h,), h


def _urlstm(p, s, x):
    c, h = s
    xh = jnp.concatenate([x, h], -1)
    f = jax.nn.sigmoid(_dense(p["Wf.weight"], xh) + p["bias"])
    r = jax.nn.sigmoid(_dense(p["Wr.weight"], xh) - p["bias"])
    g = 2 * r * f + (1 - 2 * r) * f ** 2
    c = g * c + (1 - g) * jnp.tanh(_dense(p["Wu.weight"], xh))
    h = jax.nn.sigmoid(_dense(p["Wo.weight"], xh)) * jnp.tanh(c)
    return (c, h), h


def _lru(p, s, x):
    """The LRU in complex arithmetic (independent of the real/imaginary split)."""
    (h,) = s
    lam = jnp.exp(-jnp.exp(p["nu_log"]) + 1j * jnp.exp(p["theta_log"]))
    b = p["B_re"] + 1j * p["B_im"]
    c = p["C_re"] + 1j * p["C_im"]
    h = lam * h + jnp.exp(p["gamma_log"]) * (x @ b)
    return (h,), jnp.real(h @ c) + p["D"] * x


CASES = {
    "MiniGRU": (lambda: bnn.MiniGRU(IN, OUT, b_init=brainstate.nn.init.Normal(0.5)), _mini_gru, 1, OUT),
    "MiniLSTM": (lambda: bnn.MiniLSTM(IN, OUT, b_init=brainstate.nn.init.Normal(0.5)), _mini_lstm, 1, OUT),
    "MinimalRNNCell": (lambda: bnn.MinimalRNNCell(IN, OUT, b_init=brainstate.nn.init.Normal(0.5)), _minimal, 1, OUT),
    "CFNCell": (lambda: bnn.CFNCell(IN, OUT, b_init=brainstate.nn.init.Normal(0.5)), _cfn, 1, OUT),
    "URLSTMCell": (lambda: bnn.URLSTMCell(IN, OUT), _urlstm, 2, OUT),
    "LRUCell": (lambda: bnn.LRUCell(IN, 6, r_min=0.5, r_max=0.95), _lru, 1, IN),
}


@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.parametrize("batch", [pytest.param(None, marks=pytest.mark.slow), 2])
def test_forward_matches_reference(name, batch):
    brainstate.random.seed(0)
    factory, step, n_states, n_out = CASES[name]
    cell = factory()
    brainstate.nn.init_all_states(cell, batch)
    lead = () if batch is None else (batch,)
    xs = brainstate.random.randn(STEPS, *lead, IN)
    p = _params(cell)
    hidden = 6 if name == "LRUCell" else OUT
    states = tuple(jnp.zeros(lead + (hidden,), jnp.complex64 if name == "LRUCell" else jnp.float32)
                   for _ in range(n_states))
    expected = []
    for x in xs:
        states, y = step(p, states, x)
        expected.append(y)
    got = jnp.stack([cell(x) for x in xs])
    assert got.shape == (STEPS, *lead, n_out)
    np.testing.assert_allclose(got, jnp.stack(expected), rtol=1e-5, atol=1e-5)


def test_urlstm_forget_bias_is_spread_uniformly_in_gate_space():
    brainstate.random.seed(0)
    cell = bnn.URLSTMCell(IN, 200)
    gates = np.asarray(jax.nn.sigmoid(cell.bias.value))
    assert gates.min() >= 1 / 200 - 1e-6 and gates.max() <= 1 - 1 / 200 + 1e-6
    assert 0.4 < gates.mean() < 0.6 and gates.std() > 0.2  # U(0, 1) has std 0.29
    assert "bias" not in cell.Wf.weight.value


def test_lru_initial_eigenvalues_lie_on_the_ring():
    brainstate.random.seed(0)
    lru = bnn.LRUCell(2, 500, r_min=0.4, r_max=0.9, max_phase=3.0)
    lam = np.asarray(lru.eigenvalues())
    assert np.all(np.abs(lam) >= 0.4 - 1e-5) and np.all(np.abs(lam) <= 0.9 + 1e-5)
    assert np.all(np.angle(lam) >= -1e-6) and np.all(np.angle(lam) <= 3.0 + 1e-5)
    np.testing.assert_allclose(np.exp(np.asarray(lru.gamma_log.value)), np.sqrt(1 - np.abs(lam) ** 2), rtol=1e-4)
    with pytest.raises(ValueError, match="LRUCell.*r_min"):
        bnn.LRUCell(2, 4, r_min=0.9, r_max=0.5)


def test_minimal_rnn_accepts_a_custom_encoder():
    brainstate.random.seed(0)
    encoder = bnn.Linear(IN, OUT)
    cell = bnn.MinimalRNNCell(IN, OUT, phi=encoder)
    assert cell.Wx is None and cell.phi is encoder
    cell.init_state()
    assert cell(jnp.ones(IN)).shape == (OUT,)
    bad = bnn.MinimalRNNCell(IN, OUT, phi=bnn.Linear(IN, OUT + 1))
    bad.init_state()
    with pytest.raises(ValueError, match="MinimalRNNCell.*phi"):
        bad(jnp.ones(IN))


def _pair(model, xs, batch, algorithm=braintrace.D_RTRL, **options):
    brainstate.nn.init_all_states(model, batch)
    snap = snapshot_states(model)
    expected = bptt_grads(model, xs)
    restore_states(model, snap)
    learner = algorithm(model, **options)
    learner.compile_graph(xs[0])
    return expected, online_grads(learner, xs), learner


# Relations per cell (one per gate Linear, plus element-wise parameters).
EXACT = {"MiniGRU": 2, "MiniLSTM": 3, "LRUCell": 5}


@pytest.mark.parametrize("name", sorted(EXACT))
@pytest.mark.parametrize("batch", [None, 2])
def test_d_rtrl_equals_bptt_for_element_wise_cells(name, batch):
    brainstate.random.seed(5)
    factory, _, _, n_out = CASES[name]
    model = models.CellWithReadout(factory(), n_out, 2)
    xs = brainstate.random.randn(12, *((batch, IN) if batch else (IN,)))
    expected, actual, learner = _pair(model, xs, batch)
    assert len(learner.graph.hidden_param_op_relations) == EXACT[name]
    for path, g in flat(expected).items():
        assert np.linalg.norm(g) > 1e-3, path  # every parameter is live
    assert_grads_close(expected, actual, rtol=1e-4, atol=1e-6)


# Dense gating on h: D-RTRL drops the off-diagonal recurrence. Measured cosine with BPTT per
# parameter (12 steps, unbatched, seeds 0-2): min 0.90 (URLSTM Wo, seed 1), mean per cell and
# seed >= 0.93 (MGU, seed 2). GRU's Wr reaches h only through Wh and is not compared.
APPROX = ["GRUCell", "LSTMCell", "MGUCell", "URLSTMCell", "MinimalRNNCell", "CFNCell"]


@pytest.mark.parametrize("seed", [0, pytest.param(1, marks=pytest.mark.slow), pytest.param(2, marks=pytest.mark.slow)])
@pytest.mark.parametrize("name", APPROX)
def test_d_rtrl_aligns_with_bptt_for_gated_cells(name, seed):
    brainstate.random.seed(seed)
    model = models.CellWithReadout(getattr(bnn, name)(IN, 5), 5, 2)
    xs = brainstate.random.randn(12, IN)
    expected, actual, learner = _pair(model, xs, None)
    e, a = flat(expected), flat(actual)
    # The readout has no trace: exact.
    np.testing.assert_allclose(a[("out", "weight")], e[("out", "weight")], rtol=1e-4, atol=1e-6)
    cosines = {p: cosine(e[p], a[p]) for p in e if p[0] == "cell" and (name, p[1]) != ("GRUCell", "Wr")}
    for p in cosines:
        assert np.linalg.norm(e[p]) > 1e-3, p  # live network
    assert np.mean(list(cosines.values())) > 0.9 and min(cosines.values()) > 0.8, cosines


@pytest.mark.parametrize("name", APPROX + sorted(EXACT) + ["ValinaRNNCell"])
def test_es_d_rtrl_compiles_and_runs(name):
    brainstate.random.seed(7)
    factory = CASES[name][0] if name in CASES else (lambda: getattr(bnn, name)(IN, OUT))
    n_out = IN if name == "LRUCell" else OUT
    model = models.CellWithReadout(factory(), n_out, 2)
    xs = brainstate.random.randn(4, 2, IN)
    expected, actual, learner = _pair(model, xs, 2, braintrace.ES_D_RTRL, decay_or_rank=0.9)
    assert set(actual) == set(expected)
    e, a = flat(expected), flat(actual)
    for path in a:
        assert np.all(np.isfinite(a[path])), path
    np.testing.assert_allclose(a[("out", "weight")], e[("out", "weight")], rtol=1e-4, atol=1e-6)
    assert any(np.linalg.norm(a[p]) > 1e-4 for p in a if p[0] == "cell")
