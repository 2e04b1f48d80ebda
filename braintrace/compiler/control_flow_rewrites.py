# Copyright 2026 The braintrace authors. Licensed under the Apache License, Version 2.0.
"""Equation rewrites that remove control flow: ``cond`` if-conversion and ``scan`` unrolling.

Each rewrite replaces one equation by equivalent straight-line equations (fresh
variables; inner constants appended to the caller's ``lifted`` list as ``(Var, value)``)
that write the original output vars, so the rest of the step is untouched. Values and
forward derivatives are unchanged. :mod:`braintrace.compiler.canonicalize` decides where
to apply them.

* :func:`if_convert_cond` replaces a ``cond`` by the inlined bodies of *all* branches and
  one ``select_n(index, branch outputs...)`` per output; both branches now run every step,
  so the compiler sees the ETP ops inside (the select is element-wise, so D-RTRL stays exact
  through it). Caveat, as for any ``jnp.where``: reverse mode multiplies the dead branch's
  cotangent by zero, which gives NaN if that branch's derivative is infinite or NaN.
* :func:`unroll_scan` replaces a ``scan`` of static length by one body copy per iteration,
  ``xs`` sliced, carries threaded and ``ys`` restacked.
"""

from __future__ import annotations

import jax

from .._jax_compat import jaxpr_of_param, new_var
from .._jax_compat import lax_primitives as P
from ..ops.primitive import is_etp_primitive
from .jaxpr_tools import contains_primitive, is_drop_var, is_var, make_eqn, rename_body

__all__ = ["contains_etp", "if_convert_cond", "unroll_scan"]


def contains_etp(jaxpr) -> bool:
    """Whether ``jaxpr`` (or any body nested in it) contains an ETP primitive."""
    return contains_primitive(jaxpr, is_etp_primitive)


def if_convert_cond(eqn, lifted: list) -> list | None:
    """The equations replacing one effect-free ``cond`` whose branches contain ETP ops, or None.

    Examples
    --------
    >>> import jax, jax.numpy as jnp, braintrace
    >>> from braintrace.compiler.control_flow_rewrites import if_convert_cond
    >>> f = lambda i, x, w: jax.lax.cond(i > 0, lambda: braintrace.matmul(x, w), lambda: jnp.zeros(2))
    >>> (eqn,) = [e for e in jax.make_jaxpr(f)(1, jnp.ones(3), jnp.ones((3, 2))).eqns if str(e.primitive) == 'cond']
    >>> [str(e.primitive) for e in if_convert_cond(eqn, [])][-1]
    'select_n'
    """
    branches = eqn.params.get("branches") if eqn.primitive is P.cond_p else None
    if branches is None or eqn.effects or not any(contains_etp(jaxpr_of_param(b)[0]) for b in branches):
        return None
    index, operands = eqn.invars[0], eqn.invars[1:]
    new_eqns, results = [], []
    for branch in branches:
        branch_eqns, outputs = rename_body(*jaxpr_of_param(branch), operands, lifted)
        new_eqns.extend(branch_eqns)
        results.append(outputs)
    for k, out in enumerate(eqn.outvars):
        target = out if is_var(out) and not is_drop_var(out) else new_var(out.aval)
        new_eqns.append(make_eqn([index, *[r[k] for r in results]], [target], P.select_n_p))
    return new_eqns


def split_scan_operands(eqn) -> tuple[list, list, list]:
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
    inner, consts, constvars = jaxpr_of_param(jax.make_jaxpr(fn)(*avals))
    return rename_body(inner, consts, constvars, list(operands), lifted)


def unroll_scan(eqn, lifted: list) -> list:
    """The equations replacing one ``scan`` of static ``length``: one body copy per iteration.

    Examples
    --------
    >>> import jax, jax.numpy as jnp
    >>> from braintrace.compiler.control_flow_rewrites import unroll_scan
    >>> closed = jax.make_jaxpr(lambda h: jax.lax.fori_loop(0, 3, lambda i, v: 0.5 * v, h))(jnp.ones(2))
    >>> (eqn,) = closed.eqns
    >>> sorted({str(e.primitive) for e in unroll_scan(eqn, [])})
    ['add', 'copy', 'mul']
    """
    body, consts_b, constvars_b = jaxpr_of_param(eqn.params["jaxpr"])
    consts, carry, xs = split_scan_operands(eqn)
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
        if is_var(out) and not is_drop_var(out):
            new_eqns.append(make_eqn([value], [out], P.copy_p))
    for k, out in enumerate(eqn.outvars[n_carry:]):
        if not is_var(out) or is_drop_var(out):
            continue
        stack_eqns, (stacked,) = _inline_fn(lambda *ys: [jax.numpy.stack(ys)], [ys_at[i][k] for i in range(length)],
                                            lifted)
        new_eqns.extend(stack_eqns)
        new_eqns.append(make_eqn([stacked], [out], P.copy_p))
    return new_eqns
