# Copyright 2026 The braintrace authors. Licensed under the Apache License, Version 2.0.
"""Small pure helpers over flat jaxprs: inlining, evaluation and reachability.

All compiler passes identify values by ``Var`` identity in one flat list of equations, so
the first step inlines every ``jit`` / ``closed_call`` body (fresh variables per call
site, inner constants lifted to the outer jaxpr). Opaque calls such as ``custom_jvp_call``
stay single equations.

Primitive tables here are keyed by primitive objects from ``jax.extend.core.primitives``,
never by name.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import jax.extend.core as jex_core

from .._jax_compat import (
    DropVar,
    Jaxpr,
    JaxprEqn,
    Literal,
    Var,
    bind_equation,
    jaxpr_of_param,
    make_jaxpr_object,
    new_eqn,
    new_var,
    optional_primitives,
)
from .._jax_compat import (
    lax_primitives as P,
)

__all__ = [
    "CALL_PRIMITIVES",
    "CONTROL_FLOW_PRIMITIVES",
    "MIXING_PRIMITIVES",
    "ELEMENTWISE_PRIMITIVES",
    "STATE_AXIS_PRIMITIVES",
    "is_var",
    "is_drop_var",
    "contains_primitive",
    "inline_calls",
    "rename_body",
    "evaluate_jaxpr",
    "evaluate_flat",
    "producer_map",
    "forward_closure",
    "backward_slice",
    "jaxpr_from_slice",
    "make_eqn",
]

# Calls whose body is inlined into the flat jaxpr.
CALL_PRIMITIVES = frozenset(p for p in (P.jit_p, P.closed_call_p, P.call_p) if p is not None)

# Control flow kept as opaque equations.
CONTROL_FLOW_PRIMITIVES = frozenset((P.scan_p, P.while_p, P.cond_p))

# Plain (non-ETP) ops that mix hidden positions: on a hidden-to-hidden path they are a
# recurrent weight, so the diagonal transition treats them as a boundary.
MIXING_PRIMITIVES = frozenset((P.dot_general_p, P.conv_general_dilated_p))

# Ops that act position by position (the same position of every operand).
ELEMENTWISE_PRIMITIVES = frozenset(
    (
        P.abs_p, P.acos_p, P.acosh_p, P.add_p, P.and_p, P.asin_p, P.asinh_p, P.atan2_p,
        P.atan_p, P.atanh_p, P.cbrt_p, P.ceil_p, P.clamp_p, P.convert_element_type_p,
        P.copy_p, P.cos_p, P.cosh_p, P.div_p, P.eq_p, P.erf_inv_p, P.erf_p, P.erfc_p,
        P.exp2_p, P.exp_p, P.expm1_p, P.floor_p, P.ge_p, P.gt_p, P.integer_pow_p,
        P.is_finite_p, P.le_p, P.lgamma_p, P.digamma_p, P.log1p_p, P.log_p, P.logistic_p,
        P.lt_p, P.max_p, P.min_p, P.mul_p, P.ne_p, P.neg_p, P.not_p, P.or_p, P.pow_p,
        P.reduce_precision_p, P.rem_p, P.round_p, P.rsqrt_p, P.select_n_p, P.sign_p,
        P.sin_p, P.sinh_p, P.sqrt_p, P.square_p, P.stop_gradient_p, P.sub_p, P.tan_p,
        P.tanh_p, P.xor_p, P.nextafter_p,
        # Shape-only ops that keep positions when they add or drop unit axes or broadcast.
        P.broadcast_in_dim_p, P.squeeze_p, P.reshape_p,
    )
)

# Ops that select or assemble along the trailing state axis of a HiddenGroupState.
STATE_AXIS_PRIMITIVES = frozenset(
    (P.slice_p, P.concatenate_p, P.gather_p, P.scatter_p, P.dynamic_slice_p,
     P.dynamic_update_slice_p, P.squeeze_p, P.reshape_p, *optional_primitives("stack_p", "unstack_p"))
)


def is_var(atom) -> bool:
    return isinstance(atom, Var) and not isinstance(atom, Literal)


def is_drop_var(atom) -> bool:
    """Whether ``atom`` is an output JAX discards (printed ``_``)."""
    return isinstance(atom, DropVar)


def contains_primitive(jaxpr, predicate: Callable[[Any], bool]) -> bool:
    """Whether ``jaxpr``, or any body nested in it, has an equation whose primitive satisfies ``predicate``."""
    for eqn in jaxpr.eqns:
        if predicate(eqn.primitive):
            return True
        if any(contains_primitive(sub, predicate) for sub in jex_core.jaxprs_in_params(eqn.params)):
            return True
    return False


# --------------------------------------------------------------------------------------
# Inlining
# --------------------------------------------------------------------------------------
def _call_body(eqn: JaxprEqn):
    if eqn.primitive not in CALL_PRIMITIVES:
        return None
    for key in ("jaxpr", "call_jaxpr"):
        if key in eqn.params:
            found = jaxpr_of_param(eqn.params[key])
            if found is not None:
                return found
    return None


def rename_body(inner, consts, constvars, operands, lifted: list, keep: dict | None = None):
    """Copy a call body with fresh variables, bound to the caller's ``operands``.

    Inner constants are lifted (appended to ``lifted`` as ``(Var, value)``); ``keep`` maps
    inner output vars to outer vars to reuse instead of fresh ones. Returns
    ``(equations, outputs)``; nested calls are left for the caller to inline.
    """
    rename: dict = {}
    for cv, c in zip(constvars, consts, strict=True):
        fresh = new_var(cv.aval)
        lifted.append((fresh, c))
        rename[cv] = fresh
    invars = list(inner.invars)
    if constvars and len(invars) > len(operands):
        invars = invars[len(constvars):]
    rename.update(zip(invars, operands, strict=True))
    produced = {v for e in inner.eqns for v in e.outvars if is_var(v)}
    for inner_out, outer_out in (keep or {}).items():
        if inner_out in produced and inner_out not in rename:
            rename[inner_out] = outer_out
    eqns = []
    for eqn in inner.eqns:
        outvars = []
        for v in eqn.outvars:
            if is_var(v) and v not in rename:
                rename[v] = new_var(v.aval)
            outvars.append(rename[v] if is_var(v) else new_var(v.aval))
        invars_ = [rename.get(a, a) if is_var(a) else a for a in eqn.invars]
        eqns.append(eqn.replace(invars=invars_, outvars=outvars))
    outputs = [rename.get(a, a) if is_var(a) else a for a in inner.outvars]
    return eqns, outputs


def inline_calls(eqns: Sequence[JaxprEqn], outvars: Sequence[Any]):
    """Inline every ``jit``/``closed_call`` body, recursively.

    Returns
    -------
    eqns : list of JaxprEqn
        The flat equations.
    outvars : list
        ``outvars`` with aliases resolved (an outer var defined as a copy of another).
    lifted : list of (Var, value)
        Constants of inner bodies, to be added as constvars of the outer jaxpr.
    alias : dict
        Outer call outputs that became another var (a body returning an input, say).
    """
    alias: dict[Var, Any] = {}
    lifted: list[tuple[Var, Any]] = []
    out_eqns: list[JaxprEqn] = []

    def resolve(atom):
        while is_var(atom) and atom in alias:
            atom = alias[atom]
        return atom

    def walk(equations):
        for eqn in equations:
            invars = [resolve(a) if is_var(a) else a for a in eqn.invars]
            body = _call_body(eqn)
            if body is None:
                out_eqns.append(eqn.replace(invars=invars))
                continue
            inner, consts, constvars = body
            # Reuse the call's own output vars for the body's results where possible.
            keep = {i: o for i, o in zip(inner.outvars, eqn.outvars, strict=True)
                    if is_var(i) and is_var(o) and not is_drop_var(o)}
            body_eqns, outputs = rename_body(inner, consts, constvars, invars, lifted, keep)
            walk(body_eqns)
            for output, outer_out in zip(outputs, eqn.outvars, strict=True):
                if not is_var(outer_out) or is_drop_var(outer_out):
                    continue
                mapped = resolve(output)
                if mapped is not outer_out:
                    alias[outer_out] = mapped

    walk(eqns)
    final_outvars = [resolve(v) if is_var(v) else v for v in outvars]
    return out_eqns, final_outvars, lifted, alias


# --------------------------------------------------------------------------------------
# Evaluation
# --------------------------------------------------------------------------------------
def evaluate_jaxpr(jaxpr: Jaxpr, const_values: Sequence[Any], args: Sequence[Any], override=None) -> list:
    """Evaluate a jaxpr from values of its constvars and invars (on arrays or tracers).

    The one evaluator of the compiler: equations are bound in order in a local ``env``.
    ``override(eqn, invals, read)`` may return an equation's outputs computed another way
    (same values), or None to bind it as usual; ``read(atom)`` gives any value computed so far.
    """
    env = dict(zip(jaxpr.constvars, const_values, strict=True))
    env.update(zip(jaxpr.invars, args, strict=True))

    def read(atom):
        return atom.val if isinstance(atom, Literal) else env[atom]

    for eqn in jaxpr.eqns:
        invals = [read(a) for a in eqn.invars]
        outs = None if override is None else override(eqn, invals, read)
        if outs is None:
            outs = bind_equation(eqn, invals)
        for v, value in zip(eqn.outvars, outs, strict=True):
            if not is_drop_var(v):
                env[v] = value
    return [read(a) for a in jaxpr.outvars]


def evaluate_flat(jaxpr: Jaxpr, flat_inputs: Sequence[Any]) -> list:
    """:func:`evaluate_jaxpr` of a jaxpr with attached constants (the flat step)."""
    return evaluate_jaxpr(jaxpr, jaxpr.consts, flat_inputs)


# --------------------------------------------------------------------------------------
# Reachability
# --------------------------------------------------------------------------------------
def producer_map(eqns: Sequence[JaxprEqn]) -> dict[Var, int]:
    out = {}
    for i, eqn in enumerate(eqns):
        for v in eqn.outvars:
            if is_var(v) and not is_drop_var(v):
                out[v] = i
    return out


def forward_closure(
    start: Iterable[Var],
    eqns: Sequence[JaxprEqn],
    *,
    crosses: Callable[[JaxprEqn], bool] = lambda eqn: True,
    stop_at: frozenset | set = frozenset(),
    blocked: list | None = None,
) -> set[Var]:
    """Vars reachable from ``start`` through equations for which ``crosses(eqn)`` holds.

    Vars in ``stop_at`` are reached but not expanded. Equations that consume a reached var
    but do not cross are appended (by index) to ``blocked`` when given.
    """
    reached = set(v for v in start if is_var(v))
    frontier = set(v for v in reached if v not in stop_at)
    for i, eqn in enumerate(eqns):
        if not any(is_var(a) and a in frontier for a in eqn.invars):
            continue
        if not crosses(eqn):
            if blocked is not None:
                blocked.append(i)
            continue
        for v in eqn.outvars:
            if is_var(v) and not is_drop_var(v):
                reached.add(v)
                if v not in stop_at:
                    frontier.add(v)
    return reached


def backward_slice(
    targets: Iterable[Var],
    eqns: Sequence[JaxprEqn],
    *,
    include: Callable[[int, JaxprEqn], bool],
) -> tuple[list[int], set[Var]]:
    """Equations (indices, in order) needed for ``targets`` among those ``include`` admits.

    Returns the indices and the set of vars the slice reads but does not produce.
    """
    producers = producer_map(eqns)
    needed = [v for v in targets if is_var(v)]
    seen_vars = set(needed)
    chosen: set[int] = set()
    while needed:
        v = needed.pop()
        i = producers.get(v)
        if i is None or i in chosen or not include(i, eqns[i]):
            continue
        chosen.add(i)
        for a in eqns[i].invars:
            if is_var(a) and a not in seen_vars:
                seen_vars.add(a)
                needed.append(a)
    order = sorted(chosen)
    produced = {v for i in order for v in eqns[i].outvars if is_var(v)}
    free = {a for i in order for a in eqns[i].invars if is_var(a) and a not in produced}
    return order, free


def jaxpr_from_slice(chosen: Sequence[JaxprEqn], free, invars: Sequence[Var], outvars: Sequence[Any]):
    """An open jaxpr of the sliced equations ``chosen`` with inputs ``invars``.

    Every var they read but do not produce (``free``, from :func:`backward_slice`) becomes a
    constvar, in first-read order, unless it is an input; so does an output nobody produces
    (a new value that depends on nothing inside, whose derivative is zero).
    """
    inputs = set(invars)
    constvars, seen = [], set(inputs)
    for eqn in chosen:
        for a in eqn.invars:
            if is_var(a) and a in free and a not in seen:
                seen.add(a)
                constvars.append(a)
    produced = {v for eqn in chosen for v in eqn.outvars}
    for v in outvars:
        if is_var(v) and v not in produced and v not in seen:
            seen.add(v)
            constvars.append(v)
    return make_jaxpr_object(constvars, invars, outvars, chosen)


def make_eqn(invars, outvars, primitive, params=None) -> JaxprEqn:
    return new_eqn(invars, outvars, primitive, params or {})
