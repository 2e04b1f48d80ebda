# Copyright 2026 The braintrace authors. Licensed under the Apache License, Version 2.0.
"""The compiled eligibility-trace graph and its entry point, :func:`compile_etrace_graph`."""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Sequence
from typing import Any, NamedTuple

import brainstate
import jax

from .. import _errors
from .control_flow_report import report_control_flow
from .diagnostics import (
    CompilationRecord,
    DiagnosticKind,
    deliver_records,
    format_path,
)
from ..ops.primitive import etp_rule_of
from .hidden_groups import DEFAULT_SNAP_MAX_JACOBIAN_ELEMENTS, HiddenGroup, find_hidden_groups
from .module_info import ModuleInfo, build_module_info
from .perturbation import HiddenPerturbation, add_hidden_perturbation
from .relations import HiddenParamOpRelation, find_hidden_param_op_relations
from .snap_pattern import check_sparse_n
from .scan_descent import DescendedRelation, apply_scan_descent
from .cascade_plan import CascadePlan, plan_cascades
from .untraced_paths import report_cross_group_coupling, report_plain_weight_use

__all__ = ["ETraceGraph", "compile_etrace_graph"]

Path = tuple[str, ...]



class ETraceGraph(NamedTuple):
    """The compiled eligibility-trace graph of one model step.

    Relates the trainable weights (``ParamState``), the hidden states (``HiddenState``) and
    the ETP ops connecting them. Returned by :func:`compile_etrace_graph` and consumed by
    the online-learning algorithms.

    Attributes
    ----------
    module_info : ModuleInfo
        The traced step (its jaxpr also outputs what the algorithms need).
    hidden_groups : sequence of HiddenGroup
        The hidden groups, ``index`` equal to position.
    hid_path_to_group : dict
        Hidden-state path to its group.
    hidden_param_op_relations : sequence of HiddenParamOpRelation
        One per ETP op whose output feeds hidden states.
    hidden_perturb : HiddenPerturbation or None
        The perturbed step, or ``None`` when not requested.
    diagnostics : tuple of CompilationRecord
        Every decision of the compiler, in emission order.
    cascades : tuple of CascadePlan
        The cross-group couplings carried by cascade traces (compiled with
        ``cascade_max_elements > 0``; see :mod:`braintrace.compiler.cascade_plan`).

    Examples
    --------
    >>> import brainstate
    >>> import braintrace
    >>> gru = braintrace.nn.GRUCell(3, 4)
    >>> _ = brainstate.nn.init_all_states(gru)
    >>> inputs = brainstate.random.randn(3)
    >>> graph = braintrace.compile_etrace_graph(gru, inputs)
    >>> isinstance(graph, braintrace.ETraceGraph)
    True
    """

    module_info: ModuleInfo
    hidden_groups: Sequence[HiddenGroup]
    hid_path_to_group: dict
    hidden_param_op_relations: Sequence[HiddenParamOpRelation]
    hidden_perturb: HiddenPerturbation | None
    diagnostics: tuple = ()
    cascades: tuple[CascadePlan, ...] = ()

    def explain(self, *, weight_path: Path | None = None, hidden_path: Path | None = None,
                kind: DiagnosticKind | str | None = None) -> tuple[CompilationRecord, ...]:
        """Compilation records filtered by weight path, hidden path and kind.

        Parameters
        ----------
        weight_path : tuple of str, optional
            Keep records whose ``weight_path`` equals this.
        hidden_path : tuple of str, optional
            Keep records whose ``hidden_paths`` contain this.
        kind : DiagnosticKind or str, optional
            Keep records of this kind.

        Returns
        -------
        tuple of CompilationRecord
            In emission order; all records when no filter is given.

        Examples
        --------
        >>> import brainstate, braintrace, jax.numpy as jnp
        >>> gru = braintrace.nn.GRUCell(3, 4)
        >>> _ = brainstate.nn.init_all_states(gru)
        >>> graph = braintrace.compile_etrace_graph(gru, jnp.ones(3))
        >>> [r.weight_path for r in graph.explain(kind=braintrace.DiagnosticKind.RELATION_EXCLUDED_WEIGHT_TO_WEIGHT)]
        [('Wr', 'weight')]
        """
        if kind is not None:
            kind = DiagnosticKind(kind)
        weight_path = None if weight_path is None else tuple(weight_path)
        hidden_path = None if hidden_path is None else tuple(hidden_path)
        out = []
        for record in self.diagnostics:
            if weight_path is not None and record.weight_path != weight_path:
                continue
            if hidden_path is not None and hidden_path not in record.hidden_paths:
                continue
            if kind is not None and record.kind is not kind:
                continue
            out.append(record)
        return tuple(out)

    def call_hidden_perturb(self, args, perturb_data: Sequence[jax.Array], old_state_vals=None):
        """Run the step with additive perturbations at the new hidden values.

        Parameters
        ----------
        args : tuple
            The step inputs (as given to the model's ``update``).
        perturb_data : sequence of jax.Array
            One array per hidden state, in ``hidden_perturb.perturb_hidden_paths`` order.
        old_state_vals : sequence, optional
            Values of ``module_info.compiled_model_states`` to run from (default: current).

        Returns
        -------
        tuple
            ``(out, new_state_vals, temps, hidden_vals, other_vals)``: the model's own output
            first (see :meth:`ModuleInfo._process`). No state is written.
        """
        if self.hidden_perturb is None:
            raise ValueError(
                "this graph was compiled with include_hidden_perturb=False; recompile with "
                "include_hidden_perturb=True to call the perturbed step."
            )
        if not isinstance(args, tuple):
            args = (args,)
        flat = self.module_info.flat_inputs(args, old_state_vals)
        outs = self.hidden_perturb.eval_jaxpr(flat, list(perturb_data))
        return self.module_info._process(*args, jaxpr_outs=outs, old_state_vals=old_state_vals)

    def dict(self) -> dict:
        """The graph's fields as a plain dictionary."""
        return self._asdict()

    def __repr__(self) -> str:
        lines = [f"ETraceGraph(hidden_groups={len(self.hidden_groups)}, "
                 f"relations={len(self.hidden_param_op_relations)}, diagnostics={len(self.diagnostics)})"]
        for g in self.hidden_groups:
            lines.append(f"  group {g.index}: {[format_path(p) for p in g.hidden_paths]} "
                         f"varshape={tuple(g.varshape)} S={g.num_state} "
                         f"transition_eqns={len(g.transition_jaxpr.eqns)}")
        for r in self.hidden_param_op_relations:
            paths = sorted({format_path(p) for p in r.trainable_paths.values()})
            lines.append(f"  relation {r.primitive}: {paths} -> groups {[g.index for g in r.hidden_groups]}")
        return "\n".join(lines)


