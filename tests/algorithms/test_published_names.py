"""The published executor classes, ETraceVmap / SequenceDriverMixin, the learner members
`executor` / `modulator`, etrace_grad(weights=, loss_output=), and the *_from_module passes."""

import brainstate
import jax.numpy as jnp
import numpy as np
import pytest

import braintrace
from tests._support import models
from tests._support.oracle import flat


def _gru():
    cell = braintrace.nn.GRUCell(3, 4)
    brainstate.nn.init_all_states(cell)
    return cell


def test_executor_quantities_match_a_step_and_do_not_write_states():
    cell = _gru()
    ex = braintrace.ETraceVjpGraphExecutor(cell, vjp_method="multi-step")
    ex.compile_graph(jnp.ones(3))
    assert ex.is_multi_step_vjp and not ex.is_single_step_vjp
    h0 = cell.h.value
    out, q = ex.solve_h2w_h2h_jacobian(jnp.ones(3))
    np.testing.assert_array_equal(cell.h.value, h0)
    expected = cell(jnp.ones(3))
    np.testing.assert_allclose(out, expected, rtol=1e-6)
    cell.h.value = h0
    outs, qs = ex.solve_h2w_h2h_jacobian(braintrace.MultiStepData(jnp.ones((3, 3))))
    assert outs.shape == (3, 4) and qs.jacobians[0].shape == (3,) + q.jacobians[0].shape
    np.testing.assert_allclose(outs[0], expected, rtol=1e-6)
    out2, _, vjp_fn = ex.solve_h2w_h2h_l2h_jacobian(jnp.ones(3))
    np.testing.assert_allclose(out2, expected, rtol=1e-6)
    assert callable(vjp_fn)
    with pytest.raises(braintrace.NotSupportedError, match="one step"):
        ex.solve_h2w_h2h_l2h_jacobian(braintrace.MultiStepData(jnp.ones((3, 3))))
    with pytest.raises(ValueError, match="vjp_method"):
        braintrace.ETraceVjpGraphExecutor(cell, vjp_method="one-step")
    with pytest.raises(ValueError, match="compile_graph"):
        braintrace.ETraceGraphExecutor(cell).graph


def test_learner_members():
    learner = braintrace.compile(braintrace.nn.GRUCell(3, 4), "d_rtrl", jnp.ones(3))
    assert isinstance(learner.executor, braintrace.ETraceVjpGraphExecutor)
    assert learner.executor.graph is learner.graph and learner.executor.is_single_step_vjp
    assert learner.modulator is None
    three = braintrace.compile(braintrace.nn.GRUCell(3, 4), "three_factor", jnp.ones(3), modulator=0.5)
    assert three.modulator == 0.5


def test_etrace_grad_weights_and_loss_output():
    brainstate.random.seed(0)
    model = models.gru(3, 5, 2)
    learner = braintrace.compile(model, "d_rtrl", jnp.ones(3))
    xs = brainstate.random.randn(5, 3)
    snap = {p: st.value for p, st in model.states(brainstate.HiddenState).items()}
    step = lambda x: jnp.sum(learner(x) ** 2)  # noqa: E731
    everything = flat(learner.etrace_grad(xs, step_fn=step))
    for p, v in snap.items():
        model.states()[p].value = v
    learner.reset_state()
    only = learner.etrace_grad(xs, step_fn=step, weights={("out", "weight"): model.out.weight})
    assert list(only) == [("out", "weight")]
    np.testing.assert_allclose(flat(only)[("out", "weight")], everything[("out", "weight")], rtol=1e-6)
    with pytest.raises(ValueError, match="ParamStates"):
        learner.etrace_grad(xs, step_fn=step, weights=[brainstate.ParamState(jnp.ones(2))])
    with pytest.raises(braintrace.NotSupportedError, match="loss_output"):
        learner.etrace_grad(xs, step_fn=step, loss_output="sequence")


def test_etrace_vmap_drives_a_lane_learner():
    learner = braintrace.compile(braintrace.nn.GRUCell(2, 3), "d_rtrl", jnp.ones((4, 2)), batch_size=4, vmap=True)
    wrapped = braintrace.ETraceVmap(learner)
    assert isinstance(wrapped, braintrace.SequenceDriverMixin) and wrapped.driven_learner() is learner
    grads = wrapped.etrace_grad(jnp.ones((5, 4, 2)), step_fn=lambda x: jnp.sum(wrapped(x) ** 2))
    assert float(jnp.abs(grads[("Wz", "weight")]["weight"]).sum()) > 0
    plain = braintrace.compile(braintrace.nn.GRUCell(2, 3), "d_rtrl", jnp.ones((4, 2)), batch_size=4)
    with pytest.raises(braintrace.NotSupportedError, match="vmap=True"):
        braintrace.ETraceVmap(plain)


def test_from_module_passes_match_the_graph():
    cell = _gru()
    graph = braintrace.compile_etrace_graph(cell, jnp.ones(3))
    groups, by_path = braintrace.find_hidden_groups_from_module(cell, jnp.ones(3))
    assert [g.hidden_paths for g in groups] == [g.hidden_paths for g in graph.hidden_groups]
    relations = braintrace.find_hidden_param_op_relations_from_module(cell, jnp.ones(3))
    assert [r.trainable_paths for r in relations] == [r.trainable_paths for r in graph.hidden_param_op_relations]
    perturb = braintrace.add_hidden_perturbation_in_module(cell, jnp.ones(3))
    assert perturb.perturb_hidden_paths == graph.hidden_perturb.perturb_hidden_paths


def test_grad_expon():
    f = braintrace.GradExpon({"w": jnp.zeros(2)}, 0.5)
    f.update({"w": jnp.ones(2)})
    np.testing.assert_allclose(f.update({"w": jnp.ones(2)})["w"], [1.5, 1.5])
    f.reset()
    np.testing.assert_array_equal(f.value["w"], 0.0)
    assert abs(braintrace.GradExpon((2,), 4.0).decay - np.exp(-0.25)) < 1e-12
    for bad in (-0.1, True, "fast"):
        with pytest.raises(ValueError, match="tau_or_decay"):
            braintrace.GradExpon((2,), bad)
    with pytest.raises(ValueError, match="tree structure"):
        f.update(jnp.ones(2))
