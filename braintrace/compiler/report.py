# Copyright 2026 The braintrace authors. Licensed under the Apache License, Version 2.0.
"""A readable, read-only summary of an :class:`ETraceGraph`."""

from __future__ import annotations

import brainstate

from .diagnostics import DiagnosticKind, DiagnosticLevel, format_path
from .graph import ETraceGraph

__all__ = ["CompilationReport", "EXCLUSION_KINDS"]

EXCLUSION_KINDS = (
    DiagnosticKind.RELATION_EXCLUDED_NO_PARAMSTATE,
    DiagnosticKind.RELATION_EXCLUDED_NON_TEMPORAL,
    DiagnosticKind.RELATION_EXCLUDED_SHAPE_MISMATCH,
    DiagnosticKind.RELATION_EXCLUDED_WEIGHT_TO_WEIGHT,
)



class CompilationReport:
    """What the compiler decided, grouped for reading.

    Attributes
    ----------
    hidden_groups : list of (int, list of path)
    etrace_weights : list of (path, key, list of group indices)
        One entry per trainable key of each relation.
    excluded_weights : list of (path, DiagnosticKind)
        ParamStates in no relation, with the first exclusion reason.
    counts : dict
        ``hidden_groups, etrace_weights, excluded_weights, warnings, errors``.

    Examples
    --------
    >>> import brainstate, braintrace, jax.numpy as jnp
    >>> gru = braintrace.nn.GRUCell(3, 4)
    >>> _ = brainstate.nn.init_all_states(gru)
    >>> report = braintrace.CompilationReport(braintrace.compile_etrace_graph(gru, jnp.ones(3)))
    >>> report.counts
    {'hidden_groups': 1, 'etrace_weights': 4, 'excluded_weights': 1, 'warnings': 1, 'errors': 0}
    """

    def __init__(self, graph: ETraceGraph):
        self.graph = graph
        self.hidden_groups = [(g.index, list(g.hidden_paths)) for g in graph.hidden_groups]
        self.etrace_weights = [
            (path, key, [g.index for g in rel.hidden_groups])
            for rel in graph.hidden_param_op_relations
            for key, path in rel.trainable_paths.items()
        ]
        traced = {path for path, _, _ in self.etrace_weights}
        minfo = graph.module_info
        self.excluded_weights = []
        for path, st in minfo.retrieved_model_states.items():
            if not isinstance(st, brainstate.ParamState) or path in traced:
                continue
            reasons = [r.kind for r in graph.explain(weight_path=path) if r.kind in EXCLUSION_KINDS]
            self.excluded_weights.append((path, reasons[0] if reasons else None))
        levels = [r.level for r in graph.diagnostics]
        self.counts = {
            "hidden_groups": len(self.hidden_groups),
            "etrace_weights": len(self.etrace_weights),
            "excluded_weights": len(self.excluded_weights),
            "warnings": levels.count(DiagnosticLevel.WARNING),
            "errors": levels.count(DiagnosticLevel.ERROR),
        }

    def to_str(self, level: int = 1) -> str:
        """The report as text; ``level=2`` adds every warning and error record."""
        lines = ["Eligibility-trace compilation report",
                 "  " + ", ".join(f"{k}={v}" for k, v in self.counts.items())]
        lines.append("Hidden groups:")
        for index, paths in self.hidden_groups:
            group = self.graph.hidden_groups[index]
            lines.append(f"  [{index}] {', '.join(format_path(p) for p in paths)}  "
                         f"varshape={tuple(group.varshape)} S={group.num_state}")
        lines.append("Weights trained online:")
        for path, key, groups in self.etrace_weights:
            lines.append(f"  {format_path(path)} [{key}] -> groups {groups}")
        if self.excluded_weights:
            lines.append("Weights without a trace:")
            for path, kind in self.excluded_weights:
                lines.append(f"  {format_path(path)}: {kind.value if kind is not None else 'not used by the step'}")
        if level >= 2:
            notes = [r for r in self.graph.diagnostics if r.level is not DiagnosticLevel.INFO]
            if notes:
                lines.append("Warnings and errors:")
                lines.extend(f"  {r}" for r in notes)
        return "\n".join(lines)

    def show(self, level: int = 1) -> None:
        """Print :meth:`to_str`."""
        print(self.to_str(level))  # noqa: T201 - an explicit user request to print

    def __repr__(self) -> str:
        return self.to_str(1)
