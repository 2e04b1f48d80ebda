# Copyright 2026 The braintrace authors. Licensed under the Apache License, Version 2.0.
"""Control-flow canonicalisation of the flat step, before any analysis.

Applied by :func:`~braintrace.compiler.extract_module_info` after ``jit`` inlining, under a
:class:`~braintrace.ControlFlowPolicy`:

* a ``cond`` whose branches contain ETP ops is if-converted
  (:mod:`braintrace.compiler.control_flow_rewrite`);
* a relevant ``scan`` (it contains an ETP op, or reads a value derived from a weight or a
  hidden state, or writes a hidden state) with a static length up to ``scan_unroll_limit``,
  no effects and no inner ``while_loop`` is unrolled: one body copy per iteration, ``xs``
  sliced, carries threaded and ``ys`` restacked. ``fori_loop`` with static bounds and
  ``brainstate.transform.for_loop`` lower to ``scan``. An ETP op inside becomes an ordinary
  relation, exact wherever the unrolled step is;
* the passes repeat (re-inlining the ``jit`` bodies that surface) until nothing changes;
* a remaining ``while_loop`` is checked: a weight or an ETP op inside raises
  :class:`~braintrace.NotSupportedError`; a weight-free one runs as opaque forward code.

The jaxpr inputs and outputs keep their identity, so the state tables stay valid.
"""

from __future__ import annotations

import jax
import jax.extend.core as jex_core

from .. import _errors
from .._jax_compat import jaxpr_of_param
from .._jax_compat import lax_primitives as P
from ..ops.primitive import is_etp_primitive
from .control_flow_policy import ControlFlowPolicy
from .control_flow_rewrite import contains_etp, convert_cond
from .diagnostics import DiagnosticKind, DiagnosticLevel, emit, format_path
from .jaxpr_tools import CONTROL_FLOW_PRIMITIVES, forward_closure, inline_calls, is_var, make_eqn, rename_body

__all__ = ["canonicalize_control_flow"]


def _is_drop(v) -> bool:
    return type(v).__name__ == "DropVar"


def _contains(jaxpr, primitive) -> bool:
    for eqn in jaxpr.eqns:
        if eqn.primitive is primitive:
            return True
        if any(_contains(sub, primitive) for sub in jex_core.jaxprs_in_params(eqn.params)):
            return True
    return False


def _body_contains(eqn, primitive) -> bool:
    return any(_contains(sub, primitive) for sub in jex_core.jaxprs_in_params(eqn.params))


def _body_contains_etp(eqn) -> bool:
    return any(contains_etp(sub) for sub in jex_core.jaxprs_in_params(eqn.params))


def _split_scan_operands(eqn):
    """``(consts, init_carry, xs)`` operand lists of a ``scan`` equation."""
    params = eqn.params
    invars = list(eqn.invars)
    if "ft_in" in params:
        consts, carry, xs = params["ft_in"].update(invars).unpack()
        return list(consts), list(carry), list(xs)
    n_consts, n_carry = params["num_consts"], params["num_carry"]  # pragma: no cover - older JAX
    return invars[:n_consts], invars[n_consts:n_consts + n_carry], invars[n_consts + n_carry:]  # pragma: no cover


def _inline_fn(fn, operands, lifted):
    """Trace ``fn`` on the operands' avals and return its equations bound to the operands."""
    avals = [jax.ShapeDtypeStruct(a.aval.shape, a.aval.dtype) for a in operands]
    closed = jax.make_jaxpr(fn)(*avals)
    inner, consts, constvars = jaxpr_of_param(closed)
    return rename_body(inner, consts, constvars, list(operands), lifted)


