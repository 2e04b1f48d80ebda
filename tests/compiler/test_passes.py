# Copyright 2026 The braintrace authors. Licensed under the Apache License, Version 2.0.
"""Unit tests of the compiler passes and rewrites on small jaxprs.

Every rewrite is checked like JAX's own jaxpr transformations: ``check_jaxpr`` on the
result, and the same values as the original jaxpr on random inputs.
"""

import warnings

import brainstate
import jax
import jax.extend.core as jex_core
import jax.numpy as jnp
import numpy as np
import pytest

import braintrace
from braintrace._jax_compat import build_jaxpr
from braintrace._jax_compat import lax_primitives as P
from braintrace.compiler.canonicalize import canonicalize_step
from braintrace.compiler.control_flow_report import check_while_loops, report_control_flow
from braintrace.compiler.control_flow_rewrites import if_convert_cond, unroll_scan
from braintrace.compiler.diagnostics import DiagnosticLevel, PassResult, diagnostic_context
from braintrace.compiler.hidden_groups import find_hidden_groups
from braintrace.compiler.jaxpr_tools import evaluate_flat, inline_calls
from braintrace.compiler.module_info import build_module_info, trace_step
from braintrace.compiler.perturbation import add_hidden_perturbation
from braintrace.compiler.relations import find_hidden_param_op_relations

RNG = np.random.default_rng(0)


def _random_args(closed):
    out = []
    for v in closed.invars:
        aval = v.aval
        if jnp.issubdtype(aval.dtype, jnp.integer):
            out.append(jnp.asarray(RNG.integers(0, 2, aval.shape), aval.dtype))
        else:
            out.append(jnp.asarray(RNG.standard_normal(aval.shape), aval.dtype))
    return out


def _assert_same_values(original, rewritten, args):
    jex_core.check_jaxpr(rewritten)
    for a, b in zip(evaluate_flat(original, args), evaluate_flat(rewritten, args), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-6)


def _replace_eqn(closed, primitive, rewrite):
    """The jaxpr with the single ``primitive`` equation replaced by ``rewrite(eqn, lifted)``."""
    lifted, eqns = [], []
    for eqn in closed.eqns:
        eqns.extend(rewrite(eqn, lifted) if eqn.primitive is primitive else [eqn])
    return build_jaxpr(list(closed.constvars) + [v for v, _ in lifted], list(closed.consts) + [c for _, c in lifted],
                       closed.invars, closed.outvars, eqns)


def test_inline_calls_removes_every_jit_and_keeps_values():
    inner = jax.jit(lambda x, w: jnp.tanh(x @ w) + jnp.arange(3.0))
    outer = jax.jit(lambda x, w: inner(x, w) * 2.0)
    closed = jax.make_jaxpr(lambda x, w: outer(x, w) + inner(x, w))(jnp.ones(2), jnp.ones((2, 3)))
    eqns, outvars, lifted, _ = inline_calls(closed.eqns, closed.outvars)
    assert not any(e.primitive is P.jit_p for e in eqns)
    rewritten = build_jaxpr(list(closed.constvars) + [v for v, _ in lifted],
                            list(closed.consts) + [c for _, c in lifted], closed.invars, outvars, eqns)
    _assert_same_values(closed, rewritten, _random_args(closed))


@pytest.mark.parametrize("index", [0, 1])
def test_if_convert_cond_gives_both_branches_and_a_select(index):
    def f(i, x, w):
        return jax.lax.cond(i > 0, lambda: jnp.sin(braintrace.matmul(x, w)), lambda: jnp.cos(x @ w) - 1.0)

    closed = jax.make_jaxpr(f)(1, jnp.ones(3), jnp.ones((3, 2)))
    rewritten = _replace_eqn(closed, P.cond_p, if_convert_cond)
    assert not any(e.primitive is P.cond_p for e in rewritten.eqns)
    assert any(e.primitive is P.select_n_p for e in rewritten.eqns)
    args = _random_args(closed)
    args[0] = jnp.asarray(index, args[0].dtype)
    _assert_same_values(closed, rewritten, args)


def test_if_convert_cond_leaves_a_cond_without_etp_ops():
    closed = jax.make_jaxpr(lambda i, x: jax.lax.cond(i > 0, jnp.sin, jnp.cos, x))(1, jnp.ones(3))
    (eqn,) = [e for e in closed.eqns if e.primitive is P.cond_p]
    assert if_convert_cond(eqn, []) is None


