# Copyright 2026 The braintrace authors. Licensed under the Apache License, Version 2.0.
"""Old-style learner hooks wrapped into a :class:`~braintrace.algorithms.trace_rule.TraceRule`.

Before the rule contract, a learner subclass defined ``init_traces(graph, q)``,
``roll(traces, q, step)``, ``solve(traces, signals, q, step)``, ``learning_signal(signals,
extra)`` and the class attribute ``same_step_gradients`` on itself, reading ``self.graph``.
:func:`legacy_rule_of` keeps such subclasses (user code) working: it wraps the hooks the
subclass defines, and falls back to the learner's own rule for the others. The wrapped hooks
read the learner, so they are pure only as far as the subclass's code is.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from .trace_rule import TraceRule

LEGACY_HOOKS = ("init_traces", "roll", "solve", "learning_signal")


def defined_legacy_hooks(learner) -> tuple:
    """The old-style hooks the learner's class defines (none for a learner on the contract)."""
    return tuple(name for name in LEGACY_HOOKS if callable(getattr(type(learner), name, None)))


@dataclasses.dataclass(frozen=True, eq=False)
class _LegacyHooksRule(TraceRule):
    """Calls the learner's old-style hooks; the others go to ``fallback``."""

    learner: Any = None
    fallback: TraceRule | None = None
    hooks: tuple = ()

    @property
    def same_step_gradients(self) -> bool:
        value = getattr(type(self.learner), "same_step_gradients", None)
        if value is None:
            return True if self.fallback is None else self.fallback.same_step_gradients
        return bool(value)

    def _missing(self, hook: str):
        raise NotImplementedError(
            f"`{type(self.learner).__name__}` defines the old-style hooks {list(self.hooks)} but not `{hook}`, "
            "and has no `trace_rule` to take it from. Define every hook, or better write a "
            "`braintrace.algorithms.trace_rule.TraceRule` and set `self.trace_rule` in `__init__`."
        )

    def init(self, ctx, q):
        if "init_traces" in self.hooks:
            return self.learner.init_traces(ctx.graph, q)
        return self.fallback.init(ctx, q) if self.fallback is not None else self._missing("init_traces")

    def roll(self, ctx, state, q, step):
        if "roll" in self.hooks:
            return self.learner.roll(state, q, step)
        return self.fallback.roll(ctx, state, q, step) if self.fallback is not None else self._missing("roll")

    def solve(self, ctx, state, signals, q, step):
        if "solve" in self.hooks:
            return self.learner.solve(state, signals, q, step)
        if self.fallback is None:
            self._missing("solve")
        return self.fallback.solve(ctx, state, signals, q, step)

    def learning_signal(self, ctx, signals, extra):
        if "learning_signal" in self.hooks:
            return self.learner.learning_signal(signals, extra)
        if self.fallback is None:
            return list(signals)
        return self.fallback.learning_signal(ctx, signals, extra)

    def traces_of(self, ctx, state, relation_index):
        # Old-style states were keyed "r:g"; plain (r, g) keys are read by the default.
        if isinstance(state, dict) and any(isinstance(k, str) for k in state):
            out = {}
            for key, value in state.items():
                parts = key.split(":") if isinstance(key, str) else ()
                if len(parts) == 2 and all(p.isdigit() for p in parts) and int(parts[0]) == relation_index:
                    out[(int(parts[0]), int(parts[1]))] = value
            return out
        if self.fallback is not None and "init_traces" not in self.hooks:
            return self.fallback.traces_of(ctx, state, relation_index)
        return super().traces_of(ctx, state, relation_index)


def legacy_rule_of(learner, fallback: TraceRule | None):
    """``fallback`` itself when the learner defines no old-style hook, else the wrapping rule."""
    hooks = defined_legacy_hooks(learner)
    if not hooks and getattr(type(learner), "same_step_gradients", None) is None:
        return fallback
    return _LegacyHooksRule(learner=learner, fallback=fallback, hooks=hooks)
