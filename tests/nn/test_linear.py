# Copyright 2026 The braintrace authors. Licensed under the Apache License, Version 2.0.
import brainstate
import braintools
import brainunit as u
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import braintrace
import braintrace.nn
from tests._support.oracle import assert_grads_close, bptt_grads, online_grads, restore_states, snapshot_states


def test_parameters_live_in_one_param_state():
    layer = braintrace.nn.Linear(3, 2)
    assert isinstance(layer.weight, brainstate.ParamState)
    assert layer.weight.value["weight"].shape == (3, 2)
    assert layer.weight.value["bias"].shape == (2,)
    assert len(layer.states(brainstate.ParamState)) == 1


def test_b_init_none_has_no_bias_key():
    layer = braintrace.nn.Linear(3, 2, b_init=None)
    assert set(layer.weight.value) == {"weight"}
    x = jnp.arange(3.0)
    np.testing.assert_allclose(layer(x), x @ layer.weight.value["weight"], rtol=1e-6)


def test_param_type_is_the_state_class():
    class MyParam(brainstate.ParamState):
        pass

    layer = braintrace.nn.Linear(3, 2, param_type=MyParam)
    assert type(layer.weight) is MyParam


@pytest.mark.parametrize("shape", [(3,), (5, 3), (4, 5, 3)])
def test_forward_matches_dense_product(shape):
    brainstate.random.seed(0)
    layer = braintrace.nn.Linear(3, 2, b_init=jnp.array([0.5, -1.0]))
    x = brainstate.random.randn(*shape)
    params = layer.weight.value
    y = layer(x)
    assert y.shape == (*shape[:-1], 2)
    np.testing.assert_allclose(y, x @ params["weight"] + params["bias"], rtol=1e-5, atol=1e-6)


def test_tuple_sizes_use_the_last_axis():
    layer = braintrace.nn.Linear((4, 3), (4, 2))
    assert layer.in_size == (4, 3) and layer.out_size == (4, 2)
    assert layer.weight.value["weight"].shape == (3, 2)
    assert layer(jnp.ones((4, 3))).shape == (4, 2)
    with pytest.raises(ValueError, match="leading axes"):
        braintrace.nn.Linear((4, 3), (5, 2))


def test_array_initialiser_is_used_as_given():
    w = jnp.arange(6.0).reshape(3, 2)
    layer = braintrace.nn.Linear(3, 2, w_init=w)
    np.testing.assert_array_equal(layer.weight.value["weight"], w)


def test_wrong_array_shape_is_rejected():
    with pytest.raises(ValueError, match="Linear.*w_init"):
        braintrace.nn.Linear(3, 2, w_init=jnp.ones((2, 3)))


def test_input_of_the_wrong_size_names_the_layer_and_argument():
    layer = braintrace.nn.Linear(3, 2)
    with pytest.raises(ValueError, match=r"`Linear`.*`in_size` = 3.*\(5, 4\)"):
        layer(jnp.ones((5, 4)))


def test_mask_of_the_wrong_shape_is_rejected():
    with pytest.raises(ValueError, match=r"`Linear`: `w_mask` must have shape \(3, 2\)"):
        braintrace.nn.Linear(3, 2, w_mask=jnp.ones((2, 3)))


def test_mask_is_applied_in_the_forward_pass():
    w = jnp.arange(1.0, 7.0).reshape(3, 2)
    mask = jnp.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    layer = braintrace.nn.Linear(3, 2, w_init=w, b_init=None, w_mask=mask)
    x = jnp.array([1.0, 10.0, 100.0])
    np.testing.assert_allclose(layer(x), jnp.array([1.0 + 500.0, 40.0 + 600.0]), rtol=1e-6)
    # A row mask (I, 1) broadcasts over the outputs.
    rows = braintrace.nn.Linear(3, 2, w_init=w, b_init=None, w_mask=jnp.array([[1.0], [0.0], [1.0]]))
    np.testing.assert_allclose(rows(x), jnp.array([1.0 + 500.0, 2.0 + 600.0]), rtol=1e-6)


class _MaskedLeaky(brainstate.nn.Module):
    """``h = 0.8 h + tanh(Linear_masked(x))`` with a readout: an element-wise (exact) model."""

    def __init__(self, mask):
        super().__init__()
        self.inp = braintrace.nn.Linear(3, 4, w_mask=mask)
        self.out = braintrace.nn.Linear(4, 2)

    def init_state(self, batch_size=None, **kwargs):
        self.h = brainstate.HiddenState(jnp.zeros((4,) if batch_size is None else (batch_size, 4)))

    def update(self, x):
        self.h.value = 0.8 * self.h.value + jnp.tanh(self.inp(x))
        return self.out(self.h.value)


@pytest.mark.parametrize("batch", [None, 2])
def test_mask_d_rtrl_equals_bptt_and_masked_entries_get_zero_gradient(batch):
    brainstate.random.seed(1)
    mask = jnp.asarray(np.random.RandomState(0).rand(3, 4) > 0.5, jnp.float32)
    model = _MaskedLeaky(mask)
    brainstate.nn.init_all_states(model, batch)
    xs = brainstate.random.randn(10, *((batch, 3) if batch else (3,)))
    snap = snapshot_states(model)
    expected = bptt_grads(model, xs)
    restore_states(model, snap)
    learner = braintrace.D_RTRL(model)
    learner.compile_graph(xs[0])
    actual = online_grads(learner, xs)
    assert_grads_close(expected, actual, rtol=1e-4, atol=1e-6)
    g = np.asarray(actual[("inp", "weight")]["weight"])
    assert np.all(g[np.asarray(mask) == 0] == 0.0)
    assert np.min(np.abs(g[np.asarray(mask) == 1])) > 1e-6


def test_unitful_weight_gives_the_default_bias_its_unit():
    layer = braintrace.nn.Linear(3, 2, w_init=braintools.init.KaimingNormal(unit=u.mA))
    assert u.get_unit(layer.weight.value["bias"]) == u.mA
    y = layer(jnp.ones(3))
    assert u.get_unit(y) == u.mA
    np.testing.assert_allclose(y.to_decimal(u.mA), jnp.sum(layer.weight.value["weight"].to_decimal(u.mA), 0),
                               rtol=1e-6)
    explicit = braintrace.nn.Linear(3, 2, w_init=braintools.init.KaimingNormal(unit=u.mA),
                                    b_init=braintools.init.ZeroInit(unit=u.mA))
    assert u.get_unit(explicit(jnp.ones(3))) == u.mA


def test_unitful_layer_gradient_is_the_plain_gradient():
    brainstate.random.seed(2)
    layer = braintrace.nn.Linear(3, 2, w_init=braintools.init.KaimingNormal(unit=u.mA))
    x = brainstate.random.randn(3)
    grads = brainstate.transform.grad(lambda: jnp.sum(layer(x).to_decimal(u.mA) ** 2),
                                      grad_states=layer.states(brainstate.ParamState))()
    w = layer.weight.value["weight"].to_decimal(u.mA)
    expected = jax.grad(lambda w_: jnp.sum((x @ w_) ** 2))(w)
    np.testing.assert_allclose(u.get_mantissa(grads[("weight",)]["weight"]), expected, rtol=1e-5)
