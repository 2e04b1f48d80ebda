# Copyright 2026 The braintrace authors. Licensed under the Apache License, Version 2.0.
import brainstate
import brainunit as u
import jax.numpy as jnp
import numpy as np
import pytest

import braintrace.nn

N = 3


def _run(neuron, inputs):
    return jnp.stack([neuron(x) for x in inputs])


@pytest.mark.parametrize("cls", [braintrace.nn.LIF, braintrace.nn.ALIF])
@pytest.mark.parametrize("batch_size", [None, 2])
def test_init_reset_and_shapes(cls, batch_size):
    neuron = cls(N, V_rest=0.2)
    brainstate.nn.init_all_states(neuron, batch_size)
    shape = (N,) if batch_size is None else (batch_size, N)
    for state in neuron.states(brainstate.HiddenState).values():
        assert state.value.shape == shape
    np.testing.assert_allclose(neuron.V.value, jnp.full(shape, 0.2))
    assert neuron(jnp.full(shape, 5.0)).shape == shape
    neuron.reset_state(batch_size)
    np.testing.assert_allclose(neuron.V.value, jnp.full(shape, 0.2))


def test_lif_matches_reference_dynamics():
    lif = braintrace.nn.LIF(N, tau=4.0, V_th=1.0, V_reset=-0.5, V_rest=0.1, R=2.0, dt=0.5)
    lif.init_state()
    inputs = jnp.linspace(0.0, 2.0, 20)[:, None] * jnp.array([1.0, 0.5, 2.0])
    V = jnp.full(N, 0.1)
    for x in inputs:
        V = V + 0.5 / 4.0 * (-(V - 0.1) + 2.0 * x)
        spike = (V >= 1.0).astype(V.dtype)
        V = V - 1.5 * spike
        np.testing.assert_array_equal(lif(x), spike)
        np.testing.assert_allclose(lif.V.value, V, rtol=1e-6, atol=1e-6)


def test_lif_fires_and_resets_on_strong_input_and_stays_silent_on_zero_input():
    lif = braintrace.nn.LIF(N, tau=5.0)
    lif.init_state()
    spikes = _run(lif, jnp.zeros((50, N)))
    assert float(spikes.sum()) == 0.0
    np.testing.assert_array_equal(lif.V.value, jnp.zeros(N))

    lif.reset_state()
    previous = lif.V.value
    n_spikes = 0
    for _ in range(50):
        spike = lif(jnp.full(N, 5.0))
        integrated = previous + 0.2 * (-previous + 5.0)
        np.testing.assert_allclose(lif.V.value, integrated - spike, rtol=1e-6)  # reset by V_th - V_reset
        assert bool(jnp.all(lif.V.value < 1.0))
        previous = lif.V.value
        n_spikes += int(spike.sum())
    assert n_spikes > N * 5


def test_alif_threshold_rises_after_spikes():
    alif = braintrace.nn.ALIF(N, tau=5.0, tau_a=100.0, beta=0.5)
    alif.init_state()
    assert float(alif.a.value.sum()) == 0.0
    spikes = []
    for _ in range(100):
        before = alif.a.value
        spike = alif(jnp.full(N, 3.0))
        np.testing.assert_allclose(alif.a.value, before * (1 - 1 / 100.0) + spike, rtol=1e-6)
        spikes.append(spike)
    assert bool(jnp.all(alif.a.value > 0))

    lif = braintrace.nn.LIF(N, tau=5.0)
    lif.init_state()
    lif_spikes = _run(lif, jnp.full((100, N), 3.0))
    assert 0 < float(jnp.stack(spikes).sum()) < float(lif_spikes.sum())


def test_alif_with_zero_beta_equals_lif():
    alif = braintrace.nn.ALIF(N, tau=5.0, beta=0.0)
    lif = braintrace.nn.LIF(N, tau=5.0)
    for neuron in (alif, lif):
        neuron.init_state()
    inputs = jnp.linspace(0.0, 4.0, 30)[:, None] * jnp.ones(N)
    np.testing.assert_array_equal(_run(alif, inputs), _run(lif, inputs))


def test_lif_with_units_keeps_units():
    lif = braintrace.nn.LIF(N, tau=10.0 * u.ms, V_th=1.0 * u.mV, V_rest=0.0 * u.mV, dt=1.0 * u.ms)
    lif.init_state(2)
    assert u.get_unit(lif.V.value) == u.mV
    spikes = _run(lif, jnp.full((30, 2, N), 3.0) * u.mV)
    assert not isinstance(spikes, u.Quantity)
    assert float(spikes.sum()) > 0
    assert u.get_unit(lif.V.value) == u.mV
    # The same neuron without units gives the same spikes and mantissas.
    plain = braintrace.nn.LIF(N, tau=10.0, V_th=1.0, dt=1.0)
    plain.init_state(2)
    np.testing.assert_array_equal(_run(plain, jnp.full((30, 2, N), 3.0)), spikes)
    np.testing.assert_allclose(plain.V.value, lif.V.value.to_decimal(u.mV), rtol=1e-6)


