"""Scan descent in the compiler: long scans holding ETP ops are descended, not unrolled."""

import time

import brainstate
import braintools
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import braintrace
from braintrace.compiler.elementwise_check import non_elementwise_equations
from braintrace.compiler.scan_descent import DescendedRelation

K = braintrace.DiagnosticKind


class SubstepLIF(brainstate.nn.Module):
    """A LIF membrane advanced by ``length`` Euler substeps (``lax.scan``), ETP input inside the body."""

    def __init__(self, n_in=3, n=4, length=40):
        super().__init__()
        self.w = brainstate.ParamState(brainstate.random.randn(n_in, n) * 0.8)
        self.n, self.length = n, length

    def init_state(self, *args, **kwargs):
        self.v = brainstate.HiddenState(jnp.zeros(self.n))

    def update(self, x):
        def body(v, _):
            return v + 0.05 * (-v + braintrace.matmul(x, self.w.value)), None

        v, _ = jax.lax.scan(body, self.v.value, None, length=self.length)
        spike = braintools.surrogate.sigmoid(v - 1.0)
        self.v.value = v - jax.lax.stop_gradient(spike)
        return spike


class ConstantCurrentLIF(SubstepLIF):
    """The ETP op is outside the scan; its output is integrated by a weight-free 40-step scan."""

    def update(self, x):
        current = braintrace.matmul(x, self.w.value)
        v, _ = jax.lax.scan(lambda v, _: (v + 0.05 * (-v + current), None), self.v.value, None, length=self.length)
        self.v.value = v
        return v


def _compiled(model, *args, **kwargs):
    brainstate.nn.init_all_states(model)
    return braintrace.compile_etrace_graph(model, *args, **kwargs)


def test_long_scan_with_etp_inside_is_descended_not_unrolled():
    brainstate.random.seed(0)
    graph = _compiled(SubstepLIF(), jnp.ones(3))
    (applied,) = graph.explain(kind=K.SCAN_DESCENT_APPLIED)
    assert applied.level is braintrace.DiagnosticLevel.INFO
    assert applied.context == {"length": 40, "relations": 1, "weights": ["w"], "groups": [0], "state_positions": [0]}
    eqns = graph.module_info.closed_jaxpr.eqns
    assert [str(e.primitive) for e in eqns].count("scan") == 1 and len(eqns) < 20  # 40 bodies would be > 200
    (relation,) = graph.hidden_param_op_relations
    assert isinstance(relation.control_flow_context, DescendedRelation)
    assert relation.trainable_paths == {"weight": ("w",)} and relation.connected_hidden_paths == [("v",)]
    with pytest.raises(ValueError, match="inside a descended scan"):
        relation.y_to_hidden_groups(jnp.ones(4), {})
    (included,) = graph.explain(kind=K.RELATION_INCLUDED)
    assert included.context["scan_descent"] is True
    # Nothing is left opaque or untraced: no warning at all.
    assert [r for r in graph.diagnostics if r.level is not braintrace.DiagnosticLevel.INFO] == []


def test_weight_free_long_scan_after_the_op_is_elementwise():
    brainstate.random.seed(1)
    graph = _compiled(ConstantCurrentLIF(), jnp.ones(3))
    assert graph.explain(kind=K.TRANSITION_NOT_ELEMENTWISE) == ()
    assert graph.explain(kind=K.TAIL_NOT_ELEMENTWISE) == ()
    assert graph.explain(kind=K.SCAN_DESCENT_APPLIED) == ()  # nothing to descend into
    (relation,) = graph.hidden_param_op_relations
    assert relation.control_flow_context is None


def test_elementwise_check_looks_into_scan_bodies():
    def scan_of(xs, body):
        closed = jax.make_jaxpr(lambda c, xs: jax.lax.scan(body, c, xs))(jnp.ones(3), xs)
        return [e for e in closed.eqns if str(e.primitive) == "scan"]

    # Rows aligned with the carry, or integer data: position by position.
    assert non_elementwise_equations(scan_of(jnp.ones((5, 3)), lambda c, x: (c * x, c))) == []
    assert non_elementwise_equations(scan_of(jnp.arange(5), lambda c, i: (c + i, c))) == []
    # A float vector scanned element by element mixes its positions into every carry position.
    assert len(non_elementwise_equations(scan_of(jnp.ones(5), lambda c, x: (c * x, c)))) == 1
    # A body mixing positions.
    assert len(non_elementwise_equations(scan_of(jnp.ones((5, 3)), lambda c, x: (jnp.roll(c, 1) + x, c)))) == 1