_COMPILING: contextvars.ContextVar[bool] = contextvars.ContextVar("braintrace_compiling", default=False)


@contextlib.contextmanager
def _guard_recursion():
    if _COMPILING.get():
        raise NotImplementedError(
            "compile_etrace_graph was called while another compilation is running (for example from "
            "inside a model's update); recursive compilation is not supported."
        )
    token = _COMPILING.set(True)
    try:
        yield
    finally:
        _COMPILING.reset(token)


def compile_etrace_graph(model: brainstate.nn.Module, *model_args: Any,
                         include_hidden_perturb: bool = True, include_recurrent_mixing: bool = False,
                         sparse_n: int | None = None,
                         snap_max_jacobian_elements: int = DEFAULT_SNAP_MAX_JACOBIAN_ELEMENTS,
                         control_flow=None, include_output_bypass: bool = True,
                         cascade_max_elements: int = 0) -> ETraceGraph:
    """Compile one step of ``model`` into an :class:`ETraceGraph`.

    Traces ``model.update(*model_args)``, finds the hidden groups and the op-to-hidden
    relations, rewrites the step to also output what the algorithms need, and records every
    decision in ``graph.diagnostics``. The model's states are left unchanged, also when
    compilation fails.

    Parameters
    ----------
    model : brainstate.nn.Module
        The model; its states must be initialised (``brainstate.nn.init_all_states``).
    *model_args
        Example inputs of one step (their shapes fix the compiled graph).
    include_hidden_perturb : bool
        Also build the perturbed step used for learning signals (default True).
    include_recurrent_mixing : bool
        Trace recurrent ops (a recurrent ETP matmul, ``dot_general``, ``conv``) into each
        group's transition, so the group Jacobian ``D`` is the per-position ``S×S`` block of
        the coupled Jacobian (the OSTL "with H" scope) instead of the parameter-free diagonal.
        The grouping and the relations are the same in both modes.
    sparse_n : int, optional
        SnAp order ``n >= 1``; needs ``include_recurrent_mixing=True``. Each group gets a
        :class:`~braintrace.compiler.snap_pattern.SnapPattern` and ``D`` is widened to
        ``(*V, K·S, K·S)`` (``SNAP_PATTERN_CONSERVATIVE`` / ``SNAP_PATTERN_DEGENERATE``
        records report fallbacks). Every relation must be anchored (its trace laid out per
        hidden position).
    snap_max_jacobian_elements : int
        Upper bound on the widened Jacobian ``P·(K·S)²`` of each group under ``sparse_n``.
    control_flow : ControlFlowPolicy, optional
        How control flow in the step is canonicalised (short scans unrolled, long scans
        holding ETP ops descended, conds if-converted, while loops checked); the default
        policy when None.
    include_output_bypass : bool
        Find the same-step paths from parameters and old hidden values to the outputs that
        avoid every new hidden value (``output_bypasses_hidden``; default True). With False
        the perturbed step has no bypass paths: ``∂L_t/∂h_{t-1}`` along such paths (an
        output read from the pre-update value) is not contracted with the previous traces.
    cascade_max_elements : int
        Plan cascade traces (``graph.cascades``, ``cross_group_cascade`` records) for
        downstream groups with at most this many elements per batch row; 0 (default) plans
        none, so every such coupling is ``cross_group_coupling_dropped``. ``D_RTRL`` passes
        its own ``cascade_max_elements`` (64 by default).

    Returns
    -------
    ETraceGraph

    Raises
    ------
    CompilationError
        If the model has no hidden state, or a SnAp Jacobian exceeds
        ``snap_max_jacobian_elements``.
    NotSupportedError
        If the step writes a ParamState, or uses a weight inside a ``while_loop``, or
        ``sparse_n`` is given without ``include_recurrent_mixing``.
    ValueError
        If ``sparse_n`` is not an int >= 1 (a bool is rejected).
    NotImplementedError
        If called recursively, or under ``sparse_n`` a relation's trace is not anchored to
        hidden positions (a sparse op).

    Examples
    --------
    >>> import brainstate
    >>> import braintrace
    >>> gru = braintrace.nn.GRUCell(3, 4)
    >>> _ = brainstate.nn.init_all_states(gru)
    >>> inputs = brainstate.random.randn(3)
    >>> graph = braintrace.compile_etrace_graph(gru, inputs)
    >>> len(graph.hidden_groups)
    1
    """
    check_sparse_n(sparse_n, include_recurrent_mixing)
    options = _GraphOptions(bool(include_hidden_perturb), (bool(include_recurrent_mixing), sparse_n,
                                                           snap_max_jacobian_elements),
                            control_flow, bool(include_output_bypass), int(cascade_max_elements))
    records: list[CompilationRecord] = []
    with _guard_recursion():
        try:
            graph = _run_passes(model, model_args, options, records)
        except _errors.BraintraceError as error:
            # The error record (level ERROR) is published with the others but not warned.
            deliver_records(records if error.record is None else [*records, error.record], stacklevel=2)
            raise
    deliver_records(graph.diagnostics, stacklevel=2)
    return graph


