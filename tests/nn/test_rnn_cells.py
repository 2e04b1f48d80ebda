# Copyright 2026 The braintrace authors. Licensed under the Apache License, Version 2.0.
"""Recurrent cells against plain-JAX re-implementations with the same weights."""

import brainstate
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import braintrace.nn

IN, OUT, BATCH, STEPS = 3, 4, 2, 4


def _dense(params, name, xh):
    p = params[(name, "weight")]
    return xh @ p["weight"] + p["bias"]


def _rnn_step(params, states, x):
    (h,) = states
    h = jax.nn.relu(_dense(params, "W", jnp.concatenate([x, h], -1)))  # the default activation
    return (h,), h


def _gru_step(params, states, x):
    (h,) = states
    xh = jnp.concatenate([x, h], -1)
    r = jax.nn.sigmoid(_dense(params, "Wr", xh))
    z = jax.nn.sigmoid(_dense(params, "Wz", xh))
    cand = jnp.tanh(_dense(params, "Wh", jnp.concatenate([x, r * h], -1)))
    h = (1 - z) * h + z * cand
    return (h,), h


def _lstm_step(params, states, x):
    h, c = states
    xh = jnp.concatenate([x, h], -1)
    i = jax.nn.sigmoid(_dense(params, "Wi", xh))
    g = jnp.tanh(_dense(params, "Wg", xh))
    f = jax.nn.sigmoid(_dense(params, "Wf", xh) + 1.0)
    o = jax.nn.sigmoid(_dense(params, "Wo", xh))
    c = f * c + i * g
    h = o * jnp.tanh(c)
    return (h, c), h


def _mgu_step(params, states, x):
    (h,) = states
    f = jax.nn.sigmoid(_dense(params, "Wf", jnp.concatenate([x, h], -1)))
    cand = jnp.tanh(_dense(params, "Wh", jnp.concatenate([x, f * h], -1)))
    h = (1 - f) * h + f * cand
    return (h,), h


CASES = {
    "rnn": (braintrace.nn.ValinaRNNCell, _rnn_step, ("h",)),
    "gru": (braintrace.nn.GRUCell, _gru_step, ("h",)),
    "lstm": (braintrace.nn.LSTMCell, _lstm_step, ("h", "c")),
    "mgu": (braintrace.nn.MGUCell, _mgu_step, ("h",)),
}


def _make(name):
    brainstate.random.seed(0)
    cls, step, hidden_names = CASES[name]
    # Nonzero biases, so the reference checks that they are used.
    cell = cls(IN, OUT, b_init=brainstate.nn.init.Normal(0.5))
    return cell, step, hidden_names


def _reference_unroll(step, params, xs, n_hidden):
    states = tuple(jnp.zeros(xs.shape[1:-1] + (OUT,)) for _ in range(n_hidden))
    outs = []
    for x in xs:
        states, h = step(params, states, x)
        outs.append(h)
    return jnp.stack(outs)


def test_vanilla_alias_is_the_same_class():
    assert braintrace.nn.VanillaRNNCell is braintrace.nn.ValinaRNNCell


@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.parametrize("batch_size", [None, BATCH])
def test_init_and_reset_shapes(name, batch_size):
    cell, _, hidden_names = _make(name)
    brainstate.nn.init_all_states(cell, batch_size)
    shape = (OUT,) if batch_size is None else (batch_size, OUT)
    hidden = cell.states(brainstate.HiddenState)
    assert len(hidden) == len(hidden_names)
    for hidden_name in hidden_names:
        assert getattr(cell, hidden_name).value.shape == shape
    x = jnp.ones(shape[:-1] + (IN,))
    assert cell(x).shape == shape
    cell.reset_state(batch_size)
    for hidden_name in hidden_names:
        np.testing.assert_array_equal(getattr(cell, hidden_name).value, jnp.zeros(shape))


@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.parametrize("batch_size", [None, BATCH])
def test_forward_matches_reference(name, batch_size):
    cell, step, hidden_names = _make(name)
    cell.init_state(batch_size)
    lead = () if batch_size is None else (batch_size,)
    xs = brainstate.random.randn(STEPS, *lead, IN)
    params = {k: s.value for k, s in cell.states(brainstate.ParamState).items()}
    expected = _reference_unroll(step, params, xs, len(hidden_names))
    got = jnp.stack([cell(x) for x in xs])
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", sorted(CASES))
def test_gradient_through_unrolled_steps_matches_reference(name):
    cell, step, hidden_names = _make(name)
    cell.init_state(BATCH)
    xs = brainstate.random.randn(STEPS, BATCH, IN)
    param_states = cell.states(brainstate.ParamState)

    def loss():
        cell.reset_state(BATCH)
        return sum(jnp.sum(cell(x) ** 2) for x in xs)

    grads = brainstate.transform.grad(loss, grad_states=param_states)()

    def reference_loss(params):
        return jnp.sum(_reference_unroll(step, params, xs, len(hidden_names)) ** 2)

    params = {k: s.value for k, s in param_states.items()}
    expected = jax.grad(reference_loss)(params)
    assert set(grads) == set(expected)
    for key in expected:
        for leaf in ("weight", "bias"):
            g = grads[key][leaf]
            assert bool(jnp.all(jnp.isfinite(g)))
            np.testing.assert_allclose(g, expected[key][leaf], rtol=1e-4, atol=1e-6)


def test_lstm_forget_bias_is_used():
    brainstate.random.seed(0)
    a = braintrace.nn.LSTMCell(IN, OUT)
    brainstate.random.seed(0)
    b = braintrace.nn.LSTMCell(IN, OUT)
    assert a.forget_bias == 1.0
    b.forget_bias = 0.0
    for cell in (a, b):
        cell.init_state()
    x = jnp.ones(IN)
    # The forget gate multiplies the previous cell state, which is zero on the first step.
    np.testing.assert_allclose(a(x), b(x), rtol=1e-6)
    assert not np.allclose(a(x), b(x))


def test_rnn_activation_must_be_a_name_or_callable():
    with pytest.raises(TypeError, match="ValinaRNNCell.*activation"):
        braintrace.nn.ValinaRNNCell(IN, OUT, activation=1.0)
    with pytest.raises(ValueError, match="ValinaRNNCell.*activation.*known names"):
        braintrace.nn.ValinaRNNCell(IN, OUT, activation="tahn")


def test_jitted_step_matches_eager_step():
    cell, _, _ = _make("gru")
    brainstate.nn.init_all_states(cell, BATCH)
    x = brainstate.random.randn(BATCH, IN)
    step = brainstate.transform.jit(lambda inp: cell(inp))
    jitted = [step(x) for _ in range(2)]
    cell.reset_state(BATCH)
    eager = [cell(x) for _ in range(2)]
    np.testing.assert_allclose(jnp.stack(jitted), jnp.stack(eager), rtol=1e-6, atol=1e-7)
