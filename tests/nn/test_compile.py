# Copyright 2026 The braintrace authors. Licensed under the Apache License, Version 2.0.
"""The layers compile into the hidden groups their docstrings promise."""

import brainstate
import jax.numpy as jnp

import braintrace.compiler
import braintrace.nn


class _SpikingNetwork(brainstate.nn.Module):
    def __init__(self):
        super().__init__()
        self.input = braintrace.nn.Linear(3, 4)
        self.neurons = braintrace.nn.ALIF(4, tau_trainable=True)
        self.readout = braintrace.nn.LeakyRateReadout(4, 2)

    def update(self, x):
        return self.readout(self.neurons(self.input(x)))


def _groups(graph):
    return sorted(sorted(".".join(p) for p in g.hidden_paths) for g in graph.hidden_groups)


def _related_weights(graph):
    return sorted({".".join(p) for r in graph.hidden_param_op_relations for p in r.trainable_paths.values()})


def test_spiking_network_groups_and_relations():
    net = _SpikingNetwork()
    brainstate.nn.init_all_states(net, 2)
    graph = braintrace.compiler.compile_etrace_graph(net, jnp.ones((2, 3)))
    assert _groups(graph) == [["neurons.V", "neurons.a"], ["readout.r"]]
    assert _related_weights(graph) == ["input.weight", "neurons.tau.log_tau", "readout.weight"]


def test_lstm_states_form_one_group():
    lstm = braintrace.nn.LSTMCell(3, 4)
    brainstate.nn.init_all_states(lstm)
    graph = braintrace.compiler.compile_etrace_graph(lstm, jnp.ones(3))
    assert _groups(graph) == [["c", "h"]]
    assert _related_weights(graph) == ["Wf.weight", "Wg.weight", "Wi.weight", "Wo.weight"]