def _unroll_scan(eqn, lifted) -> list:
    body, consts_b, constvars_b = jaxpr_of_param(eqn.params["jaxpr"])
    consts, carry, xs = _split_scan_operands(eqn)
    length, reverse = int(eqn.params["length"]), bool(eqn.params["reverse"])
    n_carry = len(carry)
    new_eqns: list = []
    per_step_xs = [[] for _ in range(length)]
    for x in xs:
        slices_eqns, parts = _inline_fn(
            lambda a: [jax.lax.index_in_dim(a, i, keepdims=False) for i in range(length)], [x], lifted)
        new_eqns.extend(slices_eqns)
        for i, part in enumerate(parts):
            per_step_xs[i].append(part)
    state = list(carry)
    ys_at: dict = {}
    for i in (range(length - 1, -1, -1) if reverse else range(length)):
        body_eqns, outs = rename_body(body, consts_b, constvars_b, [*consts, *state, *per_step_xs[i]], lifted)
        new_eqns.extend(body_eqns)
        state, ys_at[i] = list(outs[:n_carry]), list(outs[n_carry:])
    for out, value in zip(eqn.outvars[:n_carry], state, strict=True):
        if is_var(out) and not _is_drop(out):
            new_eqns.append(make_eqn([value], [out], P.copy_p))
    for k, out in enumerate(eqn.outvars[n_carry:]):
        if not is_var(out) or _is_drop(out):
            continue
        stack_eqns, (stacked,) = _inline_fn(lambda *ys: [jax.numpy.stack(ys)], [ys_at[i][k] for i in range(length)],
                                            lifted)
        new_eqns.extend(stack_eqns)
        new_eqns.append(make_eqn([stacked], [out], P.copy_p))
    return new_eqns


def _scan_skip_reason(eqn, policy: ControlFlowPolicy):
    length = int(eqn.params["length"])
    if eqn.effects:
        return "it has side effects"
    if _body_contains(eqn, P.while_p):
        return "its body contains a while_loop"
    if length == 0:
        return "it has no iteration"
    if length > policy.scan_unroll_limit:
        return f"its length {length} exceeds scan_unroll_limit={policy.scan_unroll_limit}"
    return None


def _sweep(eqns, policy: ControlFlowPolicy, watched: set, hidden_out: set, lifted: list):
    """One pass over the equations; returns ``(new_eqns, changed, skip_records)``."""
    derived = forward_closure(watched, eqns)
    changed = False
    skipped: list = []
    new_eqns: list = []
    for eqn in eqns:
        if eqn.primitive is P.cond_p and policy.cond == "convert":
            converted = convert_cond(eqn, lifted)
            if converted is not None:
                new_eqns.extend(converted)
                changed = True
                continue
        if eqn.primitive is P.scan_p:
            relevant = (_body_contains_etp(eqn) or any(is_var(a) and a in derived for a in eqn.invars)
                        or any(is_var(v) and v in hidden_out for v in eqn.outvars))
            if relevant:
                reason = _scan_skip_reason(eqn, policy)
                if reason is None:
                    new_eqns.extend(_unroll_scan(eqn, lifted))
                    emit(DiagnosticKind.SCAN_UNROLLED, DiagnosticLevel.INFO,
                         f"A `scan` of length {eqn.params['length']} (a scan, fori_loop or for_loop) was unrolled "
                         "into the step, so the ETP ops and hidden updates inside are analysed as ordinary ops.",
                         primitive="scan", context={"length": int(eqn.params["length"]),
                                                    "reverse": bool(eqn.params["reverse"])})
                    changed = True
                    continue
                skipped.append(dict(
                    kind=DiagnosticKind.SCAN_UNROLL_SKIPPED,
                    level=DiagnosticLevel.WARNING if _body_contains_etp(eqn) else DiagnosticLevel.INFO,
                    message=f"A `scan` of length {eqn.params['length']} was not unrolled because {reason}; it stays "
                            "one opaque equation (see primitive_inside_control_flow / weight_in_control_flow).",
                    primitive="scan", context={"length": int(eqn.params["length"]), "reason": reason}))
        new_eqns.append(eqn)
    return new_eqns, changed, skipped


