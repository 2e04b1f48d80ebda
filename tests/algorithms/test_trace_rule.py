"""The learning-rule contract: pure rule functions, a custom rule in one class, old-style hooks."""

import dataclasses

import brainstate
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import braintrace
from braintrace.algorithms import executor
from braintrace.algorithms.d_rtrl import contract_param_traces, roll_param_trace, zero_param_trace
from braintrace.algorithms.trace_rule import RuleContext, TraceKey, TraceRule, relation_groups
from braintrace.ops.primitive import etp_rule_of
from tests._support import models
from tests._support.oracle import squared_loss

pytestmark = pytest.mark.filterwarnings(r"ignore:\[warning\]")

T = 5


def _xs():
    return jnp.asarray(np.random.RandomState(0).uniform(-1.0, 1.0, (T, 3)), jnp.float32)


def _learner(algorithm, **options):
    brainstate.random.seed(3)
    model = models.gru(3, 4, 2)
    brainstate.nn.init_all_states(model)
    learner = algorithm(model, **options)
    learner.compile_graph(_xs()[0])
    return learner


def _grads(learner, xs):
    return learner.etrace_grad(xs, step_fn=lambda x: squared_loss(learner(x)), reduction="sum")


def _assert_equal_trees(a, b):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(np.asarray(u), np.asarray(v))


def _step_quantities(learner, x):
    compiled = learner._compiled
    layout = compiled.layout
    values = [jax.tree.leaves(st.value) for st in compiled.graph.module_info.compiled_model_states]
    params, others = layout.split(values)
    _, temps, _ = executor.run_step(compiled.graph, layout, [x], params, others)
    return executor.step_quantities(compiled.graph, temps, dict(zip(layout.param_paths, params, strict=True)))


def test_trace_key_is_a_plain_tuple():
    assert TraceKey(1, 2) == (1, 2) and hash(TraceKey(1, 2)) == hash((1, 2))
    assert {TraceKey(0, 1): "a"}[(0, 1)] == "a"


@pytest.mark.parametrize("algorithm, options", [
    (braintrace.D_RTRL, {}), (braintrace.ES_D_RTRL, {"decay_or_rank": 0.9}),
    (braintrace.EProp, {"kappa_filter_decay": 0.6, "feedback": "random", "random_feedback_key": 0}),
])
def test_rule_functions_are_pure(algorithm, options):
    learner = _learner(algorithm, **options)
    xs = _xs()
    _grads(learner, xs[:2])  # a state that is not zero
    rule, ctx = learner._compiled.rule, learner._compiled.context
    state = learner.etrace.value
    before_state = jax.tree.map(np.asarray, state)
    before_attributes = dict(vars(learner))
    q = _step_quantities(learner, xs[2])

    first = rule.roll(ctx, state, q, jnp.asarray(2))
    second = rule.roll(ctx, state, q, jnp.asarray(2))
    _assert_equal_trees(first, second)
    assert jax.tree.structure(first) == jax.tree.structure(rule.init(ctx, jax.eval_shape(lambda: q)))
    signals = [jnp.ones(g.varshape + (g.num_state,)) for g in ctx.graph.hidden_groups]
    _assert_equal_trees(rule.solve(ctx, first, rule.learning_signal(ctx, signals, None), q, jnp.asarray(2)),
                        rule.solve(ctx, first, rule.learning_signal(ctx, signals, None), q, jnp.asarray(2)))

    # Neither the state passed in nor the learner changed.
    _assert_equal_trees(jax.tree.map(np.asarray, state), before_state)
    assert learner.etrace.value is state
    assert dict(vars(learner)).keys() == before_attributes.keys()
    assert all(vars(learner)[k] is v for k, v in before_attributes.items())


def test_rule_roll_is_the_learners_step():
    """The step the learner runs advances its state exactly as ``rule.roll`` does."""
    learner = _learner(braintrace.D_RTRL)
    xs = _xs()
    rule, ctx = learner._compiled.rule, learner._compiled.context
    state = learner.etrace.value
    q = _step_quantities(learner, xs[0])
    expected = rule.roll(ctx, state, q, jnp.asarray(0))
    learner(xs[0])
    _assert_equal_trees(learner.etrace.value, expected)
    assert any(float(jnp.abs(leaf).max()) > 0 for leaf in jax.tree.leaves(expected))


@dataclasses.dataclass(frozen=True)
class MyDiagonalRTRL(TraceRule):
    """D-RTRL written from the public helpers (ε ← D ε + (∂h/∂y) ⊗ x, contracted with L)."""

    def init(self, ctx, q):
        return {TraceKey(r, g.index): zero_param_trace(rel, q.x[r], q.df[r][i], q.effective[r])
                for r, rel, i, g in relation_groups(ctx)}

    def roll(self, ctx, state, q, step):
        return {TraceKey(r, g.index): roll_param_trace(rel, g, state[TraceKey(r, g.index)], q.x[r], q.df[r][i],
                                                       q.effective[r], q.jacobians[g.index])
                for r, rel, i, g in relation_groups(ctx)}

    def solve(self, ctx, state, signals, q, step):
        return contract_param_traces(ctx, state, signals, q)


