"""compile_etrace_graph on real brainstate models: groups, relations, diagnostics."""

import brainstate
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import braintrace
import braintrace.nn as bnn
from braintrace import DiagnosticKind as K
from tests._support import models
from tests._support.oracle import snapshot_states


def compiled(model, x, batch_size=None):
    if batch_size is None:
        brainstate.nn.init_all_states(model)
    else:
        brainstate.nn.init_all_states(model, batch_size)
    return braintrace.compile_etrace_graph(model, x)


def relation_weights(graph):
    return sorted({p for r in graph.hidden_param_op_relations for p in r.trainable_paths.values()})


def kinds_for(graph, path):
    return [r.kind for r in graph.explain(weight_path=path)]


@pytest.mark.parametrize("batch", [None, 2])
def test_gru_cell(batch):
    x = jnp.ones((batch, 3) if batch else (3,))
    with pytest.warns(UserWarning, match=r"\[warning\] relation_excluded_weight_to_weight \(weight Wr\.weight\)"):
        graph = compiled(bnn.GRUCell(3, 4), x, batch)
    assert len(graph.hidden_groups) == 1
    group = graph.hidden_groups[0]
    assert group.hidden_paths == [("h",)] and group.num_state == 1
    assert group.varshape == ((batch, 4) if batch else (4,))
    assert relation_weights(graph) == [("Wh", "weight"), ("Wz", "weight")]
    for rel in graph.hidden_param_op_relations:
        assert set(rel.trainable_vars) == {"weight", "bias"}
        assert rel.trainable_leaf_indices == {"bias": 0, "weight": 1}
        assert rel.path_classification == {("h",): braintrace.PathClassification.ALL_DIRECT}
    assert kinds_for(graph, ("Wr", "weight")) == [K.RELATION_EXCLUDED_WEIGHT_TO_WEIGHT]
    w2w = graph.explain(kind=K.RELATION_EXCLUDED_WEIGHT_TO_WEIGHT)[0]
    assert w2w.level is braintrace.DiagnosticLevel.WARNING
    assert w2w.context["blocking_weights"] == ["Wh.weight"]
    assert braintrace.CompilationReport(graph).counts == {
        "hidden_groups": 1, "etrace_weights": 4, "excluded_weights": 1, "warnings": 1, "errors": 0}


def test_lstm_merges_h_and_c():
    graph = compiled(bnn.LSTMCell(3, 4), jnp.ones(3))
    assert len(graph.hidden_groups) == 1
    assert sorted(graph.hidden_groups[0].hidden_paths) == [("c",), ("h",)]
    assert graph.hidden_groups[0].num_state == 2
    assert len(graph.explain(kind=K.HIDDEN_GROUP_MERGED)) == 1
    by_weight = {r.trainable_paths["weight"][0]: sorted(r.connected_hidden_paths)
                 for r in graph.hidden_param_op_relations}
    assert by_weight == {"Wi": [("c",), ("h",)], "Wg": [("c",), ("h",)], "Wf": [("c",), ("h",)], "Wo": [("h",)]}


def test_elman_zero_recurrence_group():
    graph = compiled(models.elman(), jnp.ones(3))
    assert len(graph.hidden_groups) == 1
    assert graph.hidden_groups[0].transition_jaxpr.eqns == []
    assert relation_weights(graph) == [("cell", "W", "weight")]
    assert kinds_for(graph, ("out", "weight")) == [K.RELATION_EXCLUDED_NON_TEMPORAL]
    assert graph.explain(kind=K.HIDDEN_GROUP_ZERO_RECURRENCE)
    assert graph.hidden_perturb.bypass_param_paths == (("out", "weight"),)


@pytest.mark.parametrize("neuron,num_state", [("lif", 1), ("alif", 2)])
def test_spiking_layers(neuron, num_state):
    graph = compiled(models.SpikingNet(neuron=neuron), jnp.ones(3))
    assert len(graph.hidden_groups) == 1
    assert graph.hidden_groups[0].num_state == num_state
    assert relation_weights(graph) == [("inp", "weight")]
    assert not graph.explain(kind=K.TRANSITION_NOT_ELEMENTWISE)
    assert not graph.explain(kind=K.TAIL_NOT_ELEMENTWISE)


def test_two_stacked_gru_layers():
    graph = compiled(models.TwoLayerGRU(), jnp.ones(3))
    assert [g.hidden_paths for g in graph.hidden_groups] == [[("l1", "h")], [("l2", "h")]]
    groups = {r.trainable_paths["weight"]: [g.index for g in r.hidden_groups] for r in graph.hidden_param_op_relations}
    assert groups == {("l1", "Wz", "weight"): [0], ("l1", "Wh", "weight"): [0],
                      ("l2", "Wz", "weight"): [1], ("l2", "Wh", "weight"): [1]}
    excluded = sorted(r.weight_path for r in graph.explain(kind=K.RELATION_EXCLUDED_WEIGHT_TO_WEIGHT))
    assert excluded == [("l1", "Wr", "weight"), ("l2", "Wr", "weight")]
    assert [r.weight_path for r in graph.explain(kind=K.RELATION_EXCLUDED_NON_TEMPORAL)] == [("out", "weight")]


@pytest.mark.parametrize("batch", [None, 2])
def test_conv_layer(batch):
    x = jnp.ones((batch, 8, 2) if batch else (8, 2))
    graph = compiled(models.ConvLeaky(), x, batch)
    assert len(graph.hidden_groups) == 1
    (rel,) = graph.hidden_param_op_relations
    assert rel.primitive is braintrace.ops.etp_conv_p
    assert set(rel.trainable_vars) == {"kernel", "bias"}


