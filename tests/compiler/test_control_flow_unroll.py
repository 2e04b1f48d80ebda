"""Short scans, fori_loops and for_loops inside a step are unrolled and trained exactly."""

import brainstate
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import braintrace
from tests._support.oracle import assert_grads_close, bptt_grads, online_grads, restore_states, snapshot_states

K = braintrace.DiagnosticKind


class SubstepLeaky(brainstate.nn.Module):
    """A leaky neuron advanced by 4 Euler sub-steps (fori_loop) around one ETP input."""

    def __init__(self, n_in=3, n=4):
        super().__init__()
        self.w = brainstate.ParamState(brainstate.random.randn(n_in, n) * 0.5)
        self.n = n

    def init_state(self, *args, **kwargs):
        self.v = brainstate.HiddenState(jnp.zeros(self.n))

    def update(self, x):
        current = braintrace.matmul(x, self.w.value)
        self.v.value = jax.lax.fori_loop(0, 4, lambda i, v: v + 0.25 * (-0.5 * v + jnp.tanh(current + v)), self.v.value)
        return self.v.value


class OpInsideScan(brainstate.nn.Module):
    """The ETP op sits inside a short scan over dendritic compartments (xs: one row each)."""

    def __init__(self, n_in=3, n=4, length=3, reverse=False):
        super().__init__()
        self.w = brainstate.ParamState(brainstate.random.randn(n_in, n) * 0.5)
        self.n, self.length, self.reverse = n, length, reverse

    def init_state(self, *args, **kwargs):
        self.h = brainstate.HiddenState(jnp.zeros(self.n))

    def update(self, x):
        rows = jnp.stack([x * (k + 1.0) for k in range(self.length)])

        def body(h, row):
            h = 0.8 * h + jnp.sin(braintrace.matmul(row, self.w.value))
            return h, 2.0 * h

        h, ys = jax.lax.scan(body, self.h.value, rows, reverse=self.reverse)
        self.h.value = h + 0.1 * jnp.mean(ys, axis=0)
        return self.h.value


class ForLoopSubsteps(brainstate.nn.Module):
    """``brainstate.transform.for_loop`` inside the step, writing a HiddenState each iteration."""

    def __init__(self, n_in=3, n=4):
        super().__init__()
        self.w = brainstate.ParamState(brainstate.random.randn(n_in, n) * 0.5)
        self.n = n

    def init_state(self, *args, **kwargs):
        self.h = brainstate.HiddenState(jnp.zeros(self.n))

    def update(self, x):
        def substep(scale):
            self.h.value = 0.7 * self.h.value + jnp.tanh(braintrace.matmul(x * scale, self.w.value))
            return self.h.value

        outs = brainstate.transform.for_loop(substep, jnp.array([1.0, 0.5, -0.5]))
        return jnp.mean(outs, axis=0)


def _exact(model, xs, **options):
    brainstate.nn.init_all_states(model)
    snap = snapshot_states(model)
    expected = bptt_grads(model, xs)
    restore_states(model, snap)
    learner = braintrace.D_RTRL(model, **options)
    learner.compile_graph(xs[0])
    return learner, expected, online_grads(learner, xs)


def _check_nontrivial(expected):
    g = np.asarray(expected[("w",)])
    assert np.all(np.isfinite(g)) and np.abs(g).max() > 1e-2


def test_fori_loop_substeps_equal_bptt():
    brainstate.random.seed(1)
    xs = brainstate.random.randn(12, 3)
    learner, expected, actual = _exact(SubstepLeaky(), xs)
    _check_nontrivial(expected)
    assert_grads_close(expected, actual, rtol=1e-4, atol=1e-6)
    (record,) = learner.graph.explain(kind=K.SCAN_UNROLLED)
    assert record.context == {"length": 4, "reverse": False}
    assert [r.weight_path for r in learner.graph.explain(kind=K.RELATION_INCLUDED)] == [("w",)]