class ReverseScan(SubstepLIF):
    def update(self, x):
        v, _ = jax.lax.scan(lambda v, _: (0.9 * v + braintrace.matmul(x, self.w.value), None), self.v.value, None,
                            length=20, reverse=True)
        self.v.value = v
        return v


class WeightAsXs(SubstepLIF):
    def __init__(self):
        super().__init__()
        self.gain = brainstate.ParamState(jnp.ones((20, self.n)))

    def update(self, x):
        def body(v, g):
            return g * 0.9 * v + braintrace.matmul(x, self.w.value), None

        self.v.value, _ = jax.lax.scan(body, self.v.value, self.gain.value)
        return self.v.value


class NestedCond(SubstepLIF):
    def update(self, x):
        def body(v, _):
            v = jax.lax.cond(v[0] > 0, lambda: 0.9 * v, lambda: 0.8 * v)
            return v + braintrace.matmul(x, self.w.value), None

        self.v.value, _ = jax.lax.scan(body, self.v.value, None, length=20)
        return self.v.value


class PlainWeightUseInBody(SubstepLIF):
    def update(self, x):
        def body(v, _):
            return 0.9 * v + braintrace.matmul(x, self.w.value) + jnp.sum(self.w.value), None

        self.v.value, _ = jax.lax.scan(body, self.v.value, None, length=20)
        return self.v.value


@pytest.mark.parametrize("model, reason", [
    (ReverseScan, "it runs in reverse"),
    (WeightAsXs, "it scans over a weight-derived value as xs"),
    (NestedCond, "its body contains nested control flow (cond)"),
    (PlainWeightUseInBody, "a weight is used inside the body by `reduce_sum`, which is not an ETP op"),
])
def test_scans_that_cannot_be_descended_are_reported_with_the_reason(model, reason):
    brainstate.random.seed(2)
    with pytest.warns(UserWarning, match="was not descended"):
        graph = _compiled(model(), jnp.ones(3))
    (skipped,) = graph.explain(kind=K.SCAN_DESCENT_SKIPPED)
    assert skipped.level is braintrace.DiagnosticLevel.WARNING
    assert skipped.context == {"length": 20, "reason": reason}
    assert graph.explain(kind=K.SCAN_DESCENT_APPLIED) == ()
    assert all(r.control_flow_context is None for r in graph.hidden_param_op_relations)


def test_scan_descent_off_leaves_the_scan_opaque():
    brainstate.random.seed(3)
    policy = braintrace.ControlFlowPolicy(scan_descent="off")
    with pytest.warns(UserWarning, match="does not look inside control flow"):
        graph = _compiled(SubstepLIF(), jnp.ones(3), control_flow=policy)
    assert graph.explain(kind=K.SCAN_DESCENT_SKIPPED)[0].context["reason"] == "ControlFlowPolicy(scan_descent='off')"
    assert graph.hidden_param_op_relations == []


def _compile_and_lower(length):
    """``(graph compile seconds, XLA compile seconds, XLA temp bytes)`` of one online-gradient step."""
    model = SubstepLIF(n_in=8, n=6, length=length)
    brainstate.nn.init_all_states(model)
    start = time.perf_counter()
    learner = braintrace.D_RTRL(model)
    learner.compile_graph(jnp.ones(8))
    graph_s = time.perf_counter() - start
    compiled = learner._compiled
    params, others = compiled.layout.split([jax.tree.leaves(st.value) for st in learner._current_states()])

    def train_step(args, params, others, traces):
        def loss(params):
            main, new = compiled.step_fn(args, params, others, traces, jnp.asarray(0, jnp.int32), None)
            return jnp.sum(main[0] ** 2), new

        return jax.grad(loss, has_aux=True)(params)

    start = time.perf_counter()
    executable = jax.jit(train_step).lower([jnp.ones(8)], params, others, learner.etrace.value).compile()
    return graph_s, time.perf_counter() - start, executable.memory_analysis().temp_size_in_bytes


def test_compile_time_and_memory_do_not_grow_with_the_trip_count():
    _compile_and_lower(10)  # warm-up: tracing caches
    graph_100, xla_100, temp_100 = _compile_and_lower(100)
    graph_1000, xla_1000, temp_1000 = _compile_and_lower(1000)
    assert graph_1000 < 1.0
    assert temp_1000 == temp_100
    # Generous bounds (2 shared cores); unrolling would multiply both by ~10.
    assert xla_1000 < 2.0 * xla_100 + 0.5
    assert graph_1000 < 3.0 * graph_100 + 0.2
    np.testing.assert_array_less(0, temp_100)
