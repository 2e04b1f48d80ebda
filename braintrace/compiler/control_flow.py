# Copyright 2026 The braintrace authors. Licensed under the Apache License, Version 2.0.
"""Report trainable work hidden inside control flow.

``lax.cond``, ``lax.scan`` and ``lax.while_loop`` stay single, opaque equations in the
compiled step: the compiler does not look into their bodies. An ETP op inside one is
therefore invisible (its weight gets no eligibility trace), and a weight consumed by one
learns only from its same-step gradient. Both are reported, so that neither is mistaken for
a plain-JAX weight or silently under-trained.
"""

from __future__ import annotations

import jax.extend.core as jex_core

from ..ops.primitive import is_etp_primitive
from .diagnostics import DiagnosticKind, DiagnosticLevel, emit, format_path
from .jaxpr_tools import CONTROL_FLOW_PRIMITIVES, forward_closure, is_var
from .module_info import ModuleInfo

__all__ = ["report_control_flow"]



def _inner_etp_primitives(eqn, found: list) -> list:
    for sub in jex_core.jaxprs_in_params(eqn.params):
        for inner in sub.eqns:
            if is_etp_primitive(inner.primitive):
                found.append(str(inner.primitive))
            _inner_etp_primitives(inner, found)
    return found


def report_control_flow(minfo: ModuleInfo) -> set:
    """Emit control-flow records; return the weight paths consumed by control flow."""
    eqns = list(minfo.closed_jaxpr.eqns)
    flows = [i for i, e in enumerate(eqns) if e.primitive in CONTROL_FLOW_PRIMITIVES]
    if not flows:
        return set()
    crosses = lambda e: e.primitive not in CONTROL_FLOW_PRIMITIVES and not is_etp_primitive(e.primitive)  # noqa: E731
    derived = {path: forward_closure(leaves, eqns, crosses=crosses)
               for path, leaves in minfo.weight_path_to_invars.items()}
    consumed_by_flow: set = set()
    for i in flows:
        eqn = eqns[i]
        name = str(eqn.primitive)
        inputs = {a for a in eqn.invars if is_var(a)}
        weights = sorted(path for path, reach in derived.items() if reach & inputs)
        inner = sorted(set(_inner_etp_primitives(eqn, [])))
        if inner:
            emit(DiagnosticKind.PRIMITIVE_INSIDE_CONTROL_FLOW, DiagnosticLevel.WARNING,
                 f"`{name}` contains ETP op(s) {', '.join('`' + p + '`' for p in inner)}; the compiler does not "
                 "look inside control flow, so these ops get no eligibility trace. Move them out of the "
                 "loop or branch (unroll a short scan, or use jnp.where instead of lax.cond).",
                 primitive=name, context={"inner_primitives": inner, "weights": [format_path(p) for p in weights]})
        for path in weights:
            consumed_by_flow.add(path)
            emit(DiagnosticKind.WEIGHT_IN_CONTROL_FLOW, DiagnosticLevel.WARNING,
                 f"ParamState `{format_path(path)}` is used inside `{name}`; that use has no eligibility trace, so "
                 "this weight learns there from its same-step gradient only.",
                 primitive=name, weight_path=path)
    return consumed_by_flow