def _check_while_loops(eqns, policy: ControlFlowPolicy, weight_leaves: dict, watched_hidden: set, hidden_out: set):
    crosses = lambda e: e.primitive not in CONTROL_FLOW_PRIMITIVES and not is_etp_primitive(e.primitive)  # noqa: E731
    derived = {path: forward_closure(leaves, eqns, crosses=crosses) for path, leaves in weight_leaves.items()}
    from_hidden = forward_closure(watched_hidden, eqns)
    for eqn in eqns:
        if eqn.primitive is not P.while_p:
            continue
        inputs = {a for a in eqn.invars if is_var(a)}
        weights = sorted(path for path, reach in derived.items() if reach & inputs)
        if weights:
            names = ", ".join(f"`{format_path(p)}`" for p in weights)
            emit(DiagnosticKind.WEIGHT_IN_WHILE, DiagnosticLevel.ERROR,
                 f"ParamState {names} is used inside a `while_loop`; a while loop has no reverse-mode "
                 "derivative and no static trip count, so the weight cannot be trained online.",
                 primitive="while", weight_path=weights[0], also_warn=False,
                 context={"weights": [format_path(p) for p in weights]})
            raise _errors.NotSupportedError(
                f"ParamState {names} is used inside a `while_loop` in the step; weights inside a while loop "
                "cannot be trained online. Compute the weighted term outside the loop, or use a "
                "`fori_loop`/`scan` with a static trip count (unrolled up to ControlFlowPolicy.scan_unroll_limit)."
            )
        if _body_contains_etp(eqn) and policy.etp_in_control_flow == "error":
            raise _errors.NotSupportedError(
                "A `while_loop` in the step contains an ETP op; it cannot be traced online. Move the op out of "
                "the loop, or pass ControlFlowPolicy(etp_in_control_flow='exclude') to leave it untrained."
            )
        touches_hidden = bool(inputs & from_hidden) or any(is_var(v) and v in hidden_out for v in eqn.outvars)
        if touches_hidden and policy.while_hidden == "error":
            raise _errors.NotSupportedError(
                "A `while_loop` in the step reads or writes a hidden state and "
                "ControlFlowPolicy(while_hidden='error') refuses it; use while_hidden='opaque-fwd'."
            )
        where = ("it reads or writes a hidden state, so the loop is part of that group's transition (a "
                 "transition_not_elementwise record says if its Jacobian is approximated)." if touches_hidden else
                 "its outputs enter the step as data (no eligibility trace flows through it).")
        emit(DiagnosticKind.CONTROL_FLOW_OPAQUE_FWD, DiagnosticLevel.INFO,
             f"A weight-free `while_loop` runs as opaque forward code; {where}",
             primitive="while", context={"touches_hidden": touches_hidden})


def canonicalize_control_flow(eqns, outvars, policy: ControlFlowPolicy, *, weight_leaves: dict,
                              hidden_invars, hidden_outvars):
    """Canonicalise the flat step's control flow under ``policy``.

    Parameters
    ----------
    eqns, outvars
        The flat (``jit``-inlined) equations and output atoms of the step.
    policy : ControlFlowPolicy
        What to rewrite.
    weight_leaves : dict
        ``ParamState`` path to its leaf invars.
    hidden_invars, hidden_outvars : iterable of Var
        The hidden-state input and output vars.

    Returns
    -------
    tuple
        ``(eqns, outvars, lifted)``; ``lifted`` lists ``(Var, value)`` constants to add.

    Raises
    ------
    NotSupportedError
        For a weight or ETP op inside a ``while_loop`` (see :class:`ControlFlowPolicy`).
    CompilationError
        If the rewriting does not settle within ``fixpoint_iteration_limit`` sweeps.

    Examples
    --------
    >>> import jax, jax.numpy as jnp
    >>> from braintrace.compiler.canonicalize import canonicalize_control_flow
    >>> from braintrace import ControlFlowPolicy
    >>> jx = jax.make_jaxpr(lambda h: jax.lax.fori_loop(0, 3, lambda i, v: 0.5 * v, h))(jnp.ones(2))
    >>> eqns, outs, _ = canonicalize_control_flow(list(jx.eqns), list(jx.outvars), ControlFlowPolicy(),
    ...     weight_leaves={}, hidden_invars=jx.jaxpr.invars, hidden_outvars=jx.jaxpr.outvars)
    >>> any(str(e.primitive) == 'scan' for e in eqns)
    False
    """
    lifted: list = []
    watched = {v for leaves in weight_leaves.values() for v in leaves} | set(hidden_invars)
    hidden_out = {v for v in hidden_outvars if is_var(v)}
    for _ in range(policy.fixpoint_iteration_limit):
        eqns, changed, skipped = _sweep(eqns, policy, watched, hidden_out, lifted)
        if not changed:
            for record in skipped:
                emit(**record)
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
    _check_while_loops(eqns, policy, weight_leaves, set(hidden_invars), hidden_out)
    return eqns, outvars, lifted
