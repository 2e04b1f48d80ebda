# Copyright 2026 The braintrace authors. Licensed under the Apache License, Version 2.0.
"""LeakyRateReadout on the BrainX conventions: dt from the environment, tau in time units."""

import inspect

import brainstate
import braintools
import brainunit as u
import jax.numpy as jnp
import numpy as np
import pytest

import braintrace.nn

MS = u.ms


def test_signature_is_the_published_one():
    params = dict(inspect.signature(braintrace.nn.LeakyRateReadout.__init__).parameters)
    params.pop("self")
    assert list(params) == ["in_size", "out_size", "tau", "w_init", "r_init", "name"]
    assert params["tau"].default == 5.0 * u.ms
    assert all(p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD for p in params.values())


@pytest.mark.parametrize("batch_size", [None, 3])
def test_init_all_states_reset_and_shapes(batch_size):
    readout = braintrace.nn.LeakyRateReadout(4, 2)
    brainstate.nn.init_all_states(readout, batch_size)
    shape = (2,) if batch_size is None else (batch_size, 2)
    assert readout.r.value.shape == shape
    with brainstate.environ.context(dt=1.0 * MS):
        assert readout(jnp.ones(shape[:-1] + (4,))).shape == shape
    assert bool(jnp.any(readout.r.value != 0))
    readout.reset_state(batch_size)
    np.testing.assert_array_equal(readout.r.value, jnp.zeros(shape))


def test_forward_is_the_brainx_leaky_integrator():
    brainstate.random.seed(0)
    readout = braintrace.nn.LeakyRateReadout(4, 2, tau=5.0 * MS)
    readout.init_state(3)
    w = readout.weight.value["weight"]
    decay = np.exp(-0.5 / 5.0)
    r = np.zeros((3, 2))
    with brainstate.environ.context(dt=0.5 * MS):
        for _ in range(5):
            x = np.asarray(brainstate.random.rand(3, 4))
            r = decay * r + x @ np.asarray(w)
            np.testing.assert_allclose(readout(x), r, rtol=1e-5, atol=1e-6)


def test_decay_follows_the_environment_dt():
    readout = braintrace.nn.LeakyRateReadout(1, 1, tau=10.0 * MS, w_init=jnp.ones((1, 1)))
    for dt, expected in [(1.0, np.exp(-0.1)), (2.0, np.exp(-0.2)), (0.1, np.exp(-0.01))]:
        readout.init_state()
        with brainstate.environ.context(dt=dt * MS):
            readout(jnp.ones(1))
            r = readout(jnp.zeros(1))  # the second step only decays
        np.testing.assert_allclose(r, [expected], rtol=1e-6)


def test_plain_tau_is_read_in_the_unit_of_dt():
    quantity = braintrace.nn.LeakyRateReadout(1, 1, tau=4.0 * MS, w_init=jnp.ones((1, 1)))
    plain = braintrace.nn.LeakyRateReadout(1, 1, tau=4.0, w_init=jnp.ones((1, 1)))
    with brainstate.environ.context(dt=0.5 * MS):
        np.testing.assert_allclose(plain.decay, np.exp(-0.125), rtol=1e-6)
        np.testing.assert_allclose(quantity.decay, plain.decay, rtol=1e-6)
    with brainstate.environ.context(dt=0.5):  # unitless time step, unitless tau
        np.testing.assert_allclose(plain.decay, np.exp(-0.125), rtol=1e-6)


def test_per_unit_tau():
    readout = braintrace.nn.LeakyRateReadout(2, 3, tau=jnp.array([1.0, 2.0, 4.0]) * MS)
    with brainstate.environ.context(dt=1.0 * MS):
        np.testing.assert_allclose(readout.decay, np.exp(-1.0 / np.array([1.0, 2.0, 4.0])), rtol=1e-6)


