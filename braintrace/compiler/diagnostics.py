# Copyright 2026 The braintrace authors. Licensed under the Apache License, Version 2.0.
"""Structured records of every decision the compiler makes.

Each pass reports what it decided (a relation included, a weight excluded and why, two
hidden states merged into one group, a coupling dropped) as a :class:`CompilationRecord`
and returns its records next to its value in a :class:`PassResult`. Passes never warn:
:func:`~braintrace.compile_etrace_graph` concatenates the records into
``ETraceGraph.diagnostics`` (where ``ETraceGraph.explain`` filters them), issues one
:mod:`warnings` warning per ``warning``-level record at the end, and hands the records to
the innermost active :func:`diagnostic_context`, if any.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import enum
import warnings
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

__all__ = [
    "format_path",
    "DiagnosticKind",
    "DiagnosticLevel",
    "CompilationRecord",
    "DiagnosticCollector",
    "PassResult",
    "deliver_records",
    "diagnostic_context",
    "new_record",
    "publish_records",
    "warn_records",
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
    CROSS_GROUP_CASCADE = "cross_group_cascade"
    TRANSITION_NOT_ELEMENTWISE = "transition_not_elementwise"
    TAIL_NOT_ELEMENTWISE = "tail_not_elementwise"
    OUTPUT_BYPASSES_HIDDEN = "output_bypasses_hidden"
    WEIGHT_IN_CONTROL_FLOW = "weight_in_control_flow"
    COND_IF_CONVERTED = "cond_if_converted"
    PRIMITIVE_INSIDE_CONTROL_FLOW = "primitive_inside_control_flow"
    SCAN_UNROLLED = "scan_unrolled"
    SCAN_UNROLL_SKIPPED = "scan_unroll_skipped"
    SCAN_DESCENT_APPLIED = "scan_descent_applied"
    SCAN_DESCENT_SKIPPED = "scan_descent_skipped"
    CONTROL_FLOW_OPAQUE_FWD = "control_flow_opaque_fwd"
    WEIGHT_IN_WHILE = "weight_in_while"
    STATE_MISMATCH = "state_mismatch"
    SNAP_PATTERN_CONSERVATIVE = "snap_pattern_conservative"
    SNAP_PATTERN_DEGENERATE = "snap_pattern_degenerate"


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
    """Collects the records of the compilations run inside one :func:`diagnostic_context`."""

    def __init__(self) -> None:
        self._records: list[CompilationRecord] = []

    def add(self, record: CompilationRecord) -> None:
        self._records.append(record)

    def records(self) -> tuple[CompilationRecord, ...]:
        return tuple(self._records)


@dataclasses.dataclass(frozen=True)
class PassResult[T]:
    """What a compiler pass returns: its value and the records of its decisions."""

    value: T
    records: tuple[CompilationRecord, ...] = ()


def new_record(
    kind: DiagnosticKind,
    level: DiagnosticLevel,
    message: str,
    *,
    primitive: str | None = None,
    weight_path: tuple[str, ...] | None = None,
    hidden_paths: Iterable[tuple[str, ...]] = (),
    context: Mapping[str, Any] | None = None,
) -> CompilationRecord:
    """A :class:`CompilationRecord` with its paths and context normalised to tuples and a dict."""
    return CompilationRecord(
        kind=kind,
        level=level,
        message=message,
        primitive=primitive,
        weight_path=None if weight_path is None else tuple(weight_path),
        hidden_paths=tuple(tuple(p) for p in hidden_paths),
        context=dict(context or {}),
    )


_COLLECTORS: contextvars.ContextVar[tuple[DiagnosticCollector, ...]] = contextvars.ContextVar(
    "braintrace_diagnostic_collectors", default=())


@contextlib.contextmanager
def diagnostic_context() -> Iterator[DiagnosticCollector]:
    """Collect the records of every compilation run in this block (nestable).

    The innermost active context receives the records; a compilation that fails still
    hands over the records made before the failure, including the ``error`` record.

    Examples
    --------
    >>> import brainstate, jax.numpy as jnp
    >>> import braintrace
    >>> cell = braintrace.nn.ValinaRNNCell(3, 4)
    >>> _ = brainstate.nn.init_all_states(cell)
    >>> with braintrace.diagnostic_context() as collector:
    ...     graph = braintrace.compile_etrace_graph(cell, jnp.ones(3))
    >>> collector.records() == graph.diagnostics
    True
    """
    collector = DiagnosticCollector()
    token = _COLLECTORS.set(_COLLECTORS.get() + (collector,))
    try:
        yield collector
    finally:
        _COLLECTORS.reset(token)


def publish_records(records: Iterable[CompilationRecord]) -> None:
    """Hand ``records`` to the innermost active :func:`diagnostic_context`, if any."""
    collectors = _COLLECTORS.get()
    if collectors:
        for record in records:
            collectors[-1].add(record)


def warn_records(records: Iterable[CompilationRecord], stacklevel: int = 2) -> None:
    """Issue one ``UserWarning`` per ``warning``-level record (``stacklevel`` as for :func:`warnings.warn`)."""
    for record in records:
        if record.level is DiagnosticLevel.WARNING:
            warnings.warn(str(record), UserWarning, stacklevel=stacklevel + 1)


def deliver_records(records: Iterable[CompilationRecord], stacklevel: int = 2) -> None:
    """:func:`publish_records`, then :func:`warn_records` (for a public pass run on its own)."""
    records = tuple(records)
    publish_records(records)
    warn_records(records, stacklevel=stacklevel + 1)
