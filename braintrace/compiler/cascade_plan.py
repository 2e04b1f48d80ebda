# Copyright 2026 The braintrace authors. Licensed under the Apache License, Version 2.0.
"""Cascade plans: where a weight's trace is carried on into a downstream group with memory.

A relation ``r`` traced in group ``u`` whose new value reaches, in the same step, the new
value of another group ``d`` that carries memory (a leaky readout, a stacked leaky layer)
loses the path ``θ_r → h^u_t → h^d_t → h^d_{t+1} ...`` (``cross_group_coupling_dropped``).
A *cascade trace* ``ε^{d←r} = ∂h^d/∂θ_r`` carries it (see
:mod:`braintrace.algorithms.cascade`). It is exact, and planned, only when

* ``r`` is an op of the step (not inside a descended scan) with the standard trace layout
  (no ``param_trace_roll``), and both groups are in the diagonal scope (no SnAp);
* ``d``'s old value reaches its new value through element-wise equations only (no ETP op,
  ``dot_general`` or ``conv`` on that path), so ``d``'s diagonal Jacobian is its exact one;
* ``d`` reads ``u`` through ``u``'s *new* value only (not its old one), and through no third
  group;
* one level: ``d`` reaches no other group with memory (also not ``u``);
* ``d`` has at most ``max_elements`` elements (per batch row when the leading axis is a
  shared batch axis: both groups have it and every equation from ``u``'s new value to
  ``d``'s keeps leading positions apart, so the same-step Jacobian is block-diagonal).

Everything else keeps ``cross_group_coupling_dropped``.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from .._jax_compat import lax_primitives as P
from ..ops.primitive import etp_rule_of
from .diagnostics import DiagnosticKind, DiagnosticLevel, PassResult, format_path, new_record
from .elementwise_check import non_elementwise_equations
from ..ops.primitive import is_etp_primitive
from .jaxpr_tools import MIXING_PRIMITIVES, backward_slice, forward_closure, is_var
from .snap_pattern import _mixes_last_axis_only

__all__ = ["CascadePlan", "DEFAULT_CASCADE_MAX_ELEMENTS", "plan_cascades"]

#: The learners' default bound on the elements of a downstream group (per batch row).
DEFAULT_CASCADE_MAX_ELEMENTS = 64


class CascadePlan(NamedTuple):
    """One cascade trace: relation ``relation`` traced in group ``upstream`` into ``downstream``.

    Attributes
    ----------
    relation : int
        Index in ``graph.hidden_param_op_relations``.
    upstream, downstream : int
        Group indices ``u`` and ``d``.
    batch_axis : bool
        The leading axis of both groups is a shared batch axis (the same-step Jacobian is
        block-diagonal over it); the cascade trace's last axis then runs over one row of ``d``.
    num_elements : int
        ``N_d``, the length of the cascade trace's last axis (``d``'s stacked elements, per
        batch row when ``batch_axis``).

    Examples
    --------
    >>> from braintrace.compiler.cascade_plan import CascadePlan
    >>> CascadePlan(relation=0, upstream=0, downstream=1, batch_axis=False, num_elements=2).num_elements
    2
    """

    relation: int
    upstream: int
    downstream: int
    batch_axis: bool
    num_elements: int


def _not_stop_gradient(eqn) -> bool:
    return eqn.primitive is not P.stop_gradient_p


def _path_eqns(eqns, sources, targets) -> list:
    """Equations on some path from ``sources`` to ``targets`` (not through stop_gradient)."""
    reached = forward_closure(sources, eqns, crosses=_not_stop_gradient)
    order, _ = backward_slice(targets, eqns, include=lambda i, e: _not_stop_gradient(e))
    return [eqns[i] for i in order if any(is_var(a) and a in reached for a in eqns[i].invars)]


def _downstream_is_element_wise(d, eqns) -> bool:
    """``d``'s old value reaches its new one through element-wise, boundary-free equations only."""
    if not d.is_diagonal_recurrence or d.snap is not None:
        return False
    path = _path_eqns(eqns, d.hidden_invars, d.hidden_outvars)
    if any(is_etp_primitive(e.primitive) or e.primitive in MIXING_PRIMITIVES for e in path):
        return False
    return not non_elementwise_equations(path, allow_state_axis=any(n > 1 for n in d.num_states))


