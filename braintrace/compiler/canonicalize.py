# Copyright 2026 The braintrace authors. Licensed under the Apache License, Version 2.0.
"""Canonicalisation of the traced step, before any analysis.

Applied to the traced step under a :class:`~braintrace.ControlFlowPolicy`:

* every ``jit`` / ``closed_call`` body is inlined (fresh variables per call site, inner
  constants lifted), so that later passes identify values by ``Var`` identity;
* a ``cond`` whose branches contain ETP ops is if-converted
  (:func:`~braintrace.compiler.control_flow_rewrites.if_convert_cond`);
* a relevant ``scan`` (it contains an ETP op, or reads a value derived from a weight or a
  hidden state, or writes a hidden state) with a static length up to ``scan_unroll_limit``,
  no effects and no inner ``while_loop`` is unrolled
  (:func:`~braintrace.compiler.control_flow_rewrites.unroll_scan`). ``fori_loop`` with
  static bounds and ``brainstate.transform.for_loop`` lower to ``scan``. An ETP op inside
  becomes an ordinary relation, exact wherever the unrolled step is. A longer scan holding
  ETP ops is left as one equation for :mod:`~braintrace.compiler.scan_descent` (under
  ``scan_descent='auto'``), so its ``scan_unroll_skipped`` record is then only *info*;
* the sweeps repeat (re-inlining the ``jit`` bodies that surface) until nothing changes;
* literal outputs become variables, so that every output has an identity.

The jaxpr inputs and the output positions keep their meaning, so the state tables built
from them stay valid. Remaining ``while_loop`` equations are checked afterwards by
:func:`~braintrace.compiler.control_flow_report.check_while_loops`.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax.extend.core as jex_core

from .. import _errors
from .._jax_compat import Jaxpr, Literal, Var, build_jaxpr, new_var
from .._jax_compat import lax_primitives as P
from ..ops.primitive import is_etp_primitive
from .control_flow_policy import ControlFlowPolicy
from .control_flow_rewrites import if_convert_cond, unroll_scan
from .diagnostics import CompilationRecord, DiagnosticKind, DiagnosticLevel, PassResult, new_record
from .jaxpr_tools import contains_primitive, forward_closure, inline_calls, is_var, make_eqn

__all__ = ["canonicalize_step"]


def _body_contains(eqn, predicate) -> bool:
    return any(contains_primitive(sub, predicate) for sub in jex_core.jaxprs_in_params(eqn.params))


def _scan_skip_reason(eqn, policy: ControlFlowPolicy) -> str | None:
    length = int(eqn.params["length"])
    if eqn.effects:
        return "it has side effects"
    if _body_contains(eqn, lambda p: p is P.while_p):
        return "its body contains a while_loop"
    if length == 0:
        return "it has no iteration"
    if length > policy.scan_unroll_limit:
        return f"its length {length} exceeds scan_unroll_limit={policy.scan_unroll_limit}"
    return None


def _cond_record(eqn) -> CompilationRecord:
    branches = len(eqn.params["branches"])
    return new_record(
        DiagnosticKind.COND_IF_CONVERTED, DiagnosticLevel.INFO,
        f"A `cond` with {branches} branches contains ETP ops; it was replaced by all branches "
        "and a select, so those ops are trained online (both branches now run every step).",
        primitive="cond", context={"branches": branches, "outputs": len(eqn.outvars)})


def _scan_record(eqn, reason: str | None, carries_etp: bool, descent: bool = False) -> CompilationRecord:
    length = int(eqn.params["length"])
    if reason is None:
        return new_record(
            DiagnosticKind.SCAN_UNROLLED, DiagnosticLevel.INFO,
            f"A `scan` of length {length} (a scan, fori_loop or for_loop) was unrolled "
            "into the step, so the ETP ops and hidden updates inside are analysed as ordinary ops.",
            primitive="scan", context={"length": length, "reverse": bool(eqn.params["reverse"])})
    if descent:
        # The ETP ops inside are handled by scan descent, which records its own decision.
        return new_record(
            DiagnosticKind.SCAN_UNROLL_SKIPPED, DiagnosticLevel.INFO,
            f"A `scan` of length {length} was not unrolled because {reason}; it is left to scan "
            "descent (see scan_descent_applied / scan_descent_skipped).",
            primitive="scan", context={"length": length, "reason": reason})
    return new_record(
        DiagnosticKind.SCAN_UNROLL_SKIPPED, DiagnosticLevel.WARNING if carries_etp else DiagnosticLevel.INFO,
        f"A `scan` of length {length} was not unrolled because {reason}; it stays "
        "one opaque equation (see primitive_inside_control_flow / weight_in_control_flow).",
        primitive="scan", context={"length": length, "reason": reason})


def _sweep(eqns, policy: ControlFlowPolicy, watched: set, hidden_out: set, lifted: list):
    """One pass over the equations; returns ``(new_eqns, changed, records, skip_records)``."""
    derived = forward_closure(watched, eqns)
    changed = False
    records: list = []
    skipped: list = []
    new_eqns: list = []
    for eqn in eqns:
        if eqn.primitive is P.cond_p and policy.cond == "convert":
            converted = if_convert_cond(eqn, lifted)
            if converted is not None:
                new_eqns.extend(converted)
                records.append(_cond_record(eqn))
                changed = True
                continue
        if eqn.primitive is P.scan_p:
            carries_etp = _body_contains(eqn, is_etp_primitive)
            relevant = (carries_etp or any(is_var(a) and a in derived for a in eqn.invars)
                        or any(is_var(v) and v in hidden_out for v in eqn.outvars))
            if relevant:
                reason = _scan_skip_reason(eqn, policy)
                if reason is None:
                    new_eqns.extend(unroll_scan(eqn, lifted))
                    records.append(_scan_record(eqn, None, carries_etp))
                    changed = True
                    continue
                to_descent = carries_etp and policy.scan_descent == "auto" and reason.startswith("its length")
                skipped.append(_scan_record(eqn, reason, carries_etp, descent=to_descent))
        new_eqns.append(eqn)
    return new_eqns, changed, records, skipped


def _literal_outputs_to_vars(eqns: list, outvars: list) -> None:
    for i, atom in enumerate(outvars):
        if isinstance(atom, Literal):
            fresh = new_var(atom.aval)
            eqns.append(make_eqn([atom], [fresh], P.copy_p))
            outvars[i] = fresh


def canonicalize_step(jaxpr: Jaxpr, policy: ControlFlowPolicy, *, watched: Sequence[Var] = (),
                      hidden_out_indices: Sequence[int] = ()) -> PassResult[Jaxpr]:
    """Canonicalise a traced step under ``policy`` (see the module docstring).

    Parameters
    ----------
    jaxpr : Jaxpr
        The traced step, with its constants attached.
    policy : ControlFlowPolicy
        What to rewrite.
    watched : sequence of Var
        Weight leaf and hidden-state input vars: a ``scan`` reading a value derived from
        them is unrolled.
    hidden_out_indices : sequence of int
        Output positions of the new hidden values: a ``scan`` writing one is unrolled.

    Returns
    -------
    PassResult of Jaxpr
        The canonical step (same invars, same output positions, lifted constants appended
        to the constvars) and its ``cond_if_converted`` / ``scan_unrolled`` /
        ``scan_unroll_skipped`` records.

    Raises
    ------
    CompilationError
        If the rewriting does not settle within ``fixpoint_iteration_limit`` sweeps.

    Examples
    --------
    >>> import jax, jax.numpy as jnp
    >>> from braintrace.compiler.canonicalize import canonicalize_step
    >>> from braintrace import ControlFlowPolicy
    >>> closed = jax.make_jaxpr(lambda h: jax.lax.fori_loop(0, 3, lambda i, v: 0.5 * v, h))(jnp.ones(2))
    >>> result = canonicalize_step(closed, ControlFlowPolicy(), watched=closed.invars, hidden_out_indices=[0])
    >>> any(str(e.primitive) == 'scan' for e in result.value.eqns), [r.kind.value for r in result.records]
    (False, ['scan_unrolled'])
    """
    eqns, outvars, lifted, _ = inline_calls(jaxpr.eqns, jaxpr.outvars)
    watched_set = {v for v in watched if is_var(v)}
    records: list = []
    for _ in range(policy.fixpoint_iteration_limit):
        hidden_out = {outvars[i] for i in hidden_out_indices if is_var(outvars[i])}
        eqns, changed, done, skipped = _sweep(eqns, policy, watched_set, hidden_out, lifted)
        records.extend(done)
        if not changed:
            records.extend(skipped)
            break
        eqns, outvars, more, _ = inline_calls(eqns, outvars)
        lifted.extend(more)
    else:
        pending = sorted({str(e.primitive) for e in eqns if e.primitive in (P.scan_p, P.cond_p)})
        raise _errors.CompilationError(
            f"Control-flow canonicalisation did not settle within fixpoint_iteration_limit="
            f"{policy.fixpoint_iteration_limit} sweeps (still rewriting: {', '.join(pending) or 'nothing'}); "
            "raise ControlFlowPolicy.fixpoint_iteration_limit or lower scan_unroll_limit."
        )
    _literal_outputs_to_vars(eqns, outvars)
    constvars = list(jaxpr.constvars) + [v for v, _ in lifted]
    consts = list(jaxpr.consts) + [c for _, c in lifted]
    return PassResult(build_jaxpr(constvars, consts, jaxpr.invars, outvars, eqns), tuple(records))