class _GraphOptions(NamedTuple):
    """The options of :func:`compile_etrace_graph`, as the passes read them."""

    include_hidden_perturb: bool = True
    scope: tuple = (False, None, DEFAULT_SNAP_MAX_JACOBIAN_ELEMENTS)  # (mixing, sparse_n, snap cap)
    control_flow: Any = None
    include_output_bypass: bool = True
    cascade_max_elements: int = 0


def _run_passes(model, model_args, options: _GraphOptions, records: list) -> ETraceGraph:
    """The passes in order; each pass's records are appended to ``records`` as it returns."""
    scope, include_hidden_perturb = options.scope, options.include_hidden_perturb
    # build_module_info restores every state it traced; the later passes only read jaxprs.
    minfo = _collect(build_module_info(model, *model_args, control_flow=options.control_flow), records)
    if not minfo.hidden_path_to_invar:
        raise _errors.CompilationError(
            f"`{type(model).__name__}` has no HiddenState used by its update step, so there is "
            "nothing to learn online. Store recurrent state in `brainstate.HiddenState` and "
            "initialise it (brainstate.nn.init_all_states) before compiling."
        )
    hidden_groups, hid_path_to_group = _collect(find_hidden_groups(minfo, *scope), records)
    assert all(g.index == i for i, g in enumerate(hidden_groups)), "hidden group index differs from its position"
    relations = _collect(find_hidden_param_op_relations(minfo, hid_path_to_group), records)
    if scope[1] is not None:
        _check_snap_anchored(relations, scope[1])
    descended_relations, descended_scans = _collect(apply_scan_descent(minfo, hid_path_to_group), records)
    relations = [*relations, *descended_relations]
    # A descended scan is traced; only the control flow left opaque is reported.
    opaque_eqns = [e for e in minfo.closed_jaxpr.eqns if not any(e is d for d in descended_scans)]
    in_control_flow = _collect(report_control_flow(opaque_eqns, minfo.weight_path_to_invars), records)
    descended_weights = {p for r in descended_relations for p in r.trainable_paths.values()}
    records.extend(report_plain_weight_use(minfo, skip=set(in_control_flow) | descended_weights))
    cascades = (_collect(plan_cascades(minfo, relations, hid_path_to_group, options.cascade_max_elements), records)
                if include_hidden_perturb else ())
    covered = {(c.relation, c.upstream, c.downstream) for c in cascades}
    records.extend(report_cross_group_coupling(minfo, relations, hid_path_to_group, covered))
    minfo = minfo.add_jaxpr_outs(_needed_temporaries(minfo, hidden_groups, relations))
    perturb = (_collect(add_hidden_perturbation(minfo, hidden_groups, relations,
                                                include_output_bypass=options.include_output_bypass), records)
               if include_hidden_perturb else None)
    return ETraceGraph(
        module_info=minfo,
        hidden_groups=hidden_groups,
        hid_path_to_group=hid_path_to_group,
        hidden_param_op_relations=relations,
        hidden_perturb=perturb,
        diagnostics=tuple(records),
        cascades=tuple(cascades),
    )


