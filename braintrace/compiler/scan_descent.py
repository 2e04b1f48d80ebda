# Copyright 2026 The braintrace authors. Licensed under the Apache License, Version 2.0.
"""Structured descent into long ``scan`` loops: ETP ops inside the body become relations.

A ``scan`` (also ``fori_loop`` and ``brainstate.transform.for_loop``) longer than
``ControlFlowPolicy.scan_unroll_limit`` stays one equation of the step. When its body holds
ETP ops, this pass (under ``scan_descent='auto'``) relates each such op to the hidden groups
its output reaches through the scan's carry, without unrolling the loop:

* the *descended state* is the set of float carry components the op output reaches, closed
  under the body's element-wise carry-to-carry paths (an integer loop counter is not part of
  it). Its per-substep Jacobian ``D_τ`` comes from the body's *transition* (the body
  equations between old and new descended carries, ETP ops and plain matmuls being
  boundaries, as for :mod:`~braintrace.compiler.hidden_groups`);
* the op's *body tail* maps its output ``y_τ`` to the new descended carry
  (``df_τ = ∂c_τ/∂y_τ``);
* the *exit* jaxpr of each reached group maps the scan's final descended carry to the
  group's new hidden values (``∂h_t/∂c_L``).

At run time (:mod:`braintrace.algorithms.scan_descent`) the trace increment of the step is
folded over the substeps, ``e ← D_τ e + df_τ ⊗ x_τ`` from ``e = 0``, inside a ``lax.scan``
that re-runs the body, and mapped out through the exit Jacobian. By linearity this equals
the D-RTRL recursion through the whole step when every path is element-wise; compile time
and memory do not depend on the trip count.

Not descended (a ``scan_descent_skipped`` record gives the reason): a reverse scan, effects,
nested control flow in the body, a weight scanned as ``xs``, a weight processed inside the
body or used there by a non-ETP op, a descended carry whose shape differs from the hidden
group's, or stacked outputs (``ys``) depending on the op that feed a hidden state.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import jax.extend.core as jex_core
import jax.numpy as jnp

from .._jax_compat import Jaxpr, jaxpr_of_param, make_jaxpr_object
from .._jax_compat import lax_primitives as P
from ..ops.primitive import etp_rule_of, is_etp_primitive
from .control_flow_rewrites import contains_etp, split_scan_operands
from .diagnostics import DiagnosticKind, DiagnosticLevel, PassResult, format_path, new_record
from .elementwise_check import non_elementwise_equations
from .hidden_groups import is_transition_boundary
from .jaxpr_tools import (
    CALL_PRIMITIVES,
    CONTROL_FLOW_PRIMITIVES,
    backward_slice,
    forward_closure,
    inline_calls,
    is_drop_var,
    is_var,
    jaxpr_from_slice,
    producer_map,
)
from .module_info import ModuleInfo
from .relations import HiddenParamOpRelation, PathClassification, _resolve_trainable

__all__ = ["DescendedScan", "DescendedRelation", "apply_scan_descent", "descended_relations"]


class DescendedScan(NamedTuple):
    """One long scan of the step, descended.

    Attributes
    ----------
    length : int
        Trip count ``L``.
    const_operands, carry_operands, xs_operands : tuple
        The scan's operands in the step (vars or literals).
    body : Jaxpr
        The body, whose outputs are the new carry followed by ``exposed`` (body values the
        trace fold reads). Constvars are bound to ``body_consts``.
    body_consts : tuple
        Values of ``body.constvars``.
    exposed : tuple of Var
        Body values output after the carry.
    state_positions : tuple of int
        Carry positions of the descended state (``K`` components).
    transition : Jaxpr
        Old descended carry -> new descended carry; its constvars are in ``exposed``.
    exit_carry_vars : tuple of Var
        The scan's final descended carry in the step.
    state_shape : tuple of int
        Shape of every descended carry component.
    """

    length: int
    const_operands: tuple
    carry_operands: tuple
    xs_operands: tuple
    body: Jaxpr
    body_consts: tuple
    exposed: tuple
    state_positions: tuple
    transition: Jaxpr
    exit_carry_vars: tuple
    state_shape: tuple

    @property
    def num_state(self) -> int:
        """Number ``K`` of descended carry components."""
        return len(self.state_positions)

    def needed_vars(self) -> list:
        """Step vars the trace fold reads (scan operands and final carry)."""
        atoms = [*self.const_operands, *self.carry_operands, *self.xs_operands, *self.exit_carry_vars]
        return [a for a in atoms if is_var(a)]

    def __repr__(self) -> str:
        return (f"DescendedScan(length={self.length}, state_positions={list(self.state_positions)}, "
                f"state_shape={self.state_shape}, body_eqns={len(self.body.eqns)})")


class DescendedRelation(NamedTuple):
    """``control_flow_context`` of a relation whose op sits in a descended scan body.

    Attributes
    ----------
    scan : DescendedScan
        The scan.
    body_tail : Jaxpr
        ``y_τ -> new descended carry`` (constvars in ``scan.exposed``).
    exit_jaxprs : tuple of Jaxpr
        Per group of the relation: final descended carry -> new group member values.
    anchor_var : Var
        An output of the scan equation (to find it in a rewritten step).
    operand_positions : dict
        ``{key: position of the weight among the scan equation's inputs}``.
    """

    scan: DescendedScan
    body_tail: Jaxpr
    exit_jaxprs: tuple
    anchor_var: Any
    operand_positions: dict

    def needed_vars(self) -> list:
        """Step vars the fold and the exit map read."""
        out = self.scan.needed_vars()
        for jaxpr in self.exit_jaxprs:
            out.extend(jaxpr.constvars)
        return out

    def __repr__(self) -> str:
        return f"DescendedRelation({self.scan!r}, groups={len(self.exit_jaxprs)})"


def descended_relations(relations: Sequence) -> list:
    """The relations whose op sits in a descended scan body."""
    return [r for r in relations if isinstance(getattr(r, "control_flow_context", None), DescendedRelation)]


class _Body(NamedTuple):
    eqns: list
    constvars: list
    consts: list
    invars: list
    outvars: list
    n_consts: int
    n_carry: int


class _Skip(Exception):
    """A reason not to descend into a scan."""


def _body_of(eqn) -> _Body:
    inner, consts, constvars = jaxpr_of_param(eqn.params["jaxpr"])
    eqns, outvars, lifted, _ = inline_calls(inner.eqns, inner.outvars)
    consts_in, carry, _ = split_scan_operands(eqn)
    return _Body(list(eqns), list(constvars) + [v for v, _ in lifted], list(consts) + [c for _, c in lifted],
                 list(inner.invars), list(outvars), len(consts_in), len(carry))


def _skip_reason_of_eqn(eqn, minfo: ModuleInfo, body: _Body) -> str | None:
    if bool(eqn.params["reverse"]):
        return "it runs in reverse"
    if eqn.effects:
        return "it has side effects"
    nested = sorted({str(e.primitive) for e in body.eqns
                     if e.primitive in CONTROL_FLOW_PRIMITIVES or e.primitive in CALL_PRIMITIVES})
    if nested:
        return f"its body contains nested control flow ({', '.join(nested)})"
    _, _, xs = split_scan_operands(eqn)
    weight_derived = forward_closure(list(minfo.weight_invars), list(minfo.closed_jaxpr.eqns))
    if any(is_var(a) and a in weight_derived for a in xs):
        return "it scans over a weight-derived value as xs"
    return None


def _crosses(eqn) -> bool:
    if eqn.primitive is P.stop_gradient_p:
        return False
    return not (is_etp_primitive(eqn.primitive) and not etp_rule_of(eqn.primitive).gradient_enabled)


def _is_blocking(eqn) -> bool:
    return is_etp_primitive(eqn.primitive) and not etp_rule_of(eqn.primitive).gradient_enabled


def _state_positions(body: _Body, ys: list) -> list[int]:
    """Carry positions reached from the ETP outputs, closed under carry-to-carry paths."""
    carry_in = body.invars[body.n_consts:body.n_consts + body.n_carry]
    carry_out = body.outvars[:body.n_carry]
    reached = forward_closure(ys, body.eqns, crosses=_crosses)
    chosen = {k for k, v in enumerate(carry_out) if v in reached}
    while True:
        start = [carry_in[k] for k in chosen]
        downstream = forward_closure(start, body.eqns, crosses=lambda e: not is_transition_boundary(e))
        more = {k for k, v in enumerate(carry_out) if v in downstream} | chosen
        if more == chosen:
            return sorted(chosen)
        chosen = more


def _weight_keys(eqn, body: _Body, const_operands, minfo, outer_eqns, producers) -> dict:
    """``{key: (const index, path, leaf, chain, processing jaxpr)}`` of a body ETP op."""
    const_vars = body.invars[:body.n_consts]
    found = {}
    for key, pos in etp_rule_of(eqn.primitive).trainable_inputs(**eqn.params).items():
        var = eqn.invars[pos]
        if not is_var(var) or var not in const_vars:
            raise _Skip(f"the `{key}` input of `{eqn.primitive}` is computed inside the body")
        index = const_vars.index(var)
        path, leaf, chain, jaxpr, problem = _resolve_trainable(const_operands[index], minfo, outer_eqns, producers)
        if problem is None:
            found[key] = (index, path, leaf, chain, jaxpr)
    return found


def _check_weight_uses(body: _Body, const_indices: set) -> None:
    """A weight constant must feed the body's ETP ops only (its other uses would be untraced)."""
    weight_vars = {body.invars[i] for i in const_indices}
    for e in body.eqns:
        used = [a for a in e.invars if is_var(a) and a in weight_vars]
        if used and not is_etp_primitive(e.primitive):
            raise _Skip(f"a weight is used inside the body by `{e.primitive}`, which is not an ETP op")


def _tail(body: _Body, op_index: int, y, state_out: list) -> Jaxpr:
    depends = forward_closure([y], body.eqns, crosses=_crosses)

    def include(i, e):
        return i != op_index and not _is_blocking(e) and any(is_var(o) and o in depends for o in e.outvars)

    order, free = backward_slice(state_out, body.eqns, include=include)
    return jaxpr_from_slice([body.eqns[i] for i in order], free, [y], state_out)


def _transition(body: _Body, state_in: list, state_out: list) -> Jaxpr:
    downstream = forward_closure(state_in, body.eqns, crosses=lambda e: not is_transition_boundary(e))

    def include(i, e):
        return not is_transition_boundary(e) and any(is_var(o) and o in downstream for o in e.outvars)

    order, free = backward_slice(state_out, body.eqns, include=include)
    return jaxpr_from_slice([body.eqns[i] for i in order], free, state_in, state_out)


def _exit_jaxpr(outer_eqns, exit_vars: list, group) -> Jaxpr:
    depends = forward_closure(exit_vars, outer_eqns, crosses=_crosses)
    starts = set(exit_vars)

    def include(i, e):
        if _is_blocking(e) or any(o in starts for o in e.outvars):  # the scan itself is not part of the exit
            return False
        return any(is_var(o) and o in depends for o in e.outvars)

    order, free = backward_slice(group.hidden_outvars, outer_eqns, include=include)
    return jaxpr_from_slice([outer_eqns[i] for i in order], free, exit_vars, list(group.hidden_outvars))


def _groups_reached(minfo: ModuleInfo, outer_eqns, exit_vars, hid_path_to_group) -> list:
    hidden_out = set(minfo.outvar_to_hidden_path)
    direct = forward_closure(exit_vars, outer_eqns, crosses=_crosses, stop_at=hidden_out)
    by_index = {}
    for v in direct:
        if v in hidden_out:
            group = hid_path_to_group[minfo.outvar_to_hidden_path[v]]
            by_index[group.index] = group
    return [by_index[i] for i in sorted(by_index)]


def _check_ys(eqn, body: _Body, minfo: ModuleInfo, outer_eqns, ys) -> None:
    reached = forward_closure(ys, body.eqns, crosses=lambda e: e.primitive is not P.stop_gradient_p)
    dependent = [eqn.outvars[body.n_carry + j] for j, v in enumerate(body.outvars[body.n_carry:])
                 if is_var(v) and v in reached]
    dependent = [v for v in dependent if is_var(v)]
    hidden_out = set(minfo.outvar_to_hidden_path)
    if dependent and forward_closure(dependent, outer_eqns) & hidden_out:
        raise _Skip("its stacked outputs (ys) that depend on an ETP op feed a hidden state")


class _Descent(NamedTuple):
    scan: DescendedScan
    relations: list
    records: list


def _descend(eqn, minfo: ModuleInfo, outer_eqns, producers, hid_path_to_group) -> _Descent:
    """Descend one scan equation; raises :class:`_Skip` with the reason when it cannot."""
    body = _body_of(eqn)
    reason = _skip_reason_of_eqn(eqn, minfo, body)
    if reason is not None:
        raise _Skip(reason)
    const_ops, carry_ops, xs_ops = split_scan_operands(eqn)
    ops = [(i, e) for i, e in enumerate(body.eqns) if is_etp_primitive(e.primitive)]
    ys = [e.outvars[0] for _, e in ops]
    positions = _state_positions(body, ys)
    if not positions:
        raise _Skip("no ETP output inside reaches the carry")
    carry_in = body.invars[body.n_consts:body.n_consts + body.n_carry]
    carry_out = body.outvars[:body.n_carry]
    state_in, state_out = [carry_in[k] for k in positions], [carry_out[k] for k in positions]
    shapes = {tuple(v.aval.shape) for v in state_in}
    if len(shapes) != 1 or not all(_is_float(v) for v in state_in):
        raise _Skip("its traced carry components differ in shape or are not floating point")
    state_shape = shapes.pop()
    exit_vars = [eqn.outvars[k] for k in positions]
    if any(is_drop_var(v) for v in exit_vars):
        raise _Skip("part of its final carry is discarded")
    _check_ys(eqn, body, minfo, outer_eqns, ys)
    groups = _groups_reached(minfo, outer_eqns, [v for v in exit_vars if is_var(v)], hid_path_to_group)
    if not groups:
        raise _Skip("its carry reaches no hidden state")
    for g in groups:
        if tuple(g.varshape) != state_shape:
            raise _Skip(f"its carry has shape {state_shape}, hidden group {g.index} has {tuple(g.varshape)}")
    transition = _transition(body, state_in, state_out)
    exits = tuple(_exit_jaxpr(outer_eqns, exit_vars, g) for g in groups)
    found = []
    for op_index, op in ops:
        keys = _weight_keys(op, body, const_ops, minfo, outer_eqns, producers)
        y = op.outvars[0]
        if keys and forward_closure([y], body.eqns, crosses=_crosses) & set(state_out):
            found.append((op_index, op, keys, _tail(body, op_index, y, state_out)))
    if not found:
        raise _Skip("no ETP op inside has a ParamState weight and reaches the carry")
    _check_weight_uses(body, {k[0] for _, _, keys, _ in found for k in keys.values()})
    exposed: dict = {}
    for _, op, _, tail in found:
        rule = etp_rule_of(op.primitive)
        x = None if rule.x_index is None else op.invars[rule.x_index]
        for v in ([x] if is_var(x) else []) + [op.outvars[0], *tail.constvars]:
            exposed[v] = None
    for v in transition.constvars:
        exposed[v] = None
    body_jaxpr = make_jaxpr_object(body.constvars, body.invars, list(carry_out) + list(exposed), body.eqns)
    scan = DescendedScan(
        length=int(eqn.params["length"]), const_operands=tuple(const_ops), carry_operands=tuple(carry_ops),
        xs_operands=tuple(xs_ops), body=body_jaxpr, body_consts=tuple(body.consts), exposed=tuple(exposed),
        state_positions=tuple(positions), transition=transition, exit_carry_vars=tuple(exit_vars),
        state_shape=state_shape)
    relations, records = [], []
    for _, op, keys, tail in found:
        relations.append(_relation(op, keys, tail, scan, exits, groups, minfo, exit_vars, records))
    records.extend(_elementwise_records(scan, relations, groups))
    return _Descent(scan, relations, records)


def _is_float(v) -> bool:
    return bool(jnp.issubdtype(v.aval.dtype, jnp.floating))


def _relation(op, keys, tail, scan, exits, groups, minfo, exit_vars, records) -> HiddenParamOpRelation:
    rule = etp_rule_of(op.primitive)
    x = None if rule.x_index is None else op.invars[rule.x_index]
    connected = [p for g in groups for p in g.hidden_paths]
    states = minfo.states_by_path()
    context = DescendedRelation(scan, tail, exits, anchor_var=next(v for v in exit_vars if is_var(v)),
                                operand_positions={k: index for k, (index, *_) in keys.items()})
    prim_name = str(op.primitive)
    for wpath in dict.fromkeys(k[1] for k in keys.values()):
        records.append(new_record(
            DiagnosticKind.RELATION_INCLUDED, DiagnosticLevel.INFO,
            f"`{prim_name}` inside a descended scan of length {scan.length} feeds hidden group(s) "
            f"{[g.index for g in groups]} ({', '.join('`' + format_path(p) + '`' for p in connected)}) through "
            "the scan's carry; it is trained online with an eligibility trace folded over the substeps.",
            primitive=prim_name, weight_path=wpath, hidden_paths=connected,
            context={"groups": [g.index for g in groups], "scan_descent": True,
                     "classification": {format_path(p): PathClassification.ALL_DIRECT.value for p in connected},
                     "keys": [k for k, v in keys.items() if v[1] == wpath]}))
    return HiddenParamOpRelation(
        primitive=op.primitive,
        x_var=x if is_var(x) else None,
        y_var=op.outvars[0],
        hidden_groups=list(groups),
        y_to_hidden_group_jaxprs=[tail for _ in groups],
        connected_hidden_paths=connected,
        eqn_params=dict(op.params),
        path_classification={p: PathClassification.ALL_DIRECT for p in connected},
        trainable_vars={k: scan.const_operands[v[0]] for k, v in keys.items()},
        trainable_paths={k: v[1] for k, v in keys.items()},
        trainable_leaf_indices={k: v[2] for k, v in keys.items()},
        trainable_param_states={k: states[v[1]] for k, v in keys.items()},
        trainable_processing_chains={k: v[3] for k, v in keys.items()},
        trainable_processing_jaxprs={k: v[4] for k, v in keys.items() if v[4] is not None},
        control_flow_context=context,
    )


def _elementwise_records(scan: DescendedScan, relations, groups) -> list:
    parts = [("substep transition", scan.transition.eqns)]
    parts += [("body tail", r.control_flow_context.body_tail.eqns) for r in relations]
    parts += [("exit", j.eqns) for j in relations[0].control_flow_context.exit_jaxprs]
    offenders = sorted({(where, str(e.primitive)) for where, eqns in parts for e in non_elementwise_equations(eqns)})
    if not offenders:
        return []
    paths = [p for g in groups for p in g.hidden_paths]
    return [new_record(
        DiagnosticKind.TRANSITION_NOT_ELEMENTWISE, DiagnosticLevel.WARNING,
        f"The descended scan of length {scan.length} uses ops that may mix positions "
        f"({', '.join(f'{p} in the {w}' for w, p in offenders)}); its per-position Jacobians keep only the "
        "diagonal, so the traces folded over its substeps are approximate.",
        hidden_paths=paths, context={"groups": [g.index for g in groups], "scan_descent": True,
                                     "primitives": sorted({p for _, p in offenders})})]


def _scan_eqns_with_etp(eqns) -> list:
    return [e for e in eqns if e.primitive is P.scan_p
            and any(contains_etp(sub) for sub in jex_core.jaxprs_in_params(e.params))]


def apply_scan_descent(minfo: ModuleInfo, hid_path_to_group) -> PassResult[tuple[list, tuple]]:
    """Descend into the long scans of the step that hold ETP ops (see the module docstring).

    Parameters
    ----------
    minfo : ModuleInfo
        The canonical step (short scans are already unrolled).
    hid_path_to_group : dict
        Hidden path to its group.

    Returns
    -------
    PassResult
        ``(relations, descended scan equations)`` with ``scan_descent_applied`` /
        ``scan_descent_skipped`` records (and the descended relations' ``relation_included``).

    Examples
    --------
    >>> import brainstate, jax, jax.numpy as jnp, braintrace
    >>> from braintrace.compiler.scan_descent import apply_scan_descent
    >>> class Substeps(brainstate.nn.Module):
    ...     def __init__(self):
    ...         super().__init__()
    ...         self.w = brainstate.ParamState(jnp.ones((3, 2)))
    ...     def init_state(self):
    ...         self.v = brainstate.HiddenState(jnp.zeros(2))
    ...     def update(self, x):
    ...         body = lambda i, v: v + 0.1 * (braintrace.matmul(x, self.w.value) - v)
    ...         self.v.value = jax.lax.fori_loop(0, 50, body, self.v.value)
    ...         return self.v.value
    >>> model = Substeps()
    >>> _ = brainstate.nn.init_all_states(model)
    >>> info = braintrace.extract_module_info(model, jnp.ones(3))
    >>> _, by_path = braintrace.find_hidden_groups_from_minfo(info)
    >>> result = apply_scan_descent(info, by_path)
    >>> relations, _ = result.value
    >>> [r.kind.value for r in result.records][-1], relations[0].control_flow_context.scan.length
    ('scan_descent_applied', 50)
    """
    policy = minfo.control_flow
    outer_eqns = list(minfo.closed_jaxpr.eqns)
    producers = producer_map(outer_eqns)
    relations, descended, records = [], [], []
    for eqn in _scan_eqns_with_etp(outer_eqns):
        length = int(eqn.params["length"])
        try:
            if policy is not None and policy.scan_descent == "off":
                raise _Skip("ControlFlowPolicy(scan_descent='off')")
            found = _descend(eqn, minfo, outer_eqns, producers, hid_path_to_group)
        except _Skip as skip:
            records.append(new_record(
                DiagnosticKind.SCAN_DESCENT_SKIPPED, DiagnosticLevel.WARNING,
                f"A `scan` of length {length} holds ETP ops but was not descended because {skip}; it stays "
                "one opaque equation and those ops get no eligibility trace (see primitive_inside_control_flow).",
                primitive="scan", context={"length": length, "reason": str(skip)}))
            continue
        relations.extend(found.relations)
        descended.append(eqn)
        records.extend(found.records)
        weights = sorted({format_path(p) for r in found.relations for p in r.trainable_paths.values()})
        groups = sorted({g.index for r in found.relations for g in r.hidden_groups})
        records.append(new_record(
            DiagnosticKind.SCAN_DESCENT_APPLIED, DiagnosticLevel.INFO,
            f"A `scan` of length {length} was descended: {len(found.relations)} ETP op(s) inside "
            f"({', '.join('`' + w + '`' for w in weights)}) feed hidden group(s) {groups} through its carry, and "
            f"their traces are folded over the {length} substeps inside the step (the loop is not unrolled).",
            primitive="scan", hidden_paths=[p for r in found.relations for p in r.connected_hidden_paths],
            context={"length": length, "relations": len(found.relations), "weights": weights, "groups": groups,
                     "state_positions": list(found.scan.state_positions)}))
    return PassResult((relations, tuple(descended)), tuple(records))
