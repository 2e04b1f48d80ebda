# Copyright 2026 The braintrace authors. Licensed under the Apache License, Version 2.0.
"""Structured records of every decision the compiler makes.

Each pass reports what it decided (a relation included, a weight excluded and why, two
hidden states merged into one group, a coupling dropped) as a :class:`CompilationRecord`.
Records are collected by the innermost active :func:`diagnostic_context` (thread-local and
nestable) and end up in ``ETraceGraph.diagnostics``, where ``ETraceGraph.explain`` filters
them. Warnings and errors are also issued through :mod:`warnings` unless asked otherwise.
"""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import threading
import warnings
from collections.abc import Iterator, Mapping
from typing import Any

__all__ = [
    "format_path",
    "DiagnosticKind",
    "DiagnosticLevel",
    "CompilationRecord",
    "DiagnosticCollector",
    "diagnostic_context",
    "emit",
]


def format_path(path) -> str:
    """A state path as dotted text: ``('l1', 'Wz', 'weight')`` -> ``'l1.Wz.weight'``."""
    return ".".join(map(str, path))


class DiagnosticLevel(str, enum.Enum):
    """Severity of a :class:`CompilationRecord`."""

    INFO = "info"
    WARNING = "warning"
    ERROR = "error"


class DiagnosticKind(str, enum.Enum):
    """What a :class:`CompilationRecord` is about."""

    RELATION_INCLUDED = "relation_included"
    RELATION_EXCLUDED_NO_PARAMSTATE = "relation_excluded_no_paramstate"
    RELATION_EXCLUDED_NON_TEMPORAL = "relation_excluded_non_temporal"
    RELATION_EXCLUDED_SHAPE_MISMATCH = "relation_excluded_shape_mismatch"
    RELATION_EXCLUDED_WEIGHT_TO_WEIGHT = "relation_excluded_weight_to_weight"
    RELATION_PARTIAL_PATH = "relation_partial_path"
    TRAINABLE_INVAR_NOT_PARAMSTATE = "trainable_invar_not_paramstate"
    WEIGHT_PROCESSED_OUTSIDE_OP = "weight_processed_outside_op"
    PLAIN_WEIGHT_OPERATION = "plain_weight_operation"
    HIDDEN_GROUP_MERGED = "hidden_group_merged"
    HIDDEN_GROUP_ZERO_RECURRENCE = "hidden_group_zero_recurrence"
    HIDDEN_COUPLING_DROPPED = "hidden_coupling_dropped"
    CROSS_GROUP_COUPLING_DROPPED = "cross_group_coupling_dropped"
    TRANSITION_NOT_ELEMENTWISE = "transition_not_elementwise"
    TAIL_NOT_ELEMENTWISE = "tail_not_elementwise"
    OUTPUT_BYPASSES_HIDDEN = "output_bypasses_hidden"
    WEIGHT_IN_CONTROL_FLOW = "weight_in_control_flow"
    COND_IF_CONVERTED = "cond_if_converted"
    PRIMITIVE_INSIDE_CONTROL_FLOW = "primitive_inside_control_flow"
    SCAN_UNROLLED = "scan_unrolled"
    SCAN_UNROLL_SKIPPED = "scan_unroll_skipped"
    CONTROL_FLOW_OPAQUE_FWD = "control_flow_opaque_fwd"
    WEIGHT_IN_WHILE = "weight_in_while"
    STATE_MISMATCH = "state_mismatch"


@dataclasses.dataclass(frozen=True)
class CompilationRecord:
    """One compiler decision.

    Attributes
    ----------
    kind : DiagnosticKind
        What the record is about.
    level : DiagnosticLevel
        ``info`` for normal decisions, ``warning`` where a gradient is approximate or
        missing, ``error`` where compilation fails.
    message : str
        A sentence for humans: what was decided, why, and what to do about it.
    primitive : str or None
        The name of the primitive involved, if any.
    weight_path : tuple of str or None
        The ``ParamState`` path involved, if any.
    hidden_paths : tuple of tuple of str
        The hidden-state paths involved.
    context : Mapping
        Extra structured facts (group indices, classification, blocking ops...).

    Examples
    --------
    >>> from braintrace import CompilationRecord, DiagnosticKind, DiagnosticLevel
    >>> record = CompilationRecord(DiagnosticKind.RELATION_INCLUDED, DiagnosticLevel.INFO,
    ...                            'traced', weight_path=('W', 'weight'), hidden_paths=(('h',),))
    >>> print(record)
    [info] relation_included (weight W.weight; hidden h): traced
    """

    kind: DiagnosticKind
    level: DiagnosticLevel
    message: str
    primitive: str | None = None
    weight_path: tuple[str, ...] | None = None
    hidden_paths: tuple[tuple[str, ...], ...] = ()
    context: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def __str__(self) -> str:
        where = []
        if self.weight_path is not None:
            where.append("weight " + format_path(self.weight_path))
        if self.hidden_paths:
            where.append("hidden " + ", ".join(format_path(p) for p in self.hidden_paths))
        location = f" ({'; '.join(where)})" if where else ""
        return f"[{self.level.value}] {self.kind.value}{location}: {self.message}"


class DiagnosticCollector:
    """Collects the records emitted inside one :func:`diagnostic_context`."""

    def __init__(self) -> None:
        self._records: list[CompilationRecord] = []

    def add(self, record: CompilationRecord) -> None:
        self._records.append(record)

    def records(self) -> tuple[CompilationRecord, ...]:
        return tuple(self._records)


class _Local(threading.local):
    def __init__(self) -> None:
        self.stack: list[DiagnosticCollector] = []


_LOCAL = _Local()


@contextlib.contextmanager
def diagnostic_context() -> Iterator[DiagnosticCollector]:
    """Collect the compilation records emitted in this block (thread-local, nestable).

    Examples
    --------
    >>> from braintrace.compiler import diagnostics as d
    >>> with d.diagnostic_context() as collector:
    ...     _ = d.emit(d.DiagnosticKind.STATE_MISMATCH, d.DiagnosticLevel.INFO, 'example')
    >>> len(collector.records())
    1
    """
    collector = DiagnosticCollector()
    _LOCAL.stack.append(collector)
    try:
        yield collector
    finally:
        _LOCAL.stack.pop()


def emit(
    kind: DiagnosticKind,
    level: DiagnosticLevel,
    message: str,
    *,
    primitive: str | None = None,
    weight_path: tuple[str, ...] | None = None,
    hidden_paths=(),
    context: Mapping[str, Any] | None = None,
    also_warn: bool = True,
) -> CompilationRecord:
    """Create a record, add it to the active collector and (for warnings) warn."""
    record = CompilationRecord(
        kind=kind,
        level=level,
        message=message,
        primitive=primitive,
        weight_path=None if weight_path is None else tuple(weight_path),
        hidden_paths=tuple(tuple(p) for p in hidden_paths),
        context=dict(context or {}),
    )
    if _LOCAL.stack:
        _LOCAL.stack[-1].add(record)
    if also_warn and level is not DiagnosticLevel.INFO:
        warnings.warn(str(record), UserWarning, stacklevel=3)
    return record
