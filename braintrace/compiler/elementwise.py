# Copyright 2026 The braintrace authors. Licensed under the Apache License, Version 2.0.
"""Which equations act position by position.

The diagonal trace algorithms are exact when the hidden-to-hidden transition and the
op-to-hidden tails act element-wise (position ``p`` of the output depends only on position
``p`` of the inputs). This module checks that structurally with a table keyed by primitive
object; calls with bodies (``custom_jvp_call``, ``custom_vjp_call``) are checked inside.
"""

from __future__ import annotations

from collections.abc import Iterable

from .._jax_compat import JaxprEqn, jaxpr_of_param
from .._jax_compat import lax_primitives as P
from .jaxpr_tools import ELEMENTWISE_PRIMITIVES, STATE_AXIS_PRIMITIVES

__all__ = ["non_elementwise_equations"]

_CALLS_WITH_BODY = frozenset(p for p in (P.custom_jvp_call_p, P.custom_vjp_call_p) if p is not None)
_BODY_KEYS = ("call_jaxpr", "fun_jaxpr", "jaxpr")


def _reshape_keeps_positions(eqn: JaxprEqn) -> bool:
    in_shape = tuple(eqn.invars[0].aval.shape)
    out_shape = tuple(eqn.outvars[0].aval.shape)
    return [d for d in in_shape if d != 1] == [d for d in out_shape if d != 1]


def _is_elementwise(eqn: JaxprEqn, allow_state_axis: bool) -> bool:
    prim = eqn.primitive
    if prim is P.reshape_p and not _reshape_keeps_positions(eqn):
        return allow_state_axis
    if prim in ELEMENTWISE_PRIMITIVES:
        return True
    if prim in _CALLS_WITH_BODY:
        for key in _BODY_KEYS:
            if key in eqn.params:
                found = jaxpr_of_param(eqn.params[key])
                if found is not None:
                    return not non_elementwise_equations(found[0].eqns, allow_state_axis)
        return False
    if allow_state_axis and prim in STATE_AXIS_PRIMITIVES:
        return True
    try:
        from ..ops.primitive import etp_rule_of, is_etp_primitive

        if is_etp_primitive(prim) and etp_rule_of(prim).gradient_enabled:
            return True
    except ImportError:  # pragma: no cover
        pass
    return False


def non_elementwise_equations(eqns: Iterable[JaxprEqn], allow_state_axis: bool = False) -> list[JaxprEqn]:
    """The equations of ``eqns`` that are not known to act position by position.

    ``allow_state_axis`` admits slicing and assembling ops, used by ``HiddenGroupState``
    members to address their trailing state axis.
    """
    return [e for e in eqns if not _is_elementwise(e, allow_state_axis)]