def test_alif_with_units_keeps_units():
    alif = braintrace.nn.ALIF(
        N, tau=10.0 * u.ms, tau_a=100.0 * u.ms, beta=0.5 * u.mV, V_th=-50.0 * u.mV,
        V_reset=-60.0 * u.mV, V_rest=-65.0 * u.mV, dt=0.5 * u.ms, tau_trainable=True,
    )
    alif.init_state()
    np.testing.assert_allclose(alif.V.value.to_decimal(u.mV), jnp.full(N, -65.0))
    spikes = _run(alif, jnp.full((100, N), 30.0) * u.mV)
    assert float(spikes.sum()) > 0
    assert u.get_unit(alif.V.value) == u.mV
    assert not isinstance(alif.a.value, u.Quantity)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"tau": 10.0 * u.ms}, "dt / tau"),
        ({"V_th": 1.0 * u.mV, "V_reset": 0.5}, "V_reset"),
        ({"V_th": 1.0 * u.mV, "V_rest": 1.0 * u.ms}, "V_rest"),
        ({"V_th": 1.0, "V_reset": 1.0}, "exceed"),
        ({"tau": -1.0}, "positive"),
    ],
)
def test_inconsistent_parameters_are_rejected(kwargs, match):
    with pytest.raises(ValueError, match=match):
        braintrace.nn.LIF(N, **kwargs)


def test_alif_beta_needs_the_voltage_unit():
    with pytest.raises(ValueError, match="beta"):
        braintrace.nn.ALIF(N, V_th=1.0 * u.mV, beta=1.6)


@pytest.mark.parametrize("cls", [braintrace.nn.LIF, braintrace.nn.ALIF])
def test_surrogate_gradient_is_nonzero_near_threshold(cls):
    neuron = cls(N, tau=2.0, surrogate="triangle")
    neuron.init_state()
    inputs = jnp.array([1.0, 2.1, 50.0])  # below, just past and far past threshold after one step

    def first_step(x):
        neuron.reset_state()
        return neuron(x)

    jacobian = brainstate.transform.jacrev(first_step, argnums=0)(inputs)
    diagonal = jnp.diag(jacobian)
    assert float(diagonal[1]) > 0
    assert float(diagonal[2]) == 0.0
    np.testing.assert_array_equal(jacobian - jnp.diag(diagonal), 0.0)  # element-wise per neuron


@pytest.mark.parametrize("cls", [braintrace.nn.LIF, braintrace.nn.ALIF])
def test_trainable_tau_gets_a_finite_gradient(cls):
    neuron = cls(N, tau=5.0, tau_trainable=True)
    brainstate.nn.init_all_states(neuron, 2)
    params = neuron.states(brainstate.ParamState)
    assert list(params) == [("tau", "log_tau")]
    np.testing.assert_allclose(params[("tau", "log_tau")].value, jnp.full(N, np.log(5.0)), rtol=1e-6)

    def loss():
        neuron.reset_state(2)
        return sum(jnp.sum(neuron(jnp.full((2, N), 2.0)) + neuron.V.value ** 2) for _ in range(5))

    grads = brainstate.transform.grad(loss, grad_states=params)()
    g = grads[("tau", "log_tau")]
    assert g.shape == (N,)
    assert bool(jnp.all(jnp.isfinite(g))) and bool(jnp.any(g != 0))


def test_fixed_tau_has_no_parameters():
    assert len(braintrace.nn.LIF(N).states(brainstate.ParamState)) == 0
    assert len(braintrace.nn.ALIF(N).states(brainstate.ParamState)) == 0


def test_detach_reset_changes_the_gradient():
    def gradient(detach_reset):
        lif = braintrace.nn.LIF(1, tau=2.0, detach_reset=detach_reset)
        lif.init_state()

        def loss(x):
            lif.reset_state()
            return sum(lif(x) for _ in range(3)).sum()

        return brainstate.transform.grad(loss, argnums=0)(jnp.array([2.2]))

    assert not np.allclose(gradient(True), gradient(False))


def test_network_with_readout_runs_under_jit():
    class Network(brainstate.nn.Module):
        def __init__(self):
            super().__init__()
            self.input = braintrace.nn.Linear(4, N)
            self.neurons = braintrace.nn.ALIF(N, tau=5.0)
            self.readout = braintrace.nn.LeakyRateReadout(N, 2)

        def update(self, x):
            return self.readout(self.neurons(self.input(x)))

    brainstate.random.seed(0)
    net = Network()
    brainstate.nn.init_all_states(net, 2)
    x = 3.0 * brainstate.random.rand(2, 4)
    step = brainstate.transform.jit(lambda inp: net(inp))
    jitted = jnp.stack([step(x) for _ in range(5)])
    brainstate.nn.reset_all_states(net, 2)
    eager = jnp.stack([net(x) for _ in range(5)])
    assert jitted.shape == (5, 2, 2)
    np.testing.assert_allclose(jitted, eager, rtol=1e-5, atol=1e-6)