def _shares_batch_axis(u, d, eqns) -> bool:
    if len(u.varshape) < 2 or len(d.varshape) < 2 or u.varshape[0] != d.varshape[0]:
        return False
    path = _path_eqns(eqns, u.hidden_outvars, d.hidden_outvars)
    return all(_mixes_last_axis_only(e) for e in non_elementwise_equations(path, allow_state_axis=True))


def _refusal(rel, u, d, eqns, groups, reads_old, reaches) -> str | None:
    """Why the pair ``(u, d)`` of relation ``rel`` gets no cascade (None: it does)."""
    if rel.control_flow_context is not None:
        return "the op is inside a descended scan"
    if etp_rule_of(rel.primitive).param_trace_roll is not None:
        return "the op keeps its own trace layout"
    if not u.is_diagonal_recurrence or u.snap is not None:
        return "the upstream group is not in the diagonal scope"
    if not _downstream_is_element_wise(d, eqns):
        return "the downstream group's recurrence is not element-wise"
    old_reach = forward_closure(u.hidden_invars, eqns, crosses=_not_stop_gradient, stop_at=set(u.hidden_outvars))
    if set(d.hidden_outvars) & (old_reach - set(u.hidden_outvars)):
        return "the downstream group reads the upstream group's old value"
    for e in groups:
        if e.index in (u.index, d.index):
            continue
        if set(e.hidden_outvars) & reaches[u.index] and set(d.hidden_outvars) & reaches[e.index]:
            return f"the coupling passes through group {e.index}"
    for e in groups:
        if e.index != d.index and reads_old[e.index] and set(e.hidden_outvars) & reaches[d.index]:
            return f"the downstream group feeds group {e.index}, which carries memory (more than one level)"
    return None


def _record(rel, u, d, plan, wpath):
    return new_record(
        DiagnosticKind.CROSS_GROUP_CASCADE, DiagnosticLevel.INFO,
        f"`{format_path(wpath)}` is traced through hidden group {u.index} "
        f"({', '.join('`' + format_path(p) + '`' for p in u.hidden_paths)}), which feeds hidden group "
        f"{d.index} ({', '.join('`' + format_path(p) + '`' for p in d.hidden_paths)}) with memory; a cascade "
        f"trace of {plan.num_elements} element(s) per trace entry carries the weight's influence through "
        f"group {d.index} at later steps (D-RTRL).",
        primitive=str(rel.primitive), weight_path=wpath, hidden_paths=tuple(u.hidden_paths) + tuple(d.hidden_paths),
        context={"group": u.index, "downstream_group": d.index, "num_elements": plan.num_elements,
                 "batch_axis": plan.batch_axis})


def plan_cascades(minfo, relations, hid_path_to_group, max_elements: int) -> PassResult:
    """The :class:`CascadePlan` of every coupling a cascade trace can carry exactly.

    ``max_elements <= 0`` plans none. Records ``cross_group_cascade`` (INFO) per weight
    and planned pair; the pairs left out keep ``cross_group_coupling_dropped``.
    """
    groups = list({id(g): g for g in hid_path_to_group.values()}.values())
    if max_elements <= 0 or len(groups) < 2:
        return PassResult((), ())
    eqns = list(minfo.closed_jaxpr.eqns)
    all_outvars = set(v for v in minfo.closed_jaxpr.outvars if is_var(v))
    reads_old, reaches = {}, {}
    for g in groups:
        closure = forward_closure(g.hidden_invars, eqns, crosses=_not_stop_gradient)
        reads_old[g.index] = bool((closure - set(g.hidden_invars)) & all_outvars)
        reaches[g.index] = forward_closure(list(g.hidden_invars) + list(g.hidden_outvars), eqns,
                                           crosses=_not_stop_gradient)
    plans, records = [], []
    for r, rel in enumerate(relations):
        own = {g.index for g in rel.hidden_groups}
        for u in rel.hidden_groups:
            for d in groups:
                if d.index in own or not reads_old[d.index] or not set(d.hidden_outvars) & reaches[u.index]:
                    continue
                if _refusal(rel, u, d, eqns, groups, reads_old, reaches) is not None:
                    continue
                batch = _shares_batch_axis(u, d, eqns)
                shape = tuple(d.varshape[1:] if batch else d.varshape) + (d.num_state,)
                size = int(np.prod(shape, dtype=np.int64))
                if size > max_elements:
                    continue
                plan = CascadePlan(r, u.index, d.index, batch, size)
                plans.append(plan)
                records.extend(_record(rel, u, d, plan, w) for w in dict.fromkeys(rel.trainable_paths.values()))
    return PassResult(tuple(plans), tuple(records))
