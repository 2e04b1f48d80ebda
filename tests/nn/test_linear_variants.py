# Copyright 2026 The braintrace authors. Licensed under the Apache License, Version 2.0.
"""SignedWLinear and ScaledWSLinear: forward against plain NumPy, online gradients against BPTT."""

import brainstate
import jax.numpy as jnp
import numpy as np
import pytest

import braintrace
import braintrace.nn as bnn
from tests._support.oracle import assert_grads_close, bptt_grads, online_grads, restore_states, snapshot_states


def test_signed_forward_uses_magnitude_times_sign():
    w = np.array([[1.0, -2.0], [-3.0, 4.0], [0.5, 0.25]], np.float32)
    sign = np.array([[1.0, 1.0], [-1.0, -1.0], [1.0, -1.0]], np.float32)
    x = np.array([1.0, 2.0, 4.0], np.float32)
    layer = bnn.SignedWLinear(3, 2, w_init=jnp.asarray(w), w_sign=jnp.asarray(sign))
    np.testing.assert_allclose(layer(jnp.asarray(x)), x @ (np.abs(w) * sign), rtol=1e-6)
    unsigned = bnn.SignedWLinear(3, 2, w_init=jnp.asarray(w))
    np.testing.assert_allclose(unsigned(jnp.asarray(x)), x @ np.abs(w), rtol=1e-6)
    assert unsigned(jnp.asarray(np.abs(x))).min() >= 0


def test_signed_rejects_bad_signs_and_inputs():
    with pytest.raises(ValueError, match="SignedWLinear.*w_sign.*\\+1 and -1"):
        bnn.SignedWLinear(3, 2, w_sign=jnp.zeros((3, 2)))
    with pytest.raises(ValueError, match="SignedWLinear.*w_sign.*shape"):
        bnn.SignedWLinear(3, 2, w_sign=jnp.ones((2, 3)))
    with pytest.raises(ValueError, match="SignedWLinear.*in_size"):
        bnn.SignedWLinear(3, 2)(jnp.ones(4))


def _reference_ws(w, gain, eps):
    w = np.asarray(w, np.float64)
    mean, var = w.mean(0, keepdims=True), w.var(0, keepdims=True)
    return (w - mean) / np.sqrt(var * w.shape[0] + eps) * gain


def test_scaled_ws_forward_matches_standardisation():
    brainstate.random.seed(0)
    layer = bnn.ScaledWSLinear(5, 3, b_init=jnp.array([0.1, 0.2, 0.3]), w_mask=jnp.array([[1.0, 0.0, 1.0]] * 5))
    gain = np.array([[0.5, 2.0, -1.0]])
    layer.weight.value = {**layer.weight.value, "gain": jnp.asarray(gain, jnp.float32)}
    x = np.asarray(brainstate.random.randn(4, 5))
    params = layer.weight.value
    w_hat = _reference_ws(params["weight"], gain, 1e-4) * np.array([[1.0, 0.0, 1.0]])
    np.testing.assert_allclose(layer(jnp.asarray(x)), x @ w_hat + np.array([0.1, 0.2, 0.3]), rtol=1e-5, atol=1e-6)
    # Standardised columns have unit norm times the gain (fan-in scaling).
    np.testing.assert_allclose(np.linalg.norm(_reference_ws(params["weight"], 1.0, 0.0), axis=0), 1.0, rtol=1e-5)


def test_scaled_ws_keys_follow_the_options():
    assert sorted(bnn.ScaledWSLinear(4, 3).weight.value) == ["bias", "gain", "weight"]
    assert bnn.ScaledWSLinear(4, 3).weight.value["gain"].shape == (1, 3)
    assert sorted(bnn.ScaledWSLinear(4, 3, b_init=None, ws_gain=False).weight.value) == ["weight"]
    layer = bnn.ScaledWSLinear(4, 3, b_init=None, ws_gain=False)
    x = jnp.ones((2, 4)) * jnp.arange(4.0)
    np.testing.assert_allclose(layer(x), np.asarray(x) @ _reference_ws(layer.weight.value["weight"], 1.0, 1e-4),
                               rtol=1e-5, atol=1e-6)


class _Leaky(brainstate.nn.Module):
    """``h = 0.7 h + tanh(layer(x))`` with a readout: D-RTRL is exact for the input layer."""

    def __init__(self, layer):
        super().__init__()
        self.inp = layer
        self.out = bnn.Linear(4, 2)

    def init_state(self, batch_size=None, **kwargs):
        self.h = brainstate.HiddenState(jnp.zeros((4,) if batch_size is None else (batch_size, 4)))

    def update(self, x):
        self.h.value = 0.7 * self.h.value + jnp.tanh(self.inp(x))
        return self.out(self.h.value)


@pytest.mark.parametrize("factory", [
    lambda: bnn.SignedWLinear(3, 4, w_sign=jnp.where(jnp.arange(12).reshape(3, 4) % 3 == 0, -1.0, 1.0)),
    lambda: bnn.ScaledWSLinear(3, 4),
    lambda: bnn.ScaledWSLinear(3, 4, w_mask=jnp.eye(3, 4), b_init=None),
], ids=["signed", "scaled_ws", "scaled_ws_masked"])
@pytest.mark.parametrize("batch", [None, 2])
def test_online_gradient_equals_bptt(factory, batch):
    brainstate.random.seed(3)
    model = _Leaky(factory())
    brainstate.nn.init_all_states(model, batch)
    xs = brainstate.random.randn(10, *((batch, 3) if batch else (3,)))
    snap = snapshot_states(model)
    expected = bptt_grads(model, xs)
    restore_states(model, snap)
    learner = braintrace.D_RTRL(model)
    learner.compile_graph(xs[0])
    actual = online_grads(learner, xs)
    assert len(learner.graph.hidden_param_op_relations) == 1
    assert_grads_close(expected, actual, rtol=1e-4, atol=1e-6)
    leaves = expected[("inp", "weight")]
    leaves = leaves if isinstance(leaves, dict) else {"weight": leaves}
    for key, g in leaves.items():
        assert np.linalg.norm(g) > 1e-3, key  # every leaf (weight, gain, bias) is live