@pytest.mark.parametrize("reverse", [False, True])
def test_unroll_scan_threads_carries_and_restacks_ys(reverse):
    def f(h, xs, w):
        def body(carry, x):
            new = 0.5 * carry + jnp.tanh(x @ w)
            return new, new * 2.0

        return jax.lax.scan(body, h, xs, reverse=reverse)

    closed = jax.make_jaxpr(f)(jnp.ones(2), jnp.ones((4, 3)), jnp.ones((3, 2)))
    rewritten = _replace_eqn(closed, P.scan_p, unroll_scan)
    assert not any(e.primitive is P.scan_p for e in rewritten.eqns)
    _assert_same_values(closed, rewritten, _random_args(closed))


def test_unroll_fori_loop():
    closed = jax.make_jaxpr(lambda h, w: jax.lax.fori_loop(0, 3, lambda i, v: jnp.tanh(v @ w) + i, h))(
        jnp.ones(2), jnp.ones((2, 2)))
    rewritten = _replace_eqn(closed, P.scan_p, unroll_scan)
    assert not any(e.primitive is P.scan_p for e in rewritten.eqns)
    _assert_same_values(closed, rewritten, _random_args(closed))


def test_canonicalize_step_reaches_a_fixed_point_and_returns_records():
    inner = jax.jit(lambda i, x, w: jax.lax.cond(i > 0, lambda: braintrace.matmul(x, w), lambda: x @ w))

    def f(i, h, x, w):
        h = jax.lax.fori_loop(0, 2, lambda k, v: 0.5 * v + inner(i, x, w), h)
        return h, jnp.float32(1.0)  # a literal output becomes a var

    closed = jax.make_jaxpr(f)(1, jnp.ones(2), jnp.ones(3), jnp.ones((3, 2)))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a pass never warns
        result = canonicalize_step(closed, braintrace.ControlFlowPolicy(), watched=closed.invars[1:],
                                   hidden_out_indices=[0])
    assert isinstance(result, PassResult)
    rewritten = result.value
    assert not any(e.primitive in (P.jit_p, P.cond_p, P.scan_p) for e in rewritten.eqns)
    assert all(isinstance(v, jex_core.Var) and not isinstance(v, jex_core.Literal) for v in rewritten.outvars)
    assert [r.kind.value for r in result.records].count("scan_unrolled") == 1
    assert "cond_if_converted" in [r.kind.value for r in result.records]
    _assert_same_values(closed, rewritten, _random_args(closed))


@pytest.mark.parametrize("descent, level", [("off", DiagnosticLevel.WARNING), ("auto", DiagnosticLevel.INFO)])
def test_canonicalize_step_records_a_skipped_scan(descent, level):
    # Under scan_descent='auto' a long scan holding ETP ops is left to scan descent, which
    # records its own decision; with descent off the ops stay untraced (a warning).
    closed = jax.make_jaxpr(lambda h, x, w: jax.lax.fori_loop(0, 5, lambda k, v: v + braintrace.matmul(x, w), h))(
        jnp.ones(2), jnp.ones(3), jnp.ones((3, 2)))
    policy = braintrace.ControlFlowPolicy(scan_unroll_limit=2, scan_descent=descent)
    result = canonicalize_step(closed, policy, watched=closed.invars, hidden_out_indices=[0])
    (record,) = result.records
    assert record.kind.value == "scan_unroll_skipped" and record.level is level
    _assert_same_values(closed, result.value, _random_args(closed))


def test_control_flow_checks_return_records_or_raise_with_the_record():
    closed = jax.make_jaxpr(lambda h, w: jax.lax.while_loop(lambda v: jnp.sum(v) < 3.0, lambda v: v + w, h))(
        jnp.ones(2), jnp.ones(2))
    h, w = closed.invars
    result = check_while_loops(closed.eqns, braintrace.ControlFlowPolicy(), weight_path_to_invars={},
                               hidden_invars=[h], hidden_outvars=closed.outvars)
    assert [r.context["touches_hidden"] for r in result.records] == [True]
    with pytest.raises(braintrace.NotSupportedError) as info:
        check_while_loops(closed.eqns, braintrace.ControlFlowPolicy(), weight_path_to_invars={("w",): [w]},
                          hidden_invars=[h], hidden_outvars=closed.outvars)
    assert info.value.record.kind.value == "weight_in_while"
    reported = report_control_flow(closed.eqns, {("w",): [w]})
    assert reported.value == {("w",)} and [r.kind.value for r in reported.records] == ["weight_in_control_flow"]


