# Copyright 2026 The braintrace authors. Licensed under the Apache License, Version 2.0.
import brainstate
import jax.numpy as jnp
import numpy as np
import pytest

import braintrace.nn


@pytest.mark.parametrize("batch_size", [None, 3])
def test_init_reset_and_shapes(batch_size):
    readout = braintrace.nn.LeakyRateReadout(4, 2)
    brainstate.nn.init_all_states(readout, batch_size)
    shape = (2,) if batch_size is None else (batch_size, 2)
    assert readout.r.value.shape == shape
    assert readout(jnp.ones(shape[:-1] + (4,))).shape == shape
    readout.reset_state(batch_size)
    np.testing.assert_array_equal(readout.r.value, jnp.zeros(shape))


def test_forward_matches_low_pass_filter_of_the_projection():
    brainstate.random.seed(0)
    readout = braintrace.nn.LeakyRateReadout(4, 2, tau=5.0, dt=0.5)
    readout.init_state(3)
    w = readout.weight.value["weight"]
    decay = np.exp(-0.5 / 5.0)
    r = jnp.zeros((3, 2))
    for _ in range(5):
        x = brainstate.random.rand(3, 4)
        r = decay * r + (1 - decay) * (x @ w)
        np.testing.assert_allclose(readout(x), r, rtol=1e-5, atol=1e-6)


def test_constant_input_drives_readout_to_the_projection():
    readout = braintrace.nn.LeakyRateReadout(2, 1, tau=2.0, w_init=jnp.array([[1.0], [2.0]]))
    readout.init_state()
    for _ in range(100):
        r = readout(jnp.array([1.0, 1.0]))
    np.testing.assert_allclose(r, [3.0], rtol=1e-4)


def test_gradient_of_the_weight_is_finite_and_nonzero():
    readout = braintrace.nn.LeakyRateReadout(3, 2)
    readout.init_state()
    params = readout.states(brainstate.ParamState)

    def loss():
        readout.reset_state()
        return sum(jnp.sum(readout(jnp.ones(3)) ** 2) for _ in range(3))

    grads = brainstate.transform.grad(loss, grad_states=params)()
    g = grads[("weight",)]["weight"]
    assert bool(jnp.all(jnp.isfinite(g))) and bool(jnp.any(g != 0))
