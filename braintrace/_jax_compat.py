# Copyright 2026 The braintrace authors. Licensed under the Apache License, Version 2.0.
"""The one seam between braintrace and JAX internals.

Everything that touches ``jax._src`` or depends on how a JAX version represents jaxprs
lives here, so the rest of the package imports from ``jax``, ``jax.extend`` or this module.
Capabilities are detected, not version numbers.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax.extend.core as jex_core
from jax.extend.core import DropVar, Jaxpr, JaxprEqn, Literal, Primitive, Var, check_jaxpr
from jax.extend.core import primitives as lax_primitives
from jax.interpreters import ad, batching, mlir

__all__ = [
    "Jaxpr",
    "JaxprEqn",
    "Literal",
    "Primitive",
    "Var",
    "ad",
    "batching",
    "mlir",
    "lax_primitives",
    "new_var",
    "new_eqn",
    "make_jaxpr_object",
    "OpenJaxpr",
    "build_jaxpr",
    "bind_equation",
    "shaped_array",
    "is_not_mapped",
    "optional_primitives",
    "instantiate_zero_tangent",
    "jaxpr_of_param",
    "DropVar",
    "check_jaxpr",
]

try:  # JAX >= 0.5 exposes the abstract array type here.
    from jax.core import ShapedArray as _ShapedArray
except ImportError:  # pragma: no cover - older JAX
    from jax._src.core import ShapedArray as _ShapedArray

_CLOSED_JAXPR_IS_JAXPR = jex_core.ClosedJaxpr is jex_core.Jaxpr


def optional_primitives(*names: str) -> tuple:
    """Primitives that exist only in some JAX versions (looked up by capability)."""
    found = []
    for name in names:
        prim = getattr(lax_primitives, name, None)
        if prim is None:
            try:
                from jax._src.lax import lax as _lax_internal

                prim = getattr(_lax_internal, name, None)
            except ImportError:  # pragma: no cover
                prim = None
        if prim is not None:
            found.append(prim)
    return tuple(found)


def is_not_mapped(batch_dim) -> bool:
    """Whether a vmap batch dimension marks an unmapped operand."""
    return batch_dim is None or type(batch_dim).__name__ == "NotMapped"


def shaped_array(shape, dtype, weak_type: bool = False):
    """An abstract array value with the given shape and dtype."""
    return _ShapedArray(tuple(shape), dtype, weak_type=weak_type)


def new_var(aval) -> Var:
    """A fresh jaxpr variable of the given abstract value."""
    try:
        return Var(aval)
    except TypeError:  # pragma: no cover - JAX versions whose Var takes a suffix first
        return Var("", aval)


def new_eqn(invars, outvars, primitive, params, effects=None, source_info=None) -> JaxprEqn:
    """A new jaxpr equation."""
    effects = jex_core.no_effects if effects is None else effects
    return jex_core.new_jaxpr_eqn(list(invars), list(outvars), primitive, dict(params), effects, source_info)


def _debug_info(num_in: int, num_out: int):
    return jex_core.DebugInfo("braintrace", "compiled step", tuple(f"in{i}" for i in range(num_in)),
                              tuple(f"out{i}" for i in range(num_out)))


def build_jaxpr(constvars, consts, invars, outvars, eqns, effects=None) -> Jaxpr:
    """A JAX ``Jaxpr`` with ``consts`` attached to ``constvars`` (and proper debug info)."""
    if effects is None:
        effects = set()
        for eqn in eqns:
            effects |= set(eqn.effects)
        effects = frozenset(effects)
    debug = _debug_info(len(invars), len(outvars))
    if consts:
        return Jaxpr(list(constvars), list(invars), list(outvars), list(eqns), effects, debug, consts=list(consts))
    if constvars:
        raise ValueError("constvars need attached constant values; use OpenJaxpr for run-time constants.")
    return Jaxpr([], list(invars), list(outvars), list(eqns), effects, debug)


class OpenJaxpr:
    """A jaxpr whose constvars are bound at run time (no attached constant values).

    JAX >= 0.11 merged ``ClosedJaxpr`` into ``Jaxpr`` and treats constvars without attached
    values as leading invars, which loses the split. This container keeps it explicit and
    converts to a JAX ``Jaxpr`` (constvars first) for printing and checking.
    """

    __slots__ = ("constvars", "invars", "outvars", "eqns", "effects")

    def __init__(self, constvars, invars, outvars, eqns, effects=frozenset()):
        self.constvars = list(constvars)
        self.invars = list(invars)
        self.outvars = list(outvars)
        self.eqns = list(eqns)
        self.effects = effects

    def to_jax(self) -> Jaxpr:
        """A JAX ``Jaxpr`` with inputs ``constvars + invars``."""
        return build_jaxpr([], [], self.constvars + self.invars, self.outvars, self.eqns, self.effects)

    def __str__(self) -> str:
        return str(self.to_jax())

    def __repr__(self) -> str:
        return (f"OpenJaxpr(constvars={len(self.constvars)}, invars={len(self.invars)}, "
                f"outvars={len(self.outvars)}, eqns={len(self.eqns)})")


def make_jaxpr_object(constvars: Sequence[Var], invars: Sequence[Var], outvars, eqns) -> OpenJaxpr:
    """An open jaxpr whose constvars are supplied when it is evaluated."""
    effects = set()
    for eqn in eqns:
        effects |= set(eqn.effects)
    return OpenJaxpr(constvars, invars, outvars, eqns, frozenset(effects))


def jaxpr_of_param(value):
    """Return ``(jaxpr, consts, constvars)`` for an equation parameter holding a (closed) jaxpr.

    ``constvars`` are the leading variables bound to ``consts`` (empty when the jaxpr has
    no attached constants). Returns ``None`` for parameters that are not jaxprs.
    """
    if isinstance(value, Jaxpr) or (not _CLOSED_JAXPR_IS_JAXPR and isinstance(value, jex_core.ClosedJaxpr)):
        if _CLOSED_JAXPR_IS_JAXPR:
            consts = list(value.consts)
            constvars = list(value.constvars) if consts else []
            return value, consts, constvars
        return value.jaxpr, list(value.consts), list(value.jaxpr.constvars)  # pragma: no cover
    return None


def bind_equation(eqn: JaxprEqn, invals: Sequence[Any]) -> list:
    """Evaluate one equation on concrete values or tracers; always returns a list."""
    bound = eqn.primitive.get_bind_params(eqn.params)
    if isinstance(bound, tuple) and len(bound) == 2 and isinstance(bound[1], dict):
        subfuns, bind_params = bound  # JAX < 0.12 returns (subfuns, params)
    else:
        subfuns, bind_params = (), bound
    with eqn.ctx.manager:
        out = eqn.primitive.bind(*subfuns, *invals, **bind_params)
    return list(out) if eqn.primitive.multiple_results else [out]


def instantiate_zero_tangent(tangent, primal):
    """Replace a symbolic-zero tangent by a dense zero array shaped like ``primal``."""
    if type(tangent) is ad.Zero:
        return ad.instantiate_zeros(tangent)
    return tangent

