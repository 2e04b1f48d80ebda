# Copyright 2026 The braintrace authors. Licensed under the Apache License, Version 2.0.
"""If-conversion of ``lax.cond``: make trainable work inside a branch visible.

A ``cond`` equation whose branches contain an ETP op is replaced by the inlined bodies of
*all* branches (fresh variables) followed by one ``select_n(index, branch outputs...)`` per
output. Values and forward derivatives are unchanged; both branches now run every step, so
the compiler sees the ETP ops and their weights get eligibility traces (the select is
element-wise, so D-RTRL stays exact through it). Branches with side effects are left as
they are (and reported by :mod:`braintrace.compiler.control_flow`).

Caveat, as for any ``jnp.where``: reverse mode multiplies the dead branch's cotangent by
zero, which gives NaN if that branch's derivative is infinite or NaN.
"""

from __future__ import annotations

from .._jax_compat import jaxpr_of_param, new_var
from .._jax_compat import lax_primitives as P
from ..ops.primitive import is_etp_primitive
from .diagnostics import DiagnosticKind, DiagnosticLevel, emit
from .jaxpr_tools import inline_calls, is_var, make_eqn, rename_body

__all__ = ["contains_etp", "convert_cond", "if_convert_conds"]


def _contains_etp(jaxpr) -> bool:
    import jax.extend.core as jex_core

    for eqn in jaxpr.eqns:
        if is_etp_primitive(eqn.primitive):
            return True
        if any(_contains_etp(sub) for sub in jex_core.jaxprs_in_params(eqn.params)):
            return True
    return False


def contains_etp(jaxpr) -> bool:
    """Whether ``jaxpr`` (or any body nested in it) contains an ETP primitive."""
    return _contains_etp(jaxpr)


def convert_cond(eqn, lifted: list):
    """The if-converted equations replacing one ETP-carrying, effect-free ``cond``, or None.

    The branch bodies are inlined with fresh variables (constants appended to ``lifted``)
    and one ``select_n`` per output writes the original output var.
    """
    branches = eqn.params.get("branches") if eqn.primitive is P.cond_p else None
    if branches is None or eqn.effects or not any(_contains_etp(jaxpr_of_param(b)[0]) for b in branches):
        return None
    index, operands = eqn.invars[0], eqn.invars[1:]
    new_eqns, results = [], []
    for branch in branches:
        branch_eqns, outputs = rename_body(*jaxpr_of_param(branch), operands, lifted)
        new_eqns.extend(branch_eqns)
        results.append(outputs)
    for k, out in enumerate(eqn.outvars):
        target = out if is_var(out) and type(out).__name__ != "DropVar" else new_var(out.aval)
        new_eqns.append(make_eqn([index, *[r[k] for r in results]], [target], P.select_n_p))
    emit(DiagnosticKind.COND_IF_CONVERTED, DiagnosticLevel.INFO,
         f"A `cond` with {len(branches)} branches contains ETP ops; it was replaced by all branches "
         "and a select, so those ops are trained online (both branches now run every step).",
         primitive="cond", context={"branches": len(branches), "outputs": len(eqn.outvars)})
    return new_eqns


def if_convert_conds(eqns, outvars):
    """Rewrite every ETP-carrying, effect-free ``cond`` until none is left.

    Returns ``(eqns, outvars, lifted_constants)``; the equations are re-inlined, since
    branches may contain ``jit`` calls.
    """
    lifted: list = []
    for _ in range(64):  # nested conds surface one level per sweep
        changed = False
        new_eqns = []
        for eqn in eqns:
            converted = convert_cond(eqn, lifted)
            if converted is None:
                new_eqns.append(eqn)
            else:
                new_eqns.extend(converted)
                changed = True
        eqns = new_eqns
        if not changed:
            break
        eqns, outvars, more, _ = inline_calls(eqns, outvars)
        lifted.extend(more)
    return eqns, outvars, lifted
