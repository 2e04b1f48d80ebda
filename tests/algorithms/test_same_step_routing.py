"""Paths no trace carries get their exact same-step gradient (beyond the published behaviour).

The published implementation gives the GRU reset gate, and every weight whose influence
reaches the loss only through another hidden group, an exactly zero online gradient. Here
those paths are differentiated exactly within the step; only their influence through earlier
hidden values is dropped. These tests pin that behaviour against BPTT-based oracles.
"""

import brainstate
import jax.numpy as jnp
import numpy as np
import pytest

import braintrace
import braintrace.nn as bnn
from braintrace import DiagnosticKind as K
from tests._support import models
from tests._support.oracle import (
    assert_grads_close,
    bptt_grads,
    cosine,
    flat,
    online_grads,
    restore_states,
    snapshot_states,
    squared_loss,
)


def pair(model, xs, batch=None):
    if batch is None:
        brainstate.nn.init_all_states(model)
    else:
        brainstate.nn.init_all_states(model, batch)
    snap = snapshot_states(model)
    expected = bptt_grads(model, xs)
    restore_states(model, snap)
    learner = braintrace.D_RTRL(model)
    learner.compile_graph(xs[0])
    return expected, online_grads(learner, xs)


def test_gru_reset_gate_gets_its_one_step_gradient():
    """Wr's online gradient is Σ_t ∂L_t/∂Wr with h_{t-1} held fixed (one-step truncated BPTT)."""
    brainstate.random.seed(0)
    xs = brainstate.random.randn(10, 3)
    model = models.gru()
    brainstate.nn.init_all_states(model)
    snap = snapshot_states(model)
    params = dict(model.states(brainstate.ParamState))
    expected = jnp.zeros_like(model.cell.Wr.weight.value["weight"])
    for x in xs:
        step = brainstate.transform.grad(lambda: squared_loss(model(x)), grad_states=params)()
        expected = expected + step[("cell", "Wr", "weight")]["weight"]
    restore_states(model, snap)
    learner = braintrace.D_RTRL(model)
    learner.compile_graph(xs[0])
    actual = online_grads(learner, xs)
    wr = actual[("cell", "Wr", "weight")]["weight"]
    assert float(jnp.abs(wr).max()) > 1e-3
    np.testing.assert_allclose(wr, expected, rtol=1e-4, atol=1e-5)


def test_weights_upstream_of_a_leaky_readout_learn():
    brainstate.random.seed(1)
    xs = brainstate.random.uniform(0.0, 2.0, (20, 3))
    expected, actual = pair(models.SpikingLeakyReadout(), xs)
    e, a = flat(expected), flat(actual)
    assert np.linalg.norm(a[("inp", "weight")]) > 1e-3
    assert cosine(e[("inp", "weight")], a[("inp", "weight")]) > 0.9
    np.testing.assert_allclose(a[("out", "weight")], e[("out", "weight")], rtol=1e-4, atol=1e-6)


def test_lower_layer_of_stacked_grus_learns():
    brainstate.random.seed(2)
    xs = brainstate.random.randn(12, 3)
    expected, actual = pair(models.TwoLayerGRU(), xs)
    e, a = flat(expected), flat(actual)
    for name in ("Wz", "Wh", "Wr"):
        path = ("l1", name, "weight")
        assert cosine(e[path], a[path]) > 0.8, path


@pytest.mark.parametrize("batch", [None, 2])
def test_hidden_group_state_neuron_is_exact(batch):
    brainstate.random.seed(3)
    xs = brainstate.random.randn(12, *((batch, 3) if batch else (3,)))
    model = models.GroupStateNeuron()
    brainstate.nn.init_all_states(model) if batch is None else brainstate.nn.init_all_states(model, batch)
    graph = braintrace.compile_etrace_graph(model, xs[0])
    assert graph.hidden_groups[0].num_state == 2
    assert [r.kind for r in graph.explain() if r.level is not braintrace.DiagnosticLevel.INFO] == []
    expected, actual = pair(model, xs, batch)
    assert_grads_close(expected, actual, rtol=1e-4, atol=1e-5)


def test_mgu_forget_gate_partial_path_is_reported():
    model = bnn.MGUCell(3, 4)
    brainstate.nn.init_all_states(model)
    graph = braintrace.compile_etrace_graph(model, jnp.ones(3))
    (record,) = graph.explain(kind=K.RELATION_PARTIAL_PATH)
    assert record.weight_path == ("Wf", "weight") and record.hidden_paths == (("h",),)
    rel = next(r for r in graph.hidden_param_op_relations if r.trainable_paths["weight"] == ("Wf", "weight"))
    assert rel.path_classification[("h",)] is braintrace.PathClassification.MIXED