@pytest.mark.parametrize("reverse", [False, True])
def test_etp_op_inside_short_scan_equals_bptt(reverse):
    brainstate.random.seed(2)
    xs = brainstate.random.randn(10, 3)
    learner, expected, actual = _exact(OpInsideScan(reverse=reverse), xs)
    _check_nontrivial(expected)
    assert_grads_close(expected, actual, rtol=1e-4, atol=1e-6)
    assert len(learner.graph.hidden_param_op_relations) == 3  # one relation per unrolled body copy


def test_brainstate_for_loop_inside_step_equals_bptt():
    brainstate.random.seed(3)
    xs = brainstate.random.randn(10, 3)
    learner, expected, actual = _exact(ForLoopSubsteps(), xs)
    _check_nontrivial(expected)
    assert_grads_close(expected, actual, rtol=1e-4, atol=1e-6)
    assert learner.graph.explain(kind=K.SCAN_UNROLLED)[0].context["length"] == 3


def test_unrolled_step_keeps_forward_values():
    brainstate.random.seed(4)
    model = OpInsideScan(reverse=True)
    brainstate.nn.init_all_states(model)
    x = brainstate.random.randn(3)
    graph = braintrace.compile_etrace_graph(model, x)
    out, *_ = graph.module_info.jaxpr_call(x)
    np.testing.assert_allclose(out, model.update(x), rtol=1e-6)


def test_scan_longer_than_limit_stays_opaque_and_is_reported():
    brainstate.random.seed(5)
    model = SubstepLeaky()
    brainstate.nn.init_all_states(model)
    policy = braintrace.ControlFlowPolicy(scan_unroll_limit=3)
    graph = braintrace.compile_etrace_graph(model, jnp.ones(3), control_flow=policy)
    assert graph.module_info.control_flow is policy
    assert graph.explain(kind=K.SCAN_UNROLLED) == ()
    (skipped,) = graph.explain(kind=K.SCAN_UNROLL_SKIPPED)
    assert skipped.context == {"length": 4, "reason": "its length 4 exceeds scan_unroll_limit=3"}
    assert any(str(e.primitive) == "scan" for e in graph.module_info.jaxpr.eqns)


def test_scan_with_etp_over_limit_that_cannot_be_descended_is_reported():
    # Its stacked outputs (ys) feed the hidden state, so scan descent refuses it as well.
    class Long(OpInsideScan):
        def __init__(self):
            super().__init__(length=20)

    brainstate.random.seed(6)
    model = Long()
    brainstate.nn.init_all_states(model)
    with pytest.warns(UserWarning, match="does not look inside control flow"):
        graph = braintrace.compile_etrace_graph(model, jnp.ones(3))
    (skipped,) = graph.explain(kind=K.SCAN_UNROLL_SKIPPED)
    assert skipped.context["length"] == 20
    (refused,) = graph.explain(kind=K.SCAN_DESCENT_SKIPPED)
    assert refused.level is braintrace.DiagnosticLevel.WARNING
    assert refused.context["reason"] == "its stacked outputs (ys) that depend on an ETP op feed a hidden state"
    assert len(graph.explain(kind=K.PRIMITIVE_INSIDE_CONTROL_FLOW)) == 1
    assert len(graph.hidden_param_op_relations) == 0


def test_learner_passes_policy_to_the_compiler():
    brainstate.random.seed(7)
    model = OpInsideScan()
    brainstate.nn.init_all_states(model)
    assert braintrace.D_RTRL(model).compile_graph(jnp.ones(3)).hidden_param_op_relations
    learner = braintrace.D_RTRL(model, control_flow=braintrace.ControlFlowPolicy(scan_unroll_limit=0))
    with pytest.warns(UserWarning, match="does not look inside control flow"), \
            pytest.raises(braintrace.CompilationError, match="no ETP op feeding a hidden state"):
        learner.compile_graph(jnp.ones(3))
    assert not learner.is_compiled


