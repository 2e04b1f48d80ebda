# Copyright 2026 The braintrace authors. Licensed under the Apache License, Version 2.0.
"""States whose shapes are fixed by the first value they observe (coding path only).

A :class:`CodingLayer` may only learn its code dimension, or the shapes of its trace, on the
first call, possibly while a ``brainstate.transform.jit`` step or an online learner's
compilation is tracing. :meth:`RefitMixin.refit` then gives the state a concrete value of
the new shape *as if it had held it before the trace began* (the value is set without being
recorded), so the traced step reads and writes a state of one shape.

A tracer that snapshots every state before tracing and writes the snapshots back afterwards
(as :func:`braintrace.extract_module_info` does) would undo that: it writes back the
pre-refit placeholder. The placeholder is private to the state, so the one object a refitted
state refuses to be overwritten with is exactly the value it held before its latest refit.
"""

from __future__ import annotations

from typing import Any

__all__ = ["RefitMixin"]


class RefitMixin:
    """Mixin for ``brainstate.State`` subclasses: :meth:`refit` and the superseded-value guard."""

    def refit(self, value: Any) -> None:
        """Replace the value without recording it; the old value object can no longer be written back.

        ``value`` must be concrete (NumPy or non-traced arrays).
        """
        vars(self)["_superseded"] = vars(self).get("_value")
        vars(self)["_value"] = value

    def _write_value(self, v: Any) -> None:
        if v is not None and v is vars(self).get("_superseded"):
            return  # a stale pre-refit snapshot written back by a tracer: keep the refitted value
        super()._write_value(v)
