"""`nn.GroupedLinear`: parameters, forward, errors, D-RTRL == BPTT, Vmap and jit."""

import brainstate
import braintools
import brainunit as u
import jax.numpy as jnp
import numpy as np
import pytest

import braintrace
import braintrace.nn as bnn
from tests._support.oracle import assert_grads_close, bptt_grads, online_grads, restore_states, snapshot_states

TOL = dict(rtol=1e-5, atol=1e-5)


def randn(seed, shape):
    return jnp.asarray(np.random.RandomState(seed).randn(*shape), dtype=jnp.float32)


def test_parameters_and_forward():
    brainstate.random.seed(0)
    layer = bnn.GroupedLinear(3, 40, 30)
    p = layer.weight.value
    assert p["weight"].shape == (3, 40, 30) and p["bias"].shape == (3, 30)
    # KaimingNormal is drawn per group: the fan-in is K = 40, not G·K
    assert float(jnp.std(p["weight"])) == pytest.approx(np.sqrt(2 / 40), rel=0.1)
    x = randn(1, (5, 3, 40))
    expected = jnp.stack([x[:, g] @ p["weight"][g] + p["bias"][g] for g in range(3)], axis=1)
    np.testing.assert_allclose(layer(x), expected, **TOL)
    np.testing.assert_allclose(layer(x[0]), expected[0], **TOL)
    np.testing.assert_allclose(brainstate.transform.jit(layer)(x), expected, **TOL)
    assert sorted(bnn.GroupedLinear(2, 3, 4, b_init=None).weight.value) == ["weight"]


def test_array_init_units_and_errors():
    w = randn(2, (2, 3, 4))
    layer = bnn.GroupedLinear(2, 3, 4, w_init=w * u.mA)
    y = layer(randn(3, (2, 3)))
    assert isinstance(y, u.Quantity) and y.unit == u.mA  # the unitless default bias took the weight's unit
    with pytest.raises(ValueError, match=r"`GroupedLinear`: `w_init` does not give an array of shape \(2, 3, 5\)"):
        bnn.GroupedLinear(2, 3, 5, w_init=w)
    with pytest.raises(ValueError, match="`GroupedLinear`: `num_groups` must be a positive int"):
        bnn.GroupedLinear(0, 3, 4)
    with pytest.raises(ValueError, match=r"trailing axes must be .* \(2, 3\); got an input of shape \(5, 3, 2\)"):
        bnn.GroupedLinear(2, 3, 4)(jnp.ones((5, 3, 2)))


class LeakyGroups(brainstate.nn.Module):
    def __init__(self, leak=0.8):
        super().__init__()
        self.leak = leak
        self.layer = bnn.GroupedLinear(3, 4, 2, b_init=braintools.init.Normal(0.0, 0.3))
        self.out = bnn.Linear(6, 2)

    def init_state(self, batch_size=None, **kwargs):
        self.h = brainstate.HiddenState(jnp.zeros(((batch_size,) if batch_size else ()) + (3, 2)))

    def update(self, x):
        self.h.value = self.leak * self.h.value + jnp.tanh(self.layer(x))
        return self.out(self.h.value.reshape(self.h.value.shape[:-2] + (6,)))


@pytest.mark.parametrize("batch", [None, 2])
def test_d_rtrl_equals_bptt(batch):
    brainstate.random.seed(1)
    model = LeakyGroups()
    brainstate.nn.init_all_states(model, batch) if batch else brainstate.nn.init_all_states(model)
    xs = randn(2, (8,) + ((batch,) if batch else ()) + (3, 4))
    snap = snapshot_states(model)
    expected = bptt_grads(model, xs)
    restore_states(model, snap)
    learner = braintrace.D_RTRL(model)
    learner.compile_graph(xs[0])
    actual = online_grads(learner, xs)
    assert float(jnp.linalg.norm(expected[("layer", "weight")]["weight"])) > 0.1
    assert_grads_close(expected, actual, rtol=1e-4, atol=1e-5)


def test_vmap_new_states_and_vmap_match_the_batched_model():
    brainstate.random.seed(3)
    model = LeakyGroups()
    x = randn(4, (4, 3, 4))

    @brainstate.transform.vmap_new_states(state_tag="new", axis_size=4)
    def init():
        brainstate.nn.init_all_states(model)

    init()
    y_lanes = brainstate.transform.jit(brainstate.nn.Vmap(model, vmap_states="new"))(x)
    brainstate.nn.init_all_states(model, 4)
    np.testing.assert_allclose(y_lanes, model(x), **TOL)
