# Copyright 2026 The braintrace authors. Licensed under the Apache License, Version 2.0.
"""Checks and reports of the control flow that canonicalisation left in the step.

``lax.cond``, ``lax.scan`` and ``lax.while_loop`` equations that were not rewritten (nor
descended, see :mod:`~braintrace.compiler.scan_descent`) stay single, opaque equations: the
compiler does not look into their bodies. An ETP op inside
one is therefore invisible (its weight gets no eligibility trace), and a weight consumed by
one learns only from its same-step gradient. :func:`report_control_flow` reports both, so
that neither is mistaken for a plain-JAX weight or silently under-trained.
:func:`check_while_loops` refuses what cannot be trained at all (a weight or an ETP op
inside a ``while_loop``) and records how a weight-free loop is run.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import jax.extend.core as jex_core

from .. import _errors
from .._jax_compat import Var
from .._jax_compat import lax_primitives as P
from ..ops.primitive import is_etp_primitive
from .control_flow_policy import ControlFlowPolicy
from .diagnostics import DiagnosticKind, DiagnosticLevel, PassResult, format_path, new_record
from .jaxpr_tools import CONTROL_FLOW_PRIMITIVES, contains_primitive, forward_closure, is_var

__all__ = ["check_while_loops", "report_control_flow"]

Path = tuple[str, ...]


def _crosses_plain(eqn) -> bool:
    return eqn.primitive not in CONTROL_FLOW_PRIMITIVES and not is_etp_primitive(eqn.primitive)


def _inner_etp_primitives(eqn, found: list) -> list:
    for sub in jex_core.jaxprs_in_params(eqn.params):
        for inner in sub.eqns:
            if is_etp_primitive(inner.primitive):
                found.append(str(inner.primitive))
            _inner_etp_primitives(inner, found)
    return found


def _body_contains_etp(eqn) -> bool:
    return any(contains_primitive(sub, is_etp_primitive) for sub in jex_core.jaxprs_in_params(eqn.params))


def report_control_flow(eqns: Sequence, weight_path_to_invars: Mapping[Path, Sequence[Var]]) -> PassResult[set]:
    """Report ETP ops and weights inside opaque control flow.

    Returns the weight paths consumed by control flow, with ``primitive_inside_control_flow``
    and ``weight_in_control_flow`` records.
    """
    eqns = list(eqns)
    flows = [e for e in eqns if e.primitive in CONTROL_FLOW_PRIMITIVES]
    if not flows:
        return PassResult(set())
    derived = {path: forward_closure(leaves, eqns, crosses=_crosses_plain)
               for path, leaves in weight_path_to_invars.items()}
    consumed_by_flow: set = set()
    records: list = []
    for eqn in flows:
        name = str(eqn.primitive)
        inputs = {a for a in eqn.invars if is_var(a)}
        weights = sorted(path for path, reach in derived.items() if reach & inputs)
        inner = sorted(set(_inner_etp_primitives(eqn, [])))
        if inner:
            records.append(new_record(
                DiagnosticKind.PRIMITIVE_INSIDE_CONTROL_FLOW, DiagnosticLevel.WARNING,
                f"`{name}` contains ETP op(s) {', '.join('`' + p + '`' for p in inner)}; the compiler does not "
                "look inside control flow, so these ops get no eligibility trace. Move them out of the "
                "loop or branch (unroll a short scan, or use jnp.where instead of lax.cond).",
                primitive=name, context={"inner_primitives": inner, "weights": [format_path(p) for p in weights]}))
        for path in weights:
            consumed_by_flow.add(path)
            records.append(new_record(
                DiagnosticKind.WEIGHT_IN_CONTROL_FLOW, DiagnosticLevel.WARNING,
                f"ParamState `{format_path(path)}` is used inside `{name}`; that use has no eligibility trace, so "
                "this weight learns there from its same-step gradient only.",
                primitive=name, weight_path=path))
    return PassResult(consumed_by_flow, tuple(records))


def _refuse_weights_in_while(weights: list[Path]):
    names = ", ".join(f"`{format_path(p)}`" for p in weights)
    error = _errors.NotSupportedError(
        f"ParamState {names} is used inside a `while_loop` in the step; weights inside a while loop "
        "cannot be trained online. Compute the weighted term outside the loop, or use a "
        "`fori_loop`/`scan` with a static trip count (unrolled up to ControlFlowPolicy.scan_unroll_limit)."
    )
    error.record = new_record(
        DiagnosticKind.WEIGHT_IN_WHILE, DiagnosticLevel.ERROR,
        f"ParamState {names} is used inside a `while_loop`; a while loop has no reverse-mode "
        "derivative and no static trip count, so the weight cannot be trained online.",
        primitive="while", weight_path=weights[0], context={"weights": [format_path(p) for p in weights]})
    return error


def check_while_loops(eqns: Sequence, policy: ControlFlowPolicy, *,
                      weight_path_to_invars: Mapping[Path, Sequence[Var]],
                      hidden_invars: Sequence[Var], hidden_outvars: Sequence[Var]) -> PassResult[None]:
    """Refuse untrainable ``while_loop`` uses; record how the others run.

    Raises
    ------
    NotSupportedError
        For a weight inside a ``while_loop`` (its ``record`` is the ``weight_in_while``
        record), an ETP op inside one under ``etp_in_control_flow='error'``, or a loop on a
        hidden state under ``while_hidden='error'``.
    """
    eqns = list(eqns)
    derived = {path: forward_closure(leaves, eqns, crosses=_crosses_plain)
               for path, leaves in weight_path_to_invars.items()}
    from_hidden = forward_closure(hidden_invars, eqns)
    hidden_out = {v for v in hidden_outvars if is_var(v)}
    records: list = []
    for eqn in eqns:
        if eqn.primitive is not P.while_p:
            continue
        inputs = {a for a in eqn.invars if is_var(a)}
        weights = sorted(path for path, reach in derived.items() if reach & inputs)
        if weights:
            raise _refuse_weights_in_while(weights)
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
        records.append(new_record(
            DiagnosticKind.CONTROL_FLOW_OPAQUE_FWD, DiagnosticLevel.INFO,
            f"A weight-free `while_loop` runs as opaque forward code; {where}",
            primitive="while", context={"touches_hidden": touches_hidden}))
    return PassResult(None, tuple(records))
