# Copyright 2026 The braintrace authors. Licensed under the Apache License, Version 2.0.
import brainstate
import jax.numpy as jnp
import numpy as np
import pytest

import braintrace.nn


def test_parameters_live_in_one_param_state():
    layer = braintrace.nn.Linear(3, 2)
    assert isinstance(layer.weight, brainstate.ParamState)
    assert layer.weight.value["weight"].shape == (3, 2)
    assert layer.weight.value["bias"].shape == (2,)
    assert len(layer.states(brainstate.ParamState)) == 1


def test_without_bias_has_no_bias_key():
    layer = braintrace.nn.Linear(3, 2, bias=False)
    assert set(layer.weight.value) == {"weight"}
    x = jnp.arange(3.0)
    np.testing.assert_allclose(layer(x), x @ layer.weight.value["weight"], rtol=1e-6)


@pytest.mark.parametrize("shape", [(3,), (5, 3), (4, 5, 3)])
def test_forward_matches_dense_product(shape):
    brainstate.random.seed(0)
    layer = braintrace.nn.Linear(3, 2, b_init=jnp.array([0.5, -1.0]))
    x = brainstate.random.randn(*shape)
    params = layer.weight.value
    y = layer(x)
    assert y.shape == (*shape[:-1], 2)
    np.testing.assert_allclose(y, x @ params["weight"] + params["bias"], rtol=1e-5, atol=1e-6)


def test_array_initialiser_is_used_as_given():
    w = jnp.arange(6.0).reshape(3, 2)
    layer = braintrace.nn.Linear(3, 2, w_init=w)
    np.testing.assert_array_equal(layer.weight.value["weight"], w)


def test_wrong_array_shape_is_rejected():
    with pytest.raises(ValueError):
        braintrace.nn.Linear(3, 2, w_init=jnp.ones((2, 3)))
