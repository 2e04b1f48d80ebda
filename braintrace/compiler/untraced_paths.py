# Copyright 2026 The braintrace authors. Licensed under the Apache License, Version 2.0.
"""Reports of weight influence that no eligibility trace carries.

Run after the relations pass, on the canonical step:

* :func:`report_plain_weight_use`: a ``ParamState`` reaches a hidden state through plain JAX
  ops instead of as the trainable input of an ETP op, so it learns from its same-step
  gradient only (``plain_weight_operation``);
* :func:`report_cross_group_coupling`: a traced weight's group feeds another group that
  carries memory, so the weight's influence through that group at later steps is dropped
  (``cross_group_coupling_dropped``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from .._jax_compat import lax_primitives as P
from ..ops.primitive import etp_rule_of, is_etp_primitive
from .diagnostics import CompilationRecord, DiagnosticKind, DiagnosticLevel, format_path, new_record
from .jaxpr_tools import forward_closure, is_var
from .module_info import ModuleInfo

__all__ = ["report_cross_group_coupling", "report_plain_weight_use"]

Path = tuple[str, ...]


def _reaches_hidden_outside_ops(leaves, eqns, hidden_out) -> list:
    """Hidden outvars a weight reaches without entering an ETP op as its trainable input."""
    reached = set(leaves)
    hits = []
    for eqn in eqns:
        positions = [k for k, a in enumerate(eqn.invars) if is_var(a) and a in reached]
        if not positions or eqn.primitive is P.stop_gradient_p:
            continue
        if is_etp_primitive(eqn.primitive):
            trainable = set(etp_rule_of(eqn.primitive).trainable_inputs(**eqn.params).values())
            if all(k in trainable for k in positions):
                continue
        for v in eqn.outvars:
            if is_var(v):
                reached.add(v)
                if v in hidden_out:
                    hits.append(v)
    return hits


def report_plain_weight_use(minfo: ModuleInfo, skip=frozenset()) -> tuple[CompilationRecord, ...]:
    """``plain_weight_operation`` records; weights in ``skip`` (used by control flow) are not reported."""
    eqns = list(minfo.closed_jaxpr.eqns)
    hidden_out = set(minfo.outvar_to_hidden_path)
    records = []
    for path, leaves in minfo.weight_path_to_invars.items():
        if path in skip:
            continue  # reported as weight_in_control_flow
        hit = [minfo.outvar_to_hidden_path[v] for v in _reaches_hidden_outside_ops(leaves, eqns, hidden_out)]
        if hit:
            records.append(new_record(
                DiagnosticKind.PLAIN_WEIGHT_OPERATION, DiagnosticLevel.WARNING,
                f"ParamState `{format_path(path)}` reaches hidden state(s) "
                f"{', '.join('`' + format_path(p) + '`' for p in sorted(set(hit)))} through plain JAX ops, not as "
                "the trainable input of an ETP op, so it has no eligibility trace: it learns from its same-step "
                "gradient only. Use `braintrace.matmul` / `element_wise` / `conv` / `einsum` for trainable "
                "operations.",
                weight_path=path, hidden_paths=sorted(set(hit))))
    return tuple(records)


def _cross_record(rel, wpath, a, b) -> CompilationRecord:
    return new_record(
        DiagnosticKind.CROSS_GROUP_COUPLING_DROPPED, DiagnosticLevel.WARNING,
        f"`{format_path(wpath)}` is traced through hidden group {a.index} "
        f"({', '.join('`' + format_path(p) + '`' for p in a.hidden_paths)}), which feeds hidden "
        f"group {b.index} ({', '.join('`' + format_path(p) + '`' for p in b.hidden_paths)}); "
        f"group {b.index} carries memory, so the weight's influence through it at later steps "
        "is dropped and its online gradient is approximate (its same-step part is exact). "
        "Accept the approximation, or make the weight feed the group whose memory matters.",
        primitive=str(rel.primitive), weight_path=wpath,
        hidden_paths=tuple(a.hidden_paths) + tuple(b.hidden_paths),
        context={"group": a.index, "downstream_group": b.index})


def report_cross_group_coupling(minfo: ModuleInfo, relations: Sequence, hid_path_to_group: Mapping,
                                covered=frozenset()) -> tuple[CompilationRecord, ...]:
    """Records where a traced weight's group feeds another group that carries memory.

    A relation's trace follows its own groups' recurrence only. When such a group ``a``
    reaches the new value of another group ``b`` (a stacked layer, a leaky readout) and
    ``b``'s old value is read by the step (``b`` has memory), the weight's influence through
    ``b`` at later steps is dropped, whether the coupling is element-wise or dense.
    ``covered`` holds the ``(relation index, a, b)`` triples a cascade trace carries
    (:mod:`~braintrace.compiler.cascade_plan`); they are not reported.
    """
    groups = list({id(g): g for g in hid_path_to_group.values()}.values())
    if len(groups) < 2:
        return ()
    eqns = list(minfo.closed_jaxpr.eqns)
    crosses = lambda e: e.primitive is not P.stop_gradient_p  # noqa: E731
    all_outvars = set(v for v in minfo.closed_jaxpr.outvars if is_var(v))
    reads_old = {}
    for g in groups:
        start = set(g.hidden_invars)
        reads_old[g.index] = bool((forward_closure(g.hidden_invars, eqns, crosses=crosses) - start) & all_outvars)
    reaches = {g.index: forward_closure(list(g.hidden_invars) + list(g.hidden_outvars), eqns, crosses=crosses)
               for g in groups}
    records = []
    for r, rel in enumerate(relations):
        own = {g.index for g in rel.hidden_groups}
        weight_paths = list(dict.fromkeys(rel.trainable_paths.values()))
        for a in rel.hidden_groups:
            for b in groups:
                if b.index in own or not reads_old[b.index] or not set(b.hidden_outvars) & reaches[a.index]:
                    continue
                if (r, a.index, b.index) in covered:
                    continue
                records.extend(_cross_record(rel, wpath, a, b) for wpath in weight_paths)
    return tuple(records)