def _gru():
    gru = braintrace.nn.GRUCell(3, 4)
    brainstate.nn.init_all_states(gru)
    return gru


def test_trace_step_restores_states_and_records_unused_states():
    gru = _gru()
    before = gru.h.value
    result = trace_step(gru, jnp.ones(3))
    assert gru.h.value is before
    assert result.records == ()
    assert len(result.value.jaxpr.invars) == 1 + sum(len(jax.tree.leaves(s.value)) for s in result.value.states)


def test_passes_return_records_and_never_warn():
    x = jnp.ones(3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        minfo = build_module_info(_gru(), x).value
        groups = find_hidden_groups(minfo)
        relations = find_hidden_param_op_relations(minfo, groups.value[1])
        perturb = add_hidden_perturbation(minfo, groups.value[0], relations.value)
    kinds = [r.kind.value for r in relations.records]
    assert "relation_excluded_weight_to_weight" in kinds and "relation_included" in kinds
    assert isinstance(perturb, PassResult)


def test_compile_warns_once_per_warning_record_at_the_end():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        graph = braintrace.compile_etrace_graph(_gru(), jnp.ones(3))
    expected = [str(r) for r in graph.diagnostics if r.level is DiagnosticLevel.WARNING]
    assert expected and [str(w.message) for w in caught if issubclass(w.category, UserWarning)] == expected
    assert all(w.filename == __file__ for w in caught)


def test_diagnostic_context_receives_the_records_of_a_failed_compilation():
    class WeightInWhile(brainstate.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = brainstate.ParamState(jnp.ones(4))
            self.h = brainstate.HiddenState(jnp.zeros(4))

        def update(self, x):
            y = jax.lax.while_loop(lambda y: jnp.sum(y) < 10.0, lambda y: y + self.w.value, jnp.zeros(4))
            self.h.value = 0.5 * self.h.value + y + x
            return self.h.value

    with diagnostic_context() as collector, pytest.raises(braintrace.NotSupportedError):
        braintrace.compile_etrace_graph(WeightInWhile(), jnp.ones(4))
    assert collector.records()[-1].kind.value == "weight_in_while"


def test_output_rewriting_keeps_the_step_and_adds_outputs():
    minfo = build_module_info(_gru(), jnp.ones(3)).value
    extra = [e.outvars[0] for e in minfo.closed_jaxpr.eqns[:3]]
    rewritten = minfo.add_jaxpr_outs(extra)
    args = minfo.flat_inputs((jnp.asarray(RNG.standard_normal(3), jnp.float32),))
    jex_core.check_jaxpr(rewritten.closed_jaxpr)
    before = evaluate_flat(minfo.closed_jaxpr, args)
    after = evaluate_flat(rewritten.closed_jaxpr, args)
    assert len(after) == len(before) + len(extra)
    for a, b in zip(before, after[:len(before)]):
        np.testing.assert_allclose(a, b)


def test_hidden_perturbation_is_a_valid_jaxpr_equal_to_the_step_at_zero():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        graph = braintrace.compile_etrace_graph(_gru(), jnp.ones(3))
    minfo, pert = graph.module_info, graph.hidden_perturb
    jex_core.check_jaxpr(pert.perturb_jaxpr)
    args = minfo.flat_inputs((jnp.asarray(RNG.standard_normal(3), jnp.float32),))
    zeros = [jnp.zeros(v.aval.shape, v.aval.dtype) for v in pert.perturb_vars]
    for a, b in zip(evaluate_flat(minfo.closed_jaxpr, args), pert.eval_jaxpr(args, zeros), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)
    # A perturbation moves the new hidden value by exactly itself.
    delta = [jnp.asarray(RNG.standard_normal(v.aval.shape), v.aval.dtype) for v in pert.perturb_vars]
    h_index = minfo.closed_jaxpr.outvars.index(minfo.hidden_path_to_outvar[("h",)])
    moved = pert.eval_jaxpr(args, delta)[h_index] - evaluate_flat(minfo.closed_jaxpr, args)[h_index]
    np.testing.assert_allclose(moved, delta[0], rtol=1e-5, atol=1e-5)


def test_transition_and_tail_jaxprs_are_valid():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        graph = braintrace.compile_etrace_graph(_gru(), jnp.ones(3))
    for group in graph.hidden_groups:
        jex_core.check_jaxpr(group.transition_jaxpr.to_jax())
    for relation in graph.hidden_param_op_relations:
        for tail in relation.y_to_hidden_group_jaxprs:
            jex_core.check_jaxpr(tail.to_jax())
