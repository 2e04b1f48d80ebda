"""Multi-step windows: the full-window identity, a hand-computed window reference, errors.

In a window ``[t0, t1]`` the gradient is exact reverse mode through the window's steps with
``h^{t0-1}`` fixed, plus ``Σ_g <∂L_window/∂h^{t0-1}_g, ε^{t0-1}_g>`` (reference-behaviour
§3.2). One window over the whole sequence has zero traces at entry, so it is BPTT.
"""

import brainstate
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import braintrace
import braintrace.nn as bnn
from braintrace import MultiStepData, SingleStepData
from tests._support import models
from tests._support.oracle import assert_grads_close, bptt_grads, flat, restore_states, snapshot_states

T = 6


def window_loss(learner):
    """Per-step squared loss of a window call: a ``(k,)`` vector."""
    return lambda xs: jnp.sum(learner(MultiStepData(xs)) ** 2, axis=-1)


def windowed_grads(learner, xs, chunk_size):
    return learner.etrace_grad(xs, step_fn=window_loss(learner), chunk_size=chunk_size, reduction="sum")


def single_step_grads(learner, xs):
    return learner.etrace_grad(xs, step_fn=lambda x: jnp.sum(learner(x) ** 2), reduction="sum")


def relative_deviation(expected, actual) -> float:
    e, a = flat(expected), flat(actual)
    num = np.sqrt(sum(np.sum((a[p] - e[p]) ** 2) for p in e))
    den = np.sqrt(sum(np.sum(e[p] ** 2) for p in e))
    return float(num / den)


# ----------------------------------------------------------------------------------------
# The full-window identity
# ----------------------------------------------------------------------------------------
MODELS = {
    "gru": models.gru,
    "lstm": models.lstm,
    "elman": models.elman,
    "lif": lambda: models.SpikingNet(neuron="lif"),
}
ENGINES = {
    "d_rtrl": (braintrace.D_RTRL, {}),
    "es_d_rtrl": (braintrace.ES_D_RTRL, {"decay_or_rank": 0.9}),
}


@pytest.mark.parametrize("engine", sorted(ENGINES))
@pytest.mark.parametrize("name", sorted(MODELS))
def test_one_window_over_the_sequence_equals_bptt(name, engine):
    brainstate.random.seed(11)
    model = MODELS[name]()
    brainstate.nn.init_all_states(model)
    xs = brainstate.random.uniform(0.0, 2.0, (T, 3))
    snap = snapshot_states(model)
    expected = bptt_grads(model, xs)
    restore_states(model, snap)
    cls, options = ENGINES[engine]
    learner = cls(model, vjp_method="multi-step", **options)
    learner.compile_graph(xs[0])
    actual = windowed_grads(learner, xs, chunk_size=T)
    norm = max(float(np.max(np.abs(g))) for g in flat(expected).values())
    assert norm > 1e-2, "the model must be live (a non-trivial BPTT gradient)"
    assert_grads_close(expected, actual, rtol=1e-5, atol=1e-6 * norm)
    # The single-step rule is not exact on these models: the identity is the window's.
    restore_states(model, snap)
    online = cls(model, **options)
    online.compile_graph(xs[0])
    if name != "lif" or engine != "d_rtrl":  # D-RTRL is exact on the element-wise LIF
        assert relative_deviation(expected, single_step_grads(online, xs)) > 1e-3


# ----------------------------------------------------------------------------------------
# Finite windows against a hand-written reference of the identity
# ----------------------------------------------------------------------------------------
LEAK = 0.5


class LeakyRecurrent(brainstate.nn.Module):
    """``h = 0.5 h + tanh(W x + U h)`` with a readout: D-RTRL is not exact (U mixes positions)."""

    def __init__(self, n_in=2, n_hidden=3, n_out=2):
        super().__init__()
        self.n_hidden = n_hidden
        self.W = bnn.Linear(n_in, n_hidden)
        self.U = bnn.Linear(n_hidden, n_hidden)
        self.out = bnn.Linear(n_hidden, n_out)

    def init_state(self, batch_size=None, **kwargs):
        self.h = brainstate.HiddenState(jnp.zeros(self.n_hidden))

    def update(self, x):
        self.h.value = LEAK * self.h.value + jnp.tanh(self.W(x) + self.U(self.h.value))
        return self.out(self.h.value)