def test_r_init_initialises_r_and_units_flow_through():
    readout = braintrace.nn.LeakyRateReadout(
        3, 2, w_init=braintools.init.KaimingNormal(unit=u.mA), r_init=braintools.init.Constant(0.5 * u.mA))
    readout.init_state(4)
    assert u.get_unit(readout.r.value) == u.mA
    np.testing.assert_allclose(u.get_mantissa(readout.r.value), np.full((4, 2), 0.5))
    with brainstate.environ.context(dt=1.0 * MS):
        r = readout(jnp.zeros((4, 3)))
    np.testing.assert_allclose(u.get_mantissa(r), np.full((4, 2), 0.5 * np.exp(-0.2)), rtol=1e-6)
    assert u.get_unit(r) == u.mA


def test_jit_and_vmap_new_states():
    brainstate.random.seed(1)
    readout = braintrace.nn.LeakyRateReadout(3, 2, tau=5.0 * MS)
    xs = brainstate.random.rand(4, 3)
    with brainstate.environ.context(dt=1.0 * MS):
        readout.init_state(4)
        eager = [readout(xs) for _ in range(3)][-1]

        readout.init_state(4)
        step = brainstate.transform.jit(lambda x: readout(x))
        jitted = [step(xs) for _ in range(3)][-1]
        np.testing.assert_allclose(jitted, eager, rtol=1e-6)

        @brainstate.transform.vmap_new_states(state_tag="new", axis_size=4)
        def init():
            brainstate.nn.init_all_states(readout)

        init()
        assert readout.r.value.shape == (4, 2)
        lanes = brainstate.nn.Vmap(readout, vmap_states="new")
        vmapped = [lanes(xs) for _ in range(3)][-1]
    np.testing.assert_allclose(vmapped, eager, rtol=1e-6)


def test_unit_mismatch_between_tau_and_dt_names_the_layer_and_tau():
    readout = braintrace.nn.LeakyRateReadout(3, 2, tau=5.0 * u.mV, name="head")
    readout.init_state()
    with brainstate.environ.context(dt=1.0 * MS), pytest.raises(ValueError, match=r"LeakyRateReadout `head`: `tau`"):
        readout(jnp.ones(3))
    timed = braintrace.nn.LeakyRateReadout(3, 2, tau=5.0 * MS)
    timed.init_state()
    with brainstate.environ.context(dt=1.0), pytest.raises(ValueError, match=r"`tau`.*different units"):
        timed(jnp.ones(3))


def test_r_in_the_wrong_unit_is_a_clear_error():
    readout = braintrace.nn.LeakyRateReadout(3, 2, w_init=braintools.init.KaimingNormal(unit=u.mA))
    readout.init_state()
    with brainstate.environ.context(dt=1.0 * MS), pytest.raises(ValueError, match=r"`r_init`.*mA"):
        readout(jnp.ones(3))


@pytest.mark.parametrize("tau", [0.0, -1.0 * MS])
def test_non_positive_tau_is_rejected(tau):
    with pytest.raises(ValueError, match="`tau` must be positive"):
        braintrace.nn.LeakyRateReadout(3, 2, tau=tau)


def test_gradient_of_the_weight_matches_the_closed_form():
    """r_T = sum_t decay^(T-t) x W, so d sum(r_T) / dW = sum_t decay^(T-t) x (outer) 1."""
    readout = braintrace.nn.LeakyRateReadout(3, 2, tau=5.0 * MS)
    params = readout.states(brainstate.ParamState)
    x = jnp.array([1.0, 2.0, 3.0])

    def loss():
        readout.init_state()
        for _ in range(3):
            r = readout(x)
        return jnp.sum(r)

    with brainstate.environ.context(dt=1.0 * MS):
        grads = brainstate.transform.grad(loss, grad_states=params)()
    d = np.exp(-0.2)
    np.testing.assert_allclose(grads[("weight",)]["weight"], np.outer(x, np.ones(2)) * (1 + d + d * d), rtol=1e-5)