def _check_snap_anchored(relations, n: int) -> None:
    """SnAp widens the trace per hidden position: every trace must be laid out per position."""
    for rel in relations:
        if etp_rule_of(rel.primitive).param_trace_roll is not None:
            paths = sorted({format_path(p) for p in rel.trainable_paths.values()})
            raise NotImplementedError(
                f"SnAp-{n}: the trace of `{rel.primitive}` ({', '.join(paths)}) is not anchored to hidden positions "
                "(the op keeps its own trace layout, for example the nnz values of a sparse matrix), so it cannot be "
                "widened to the SnAp neighbourhood. Use OSTLRecurrent or D_RTRL for this model, or a dense op."
            )


def _collect(result, records: list):
    records.extend(result.records)
    return result.value


def _needed_temporaries(minfo: ModuleInfo, groups, relations) -> list:
    """Vars the algorithms read from a step: op inputs, tail and transition inputs."""
    wanted: dict = {}
    for rel in relations:
        if isinstance(rel.control_flow_context, DescendedRelation):
            # Body vars do not exist in the step; the fold reads the scan's operands instead.
            for v in rel.control_flow_context.needed_vars():
                wanted[v] = None
            for jaxpr in rel.trainable_processing_jaxprs.values():
                for v in jaxpr.constvars:
                    wanted[v] = None
            continue
        if rel.x_var is not None:
            wanted[rel.x_var] = None
        for jaxpr in rel.y_to_hidden_group_jaxprs:
            for v in list(jaxpr.invars) + list(jaxpr.constvars):
                wanted[v] = None
        for jaxpr in rel.trainable_processing_jaxprs.values():
            for v in jaxpr.constvars:
                wanted[v] = None
    for group in groups:
        for v in list(group.hidden_invars) + list(group.transition_jaxpr_constvars):
            wanted[v] = None
    existing = set(v for v in minfo.closed_jaxpr.outvars)
    return [v for v in wanted if v not in existing]
