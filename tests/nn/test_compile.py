# Copyright 2026 The braintrace authors. Licensed under the Apache License, Version 2.0.
"""Layers and brainpy.state neurons compile into the hidden groups their docstrings promise."""

import inspect

import brainstate
import braintools
import brainunit as u
import jax
import jax.numpy as jnp
import pytest

import braintrace.compiler
import braintrace.nn
from braintrace import DiagnosticKind as K
from braintrace.compiler.elementwise_check import library_elementwise_primitives


class _SpikingNetwork(brainstate.nn.Module):
    def __init__(self, spk_fun=braintools.surrogate.ReluGrad()):
        super().__init__()
        self.input = braintrace.nn.Linear(3, 4, w_init=braintools.init.KaimingNormal(unit=u.mA),
                                          b_init=braintools.init.ZeroInit(unit=u.mA))
        self.neurons = braintrace.nn.ALIF(4, tau=10.0 * u.ms, tau_a=50.0 * u.ms, spk_fun=spk_fun)
        self.readout = braintrace.nn.LeakyRateReadout(4, 2, tau=5.0 * u.ms)

    def update(self, x):
        return self.readout(self.neurons(self.input(x)))


def _groups(graph):
    return sorted(sorted(".".join(p) for p in g.hidden_paths) for g in graph.hidden_groups)


def _related_weights(graph):
    return sorted({".".join(p) for r in graph.hidden_param_op_relations for p in r.trainable_paths.values()})


def _compile(model, x, batch_size=None):
    with brainstate.environ.context(dt=1.0 * u.ms):
        brainstate.nn.init_all_states(model, batch_size)
        return braintrace.compiler.compile_etrace_graph(model, x)


def test_spiking_network_groups_and_relations():
    graph = _compile(_SpikingNetwork(), jnp.ones((2, 3)), 2)
    assert _groups(graph) == [["neurons.V", "neurons.a"], ["readout.r"]]
    assert _related_weights(graph) == ["input.weight", "readout.weight"]
    assert not graph.explain(kind=K.TRANSITION_NOT_ELEMENTWISE)
    assert not graph.explain(kind=K.TAIL_NOT_ELEMENTWISE)


_SURROGATES = sorted(
    name for name, obj in vars(braintools.surrogate).items()
    if inspect.isclass(obj) and issubclass(obj, braintools.surrogate.Surrogate) and obj is not braintools.surrogate.Surrogate
)


def test_every_braintools_surrogate_is_seen_as_element_wise():
    assert len(_SURROGATES) >= 15
    assert [p.name for p in library_elementwise_primitives()] == ["heaviside_surrogate_gradient"]
    for name in _SURROGATES:
        graph = _compile(_SpikingNetwork(getattr(braintools.surrogate, name)()), jnp.ones(3))
        assert not graph.explain(kind=K.TRANSITION_NOT_ELEMENTWISE), name
        assert len(graph.hidden_groups) == 2, name


class _MixingNeuron(brainstate.nn.Module):
    """A LIF whose spikes pass a cumulative sum (mixes positions) before feeding back."""

    def __init__(self):
        super().__init__()
        self.input = braintrace.nn.Linear(3, 4)
        self.neurons = braintrace.nn.LIF(4, tau=10.0 * u.ms, V_th=1.0, V_reset=0.0, V_rest=0.0, R=1.0,
                                         V_initializer=braintools.init.Constant(0.0))

    def update(self, x):
        spk = self.neurons(self.input(x))
        self.neurons.V.value = self.neurons.V.value - 0.1 * jax.lax.cumsum(spk, axis=spk.ndim - 1)
        return spk


def test_an_op_that_mixes_positions_is_still_reported():
    with pytest.warns(UserWarning, match=r"\[warning\] transition_not_elementwise .*cumsum"), \
            pytest.warns(UserWarning, match=r"\[warning\] tail_not_elementwise .*cumsum"):
        graph = _compile(_MixingNeuron(), jnp.ones(3))
    (record,) = graph.explain(kind=K.TRANSITION_NOT_ELEMENTWISE)
    assert "cumsum" in record.message and "heaviside" not in record.message


def test_lstm_states_form_one_group():
    lstm = braintrace.nn.LSTMCell(3, 4)
    brainstate.nn.init_all_states(lstm)
    graph = braintrace.compiler.compile_etrace_graph(lstm, jnp.ones(3))
    assert _groups(graph) == [["c", "h"]]
    assert _related_weights(graph) == ["Wf.weight", "Wg.weight", "Wi.weight", "Wo.weight"]