@pytest.mark.parametrize("kwargs, match", [
    ({"cond": "unroll"}, "`cond` must be one of"),
    ({"while_hidden": "ignore"}, "`while_hidden`"),
    ({"etp_in_control_flow": None}, "`etp_in_control_flow`"),
    ({"scan_descent": "on"}, "`scan_descent`"),
    ({"scan_unroll_limit": -1}, "`scan_unroll_limit` must be an int >= 0"),
    ({"scan_unroll_limit": True}, "`scan_unroll_limit`"),
    ({"fixpoint_iteration_limit": 0}, "`fixpoint_iteration_limit` must be an int >= 1"),
    ({"fixpoint_iteration_limit": 2.0}, "`fixpoint_iteration_limit`"),
])
def test_policy_is_validated(kwargs, match):
    with pytest.raises(ValueError, match=match):
        braintrace.ControlFlowPolicy(**kwargs)


def test_policy_defaults_and_wrong_type():
    policy = braintrace.ControlFlowPolicy()
    assert (policy.cond, policy.scan_unroll_limit, policy.while_hidden, policy.etp_in_control_flow,
            policy.scan_descent, policy.fixpoint_iteration_limit) == ("convert", 16, "opaque-fwd", "error", "auto", 64)
    with pytest.raises(AttributeError):
        policy.cond = "opaque"
    model = SubstepLeaky()
    brainstate.nn.init_all_states(model)
    with pytest.raises(TypeError, match="ControlFlowPolicy"):
        braintrace.compile_etrace_graph(model, jnp.ones(3), control_flow={"cond": "convert"})


class NestedLoops(brainstate.nn.Module):
    """A fori_loop around a cond whose branch holds a scan with the ETP op: nested rewriting."""

    def __init__(self, n_in=3, n=4):
        super().__init__()
        self.w = brainstate.ParamState(brainstate.random.randn(n_in, n) * 0.5)
        self.n = n

    def init_state(self, *args, **kwargs):
        self.h = brainstate.HiddenState(jnp.zeros(self.n))

    def update(self, x):
        def inner(v, _):
            return 0.9 * v + jnp.tanh(braintrace.matmul(x, self.w.value)), None

        def outer(i, v):
            return jax.lax.cond(x[0] > 0, lambda v: jax.lax.scan(inner, v, None, length=2)[0], lambda v: 0.5 * v, v)

        self.h.value = jax.lax.fori_loop(0, 2, outer, self.h.value)
        return self.h.value


def test_nested_scans_and_cond_are_rewritten_to_a_fixpoint_and_equal_bptt():
    brainstate.random.seed(8)
    xs = brainstate.random.randn(10, 3)
    learner, expected, actual = _exact(NestedLoops(), xs)
    _check_nontrivial(expected)
    assert_grads_close(expected, actual, rtol=1e-4, atol=1e-6)
    graph = learner.graph
    assert [r.context["length"] for r in graph.explain(kind=K.SCAN_UNROLLED)] == [2, 2, 2]
    assert len(graph.explain(kind=K.COND_IF_CONVERTED)) == 2
    assert not any(e.primitive.name in ("scan", "cond") for e in graph.module_info.jaxpr.eqns)


def test_fixpoint_limit_is_enforced():
    brainstate.random.seed(9)
    model = NestedLoops()
    brainstate.nn.init_all_states(model)
    with pytest.raises(braintrace.CompilationError, match="fixpoint_iteration_limit=1"):
        braintrace.compile_etrace_graph(model, jnp.ones(3),
                                        control_flow=braintrace.ControlFlowPolicy(fixpoint_iteration_limit=1))


def test_cond_opaque_policy_leaves_conds_alone():
    class OpInCond(SubstepLeaky):
        def update(self, x):
            y = jax.lax.cond(x[0] > 0, lambda: braintrace.matmul(x, self.w.value), lambda: jnp.zeros(self.n))
            self.v.value = 0.5 * self.v.value + y
            return self.v.value

    model = OpInCond()
    brainstate.nn.init_all_states(model)
    assert len(braintrace.compile_etrace_graph(model, jnp.ones(3)).explain(kind=K.COND_IF_CONVERTED)) == 1
    with pytest.warns(UserWarning, match="does not look inside control flow"):
        graph = braintrace.compile_etrace_graph(model, jnp.ones(3),
                                                control_flow=braintrace.ControlFlowPolicy(cond="opaque"))
    assert graph.explain(kind=K.COND_IF_CONVERTED) == () and len(graph.hidden_param_op_relations) == 0