def test_element_wise_parameter_relation():
    graph = compiled(models.LeakyRNN(), jnp.ones(3))
    prims = {r.trainable_paths["weight"]: r.primitive for r in graph.hidden_param_op_relations}
    assert prims[("tau",)] is braintrace.ops.etp_element_wise_p
    assert graph.hid_path_to_group[("h",)] is graph.hidden_groups[0]


def test_explain_filters():
    graph = compiled(models.gru(), jnp.ones(3))
    every = graph.explain()
    assert every == graph.diagnostics and len(every) >= 4
    wz = graph.explain(weight_path=("cell", "Wz", "weight"))
    assert [r.kind for r in wz] == [K.RELATION_INCLUDED]
    assert all(("cell", "h") in r.hidden_paths for r in graph.explain(hidden_path=("cell", "h")))
    assert len(graph.explain(hidden_path=("cell", "h"))) == 2
    assert graph.explain(kind="relation_included") == graph.explain(kind=K.RELATION_INCLUDED)
    assert graph.explain(weight_path=("cell", "Wz", "weight"), kind=K.RELATION_EXCLUDED_NON_TEMPORAL) == ()
    text = repr(graph)
    assert "group 0" in text and "cell.Wz.weight" in text


@pytest.mark.parametrize("factory,batch", [(models.gru, None), (models.lstm, 2), (models.LeakyRNN, None),
                                           (lambda: models.SpikingNet(neuron="alif"), 2)])
def test_zero_perturbation_equals_forward(factory, batch):
    model = factory()
    x = brainstate.random.randn(*((batch, 3) if batch else (3,)))
    graph = compiled(model, x, batch)
    zeros = [jnp.zeros(v.aval.shape, v.aval.dtype) for v in graph.hidden_perturb.perturb_vars]
    out, new_states, *_ = graph.call_hidden_perturb((x,), zeros)
    plain = model(x)
    np.testing.assert_allclose(out, plain, rtol=1e-6, atol=1e-6)
    for st, value in zip(graph.module_info.compiled_model_states, new_states):
        np.testing.assert_allclose(jax.tree.leaves(value)[0], jax.tree.leaves(st.value)[0], rtol=1e-6, atol=1e-6)


def test_perturbation_moves_output_as_jvp_predicts():
    model = models.gru()
    brainstate.nn.init_all_states(model)
    x = brainstate.random.randn(3)
    graph = braintrace.compile_etrace_graph(model, x)
    delta = brainstate.random.randn(5)
    base = graph.call_hidden_perturb((x,), [jnp.zeros(5)])[0]
    moved = graph.call_hidden_perturb((x,), [1e-2 * delta])[0]
    h_new = graph.call_hidden_perturb((x,), [jnp.zeros(5)])[3][("cell", "h")]
    _, predicted = jax.jvp(lambda h: model.out(h), (h_new,), (1e-2 * delta,))
    np.testing.assert_allclose(moved - base, predicted, rtol=1e-4, atol=1e-6)
    # The perturbation also enters the new hidden value.
    h_moved = graph.call_hidden_perturb((x,), [1e-2 * delta])[3][("cell", "h")]
    np.testing.assert_allclose(h_moved - h_new, 1e-2 * delta, rtol=1e-5, atol=1e-7)


def test_compile_leaves_states_unchanged():
    model = models.TwoLayerGRU()
    brainstate.nn.init_all_states(model)
    for st in model.states(brainstate.HiddenState).values():
        st.value = brainstate.random.randn(*st.value.shape)
    before = {p: np.asarray(v) for p, v in snapshot_states(model).items()}
    params = {p: jax.tree.map(np.asarray, st.value) for p, st in model.states(brainstate.ParamState).items()}
    braintrace.compile_etrace_graph(model, jnp.ones(3))
    for path, value in snapshot_states(model).items():
        np.testing.assert_array_equal(np.asarray(value), before[path])
    for path, st in model.states(brainstate.ParamState).items():
        jax.tree.map(np.testing.assert_array_equal, jax.tree.map(np.asarray, st.value), params[path])


def test_cond_with_ops_is_if_converted():
    model = models.CondBranches()
    x = jnp.array([1.0, -0.5, 0.3])
    graph = compiled(model, x)
    (record,) = graph.explain(kind=K.COND_IF_CONVERTED)
    assert record.context == {"branches": 2, "outputs": 1}
    assert relation_weights(graph) == [("v", "weight"), ("w", "weight")]
    assert not any(e.primitive is jax.lax.cond_p for e in graph.module_info.closed_jaxpr.eqns)
    for sign in (1.0, -1.0):
        x = jnp.array([sign, -0.5, 0.3])
        zeros = [jnp.zeros(4)]
        np.testing.assert_allclose(graph.call_hidden_perturb((x,), zeros)[0], model(x), rtol=1e-6, atol=1e-6)


def test_include_output_bypass_false_drops_the_bypass_paths():
    """The readout's same-step path is a bypass by default and absent without the option."""
    with_bypass = compiled(models.elman(), jnp.ones(3))
    assert with_bypass.hidden_perturb.bypass_param_paths == (("out", "weight"),)
    assert with_bypass.explain(kind=K.OUTPUT_BYPASSES_HIDDEN)
    model = models.elman()
    brainstate.nn.init_all_states(model)
    without = braintrace.compile_etrace_graph(model, jnp.ones(3), include_output_bypass=False)
    assert without.hidden_perturb.bypass_param_paths == ()
    assert without.hidden_perturb.bypass_hidden_paths == ()
    assert not without.explain(kind=K.OUTPUT_BYPASSES_HIDDEN)
    # Everything else compiles the same.
    assert relation_weights(without) == relation_weights(with_bypass)
