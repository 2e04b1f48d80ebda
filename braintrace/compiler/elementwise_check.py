# Copyright 2026 The braintrace authors. Licensed under the Apache License, Version 2.0.
"""Which equations act position by position.

The diagonal trace algorithms are exact when the hidden-to-hidden transition and the
op-to-hidden tails act element-wise (position ``p`` of the output depends only on position
``p`` of the inputs). This module checks that structurally with a table keyed by primitive
object; calls with bodies (``custom_jvp_call``, ``custom_vjp_call``) are checked inside.

Besides JAX's own element-wise primitives, the table knows the primitives that the BrainX
libraries emit inside neuron code: the spike function of every ``braintools.surrogate``
surrogate (a Heaviside step in the forward pass whose JVP multiplies the tangent by the
surrogate derivative at the same position). Those primitive objects are found by tracing
the library's public API the first time a model is checked after the library was imported;
a library that was never imported cannot appear in a model, so nothing is imported here.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable

import jax
import jax.numpy as jnp

from .._jax_compat import JaxprEqn, Literal, jaxpr_of_param
from .._jax_compat import lax_primitives as P
from ..ops.primitive import etp_rule_of, is_etp_primitive
from .jaxpr_tools import CALL_PRIMITIVES, ELEMENTWISE_PRIMITIVES, STATE_AXIS_PRIMITIVES

__all__ = ["library_elementwise_primitives", "non_elementwise_equations"]

_CALLS_WITH_BODY = frozenset(p for p in (P.custom_jvp_call_p, P.custom_vjp_call_p) if p is not None)
_BODY_KEYS = ("call_jaxpr", "fun_jaxpr", "jaxpr")


def _braintools_spike_primitives() -> frozenset:
    """The primitive that produces the output of a ``braintools.surrogate`` spike function."""
    surrogate = sys.modules["braintools.surrogate"]
    closed = jax.make_jaxpr(surrogate.Sigmoid())(jnp.zeros((2,), dtype=jnp.float32))
    (out,) = closed.jaxpr.outvars
    producers = [e.primitive for e in closed.jaxpr.eqns if out in e.outvars]
    known = ELEMENTWISE_PRIMITIVES | CALL_PRIMITIVES | _CALLS_WITH_BODY
    return frozenset(p for p in producers if p not in known)


# (module that must already be imported, function returning its element-wise primitives)
_LIBRARY_PROVIDERS: tuple[tuple[str, Callable[[], frozenset]], ...] = (
    ("braintools.surrogate", _braintools_spike_primitives),
)
_library_found: dict[str, frozenset] = {}


def library_elementwise_primitives() -> frozenset:
    """Element-wise primitives defined by already imported BrainX libraries.

    Returns
    -------
    frozenset
        Primitive objects (for example braintools' ``heaviside_surrogate_gradient``); empty
        when none of the libraries has been imported yet.

    Examples
    --------
    >>> import braintools
    >>> from braintrace.compiler.elementwise_check import library_elementwise_primitives
    >>> sorted(p.name for p in library_elementwise_primitives())
    ['heaviside_surrogate_gradient']
    """
    for module, provider in _LIBRARY_PROVIDERS:
        if module not in _library_found and module in sys.modules:
            _library_found[module] = provider()
    return frozenset().union(*_library_found.values())


def _reshape_keeps_positions(eqn: JaxprEqn) -> bool:
    in_shape = tuple(eqn.invars[0].aval.shape)
    out_shape = tuple(eqn.outvars[0].aval.shape)
    return [d for d in in_shape if d != 1] == [d for d in out_shape if d != 1]


def _scan_is_elementwise(eqn: JaxprEqn, allow_state_axis: bool) -> bool:
    """A scan acts position by position when its body does and every scanned input is sliced
    into rows aligned with a carry (or is integer data, such as a loop index)."""
    from .control_flow_rewrites import split_scan_operands

    from .jaxpr_tools import forward_closure

    body = jaxpr_of_param(eqn.params["jaxpr"])[0]
    _, carry, xs = split_scan_operands(eqn)
    # Only the body equations downstream of the carry decide how positions flow through it.
    n_consts = len(body.invars) - len(carry) - len(xs)
    from_carry = forward_closure(body.invars[n_consts:n_consts + len(carry)], body.eqns)
    on_path = [e for e in body.eqns if any(a in from_carry for a in e.invars if not isinstance(a, Literal))]
    if non_elementwise_equations(on_path, allow_state_axis):
        return False
    carry_shapes = {tuple(c.aval.shape) for c in carry if c.aval.shape}
    for x in xs:
        row = tuple(x.aval.shape[1:])
        if jnp.issubdtype(x.aval.dtype, jnp.floating) and row not in carry_shapes:
            return False
    return True


def _is_elementwise(eqn: JaxprEqn, allow_state_axis: bool, library: frozenset) -> bool:
    prim = eqn.primitive
    if prim is P.scan_p:
        return _scan_is_elementwise(eqn, allow_state_axis)
    if prim is P.reshape_p and not _reshape_keeps_positions(eqn):
        return allow_state_axis
    if prim in ELEMENTWISE_PRIMITIVES or prim in library:
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
    return is_etp_primitive(prim) and etp_rule_of(prim).gradient_enabled


def non_elementwise_equations(eqns: Iterable[JaxprEqn], allow_state_axis: bool = False) -> list[JaxprEqn]:
    """The equations of ``eqns`` that are not known to act position by position.

    ``allow_state_axis`` admits slicing and assembling ops, used by ``HiddenGroupState``
    members to address their trailing state axis.
    """
    library = library_elementwise_primitives()
    return [e for e in eqns if not _is_elementwise(e, allow_state_axis, library)]