class MyLearner(braintrace.ETraceAlgorithm):
    def __init__(self, model, name=None, **options):
        super().__init__(model, name, **options)
        self.trace_rule = MyDiagonalRTRL()


def test_custom_rule_runs_under_jit_and_equals_d_rtrl():
    xs = _xs()
    reference = _grads(_learner(braintrace.D_RTRL), xs)
    mine = _learner(MyLearner)
    assert isinstance(mine._compiled.context, RuleContext)
    grads = brainstate.transform.jit(lambda seq: _grads(mine, seq))(xs)
    assert set(grads) == set(reference)
    for path in reference:
        for a, b in zip(jax.tree.leaves(grads[path]), jax.tree.leaves(reference[path]), strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7, err_msg=str(path))
    assert float(jnp.abs(grads[("cell", "Wz", "weight")]["weight"]).max()) > 1e-3
    trace = mine.get_etrace_of(("cell", "Wz", "weight"))
    assert list(trace) and all(type(k) is tuple for k in trace)  # plain (relation, group) keys, as before


class OldStyle(braintrace.ETraceAlgorithm):
    """A learner written for the hooks before the rule contract (string keys, reads self.graph)."""

    def init_traces(self, graph, q):
        return {f"{r}:{g.index}": zero_param_trace(rel, q.x[r], q.df[r][i], q.effective[r])
                for r, rel in enumerate(graph.hidden_param_op_relations) for i, g in enumerate(rel.hidden_groups)}

    def roll(self, traces, q, step):
        return {f"{r}:{g.index}": roll_param_trace(rel, g, traces[f"{r}:{g.index}"], q.x[r], q.df[r][i],
                                                   q.effective[r], q.jacobians[g.index])
                for r, rel in enumerate(self.graph.hidden_param_op_relations) for i, g in enumerate(rel.hidden_groups)}

    def solve(self, traces, signals, q, step):
        out = []
        for r, rel in enumerate(self.graph.hidden_param_op_relations):
            grads = {}
            for g in rel.hidden_groups:
                part = etp_rule_of(rel.primitive).trace_contract(traces[f"{r}:{g.index}"], signals[g.index],
                                                                  q.effective[r], rel.eqn_params)
                for k, v in part.items():
                    grads[k] = v if k not in grads else grads[k] + v
            out.append(grads)
        return out


def test_old_style_subclass_still_works():
    xs = _xs()
    reference_learner = _learner(braintrace.D_RTRL)
    reference = _grads(reference_learner, xs)
    old = _learner(OldStyle)
    grads = _grads(old, xs)
    for path in reference:
        for a, b in zip(jax.tree.leaves(grads[path]), jax.tree.leaves(reference[path]), strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7, err_msg=str(path))
    assert sorted(old.etrace.value) == ["0:0", "1:0"]
    traces = old.get_etrace_of(("cell", "Wz", "weight"))
    expected = reference_learner.get_etrace_of(("cell", "Wz", "weight"))
    assert list(traces) == list(expected)
    _assert_equal_trees(list(traces.values()), list(expected.values()))


class SilentSignal(braintrace.D_RTRL):
    """Old-style partial override: only the learning signal (zero) and the same-step switch."""

    same_step_gradients = False

    def learning_signal(self, signals, extra):
        return [jnp.zeros_like(s) for s in signals]


def test_old_style_partial_override_uses_the_rule_for_the_rest():
    learner = _learner(SilentSignal)
    assert learner._compiled.rule.same_step_gradients is False
    grads = _grads(learner, _xs())
    assert all(float(jnp.abs(leaf).max()) == 0.0 for leaf in jax.tree.leaves(grads))
    assert sorted(learner.etrace.value) == [(0, 0), (1, 0)]  # the D-RTRL rule's state


def test_learner_without_a_rule_says_what_to_do():
    brainstate.random.seed(0)
    model = models.gru(3, 4, 2)
    brainstate.nn.init_all_states(model)
    learner = braintrace.ETraceAlgorithm(model)
    with pytest.raises(TypeError, match="trace_rule"):
        learner.compile_graph(_xs()[0])
    assert not learner.is_compiled


def test_trace_states_exist_before_compilation_and_keep_their_identity():
    brainstate.random.seed(0)
    model = models.gru(3, 4, 2)
    brainstate.nn.init_all_states(model)
    learner = braintrace.D_RTRL(model)
    etrace, running_index = learner.etrace, learner.running_index
    assert etrace.value == {} and int(running_index.value) == 0
    learner.compile_graph(_xs()[0])
    learner(_xs()[0])
    assert learner.etrace is etrace and learner.running_index is running_index
    assert int(running_index.value) == 1 and sorted(etrace.value) == [(0, 0), (1, 0)]