def _plain_params(model):
    return {name: {k: jnp.asarray(v) for k, v in getattr(model, name).weight.value.items()}
            for name in ("W", "U", "out")}


def reference_window_grads(params, xs, chunk_size):
    """The window identity written in plain JAX, with independently written D-RTRL traces.

    Per window: ``jax.grad`` of the window loss w.r.t. the parameters and the entry hidden
    state ``h0`` (unrolled steps), plus ``Σ_o ∂L/∂h0_o · ε[..., o]`` for W and U (weight
    and bias), whose traces follow ``ε ← 0.5 ε + (1 - tanh(y)²) ⊗ input``.
    """

    def step(p, h, x):
        pre = x @ p["W"]["weight"] + p["W"]["bias"] + h @ p["U"]["weight"] + p["U"]["bias"]
        h_new = LEAK * h + jnp.tanh(pre)
        return h_new, h_new @ p["out"]["weight"] + p["out"]["bias"], pre

    def window_loss(p, h0, window):
        total, h = 0.0, h0
        for x in window:
            h, y, _ = step(p, h, x)
            total = total + jnp.sum(y ** 2)
        return total

    n_hidden = params["U"]["weight"].shape[0]
    traces = {"W": {"weight": jnp.zeros_like(params["W"]["weight"]), "bias": jnp.zeros(n_hidden)},
              "U": {"weight": jnp.zeros_like(params["U"]["weight"]), "bias": jnp.zeros(n_hidden)}}
    grads = jax.tree.map(jnp.zeros_like, params)
    trace_part = jax.tree.map(jnp.zeros_like, params)
    h = jnp.zeros(n_hidden)
    for start in range(0, len(xs), chunk_size):
        window = xs[start:start + chunk_size]
        g_params, g_h0 = jax.grad(window_loss, argnums=(0, 1))(params, h, window)
        grads = jax.tree.map(jnp.add, grads, g_params)
        for name in ("W", "U"):
            for leaf in ("weight", "bias"):
                term = g_h0 * traces[name][leaf]  # broadcast over the input axis of the weight
                grads[name][leaf] = grads[name][leaf] + term
                trace_part[name][leaf] = trace_part[name][leaf] + term
        for x in window:  # advance the traces (and h) over the window
            h_new, _, pre = step(params, h, x)
            df = 1.0 - jnp.tanh(pre) ** 2
            traces["W"] = {"weight": LEAK * traces["W"]["weight"] + x[:, None] * df,
                           "bias": LEAK * traces["W"]["bias"] + df}
            traces["U"] = {"weight": LEAK * traces["U"]["weight"] + h[:, None] * df,
                           "bias": LEAK * traces["U"]["bias"] + df}
            h = h_new
    return grads, trace_part


@pytest.mark.parametrize("chunk_size", [1, 2, 3])
def test_finite_windows_equal_the_hand_written_identity(chunk_size):
    brainstate.random.seed(5)
    model = LeakyRecurrent()
    brainstate.nn.init_all_states(model)
    xs = brainstate.random.randn(T, 2)
    params = _plain_params(model)
    snap = snapshot_states(model)
    bptt = bptt_grads(model, xs)
    restore_states(model, snap)
    online = braintrace.D_RTRL(model)
    online.compile_graph(xs[0])
    single = single_step_grads(online, xs)
    restore_states(model, snap)

    learner = braintrace.D_RTRL(model, vjp_method="multi-step")
    learner.compile_graph(xs[0])
    if chunk_size == 1:  # a plain input to a multi-step learner is a window of one step
        actual = single_step_grads(learner, xs)
    else:
        actual = windowed_grads(learner, xs, chunk_size)
    reference, trace_part = reference_window_grads(params, xs, chunk_size)
    expected = {(name, "weight"): g for name, g in reference.items()}
    assert_grads_close(expected, actual, rtol=1e-5, atol=1e-6)
    # The entry-trace term is a sizable part of the gradient, so its scale is pinned.
    share = relative_deviation(expected, {(n, "weight"): jax.tree.map(jnp.subtract, reference[n], trace_part[n])
                                          for n in reference})
    assert share > 0.05
    # ...and finite windows are neither BPTT nor the single-step rule.
    assert relative_deviation(bptt, actual) > 1e-2
    assert relative_deviation(single, actual) > 1e-2
