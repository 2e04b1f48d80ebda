# Copyright 2026 The braintrace authors. Licensed under the Apache License, Version 2.0.
"""Trace storage in a narrower dtype (the ``trace_dtype`` learner option).

With ``trace_dtype=jnp.bfloat16`` (or ``float16``, ...) the rule's state lives in that dtype
between steps, which divides the trace memory by the ratio of item sizes. Every computation
still runs in the compute dtype: before ``roll`` and ``solve`` each floating leaf is cast up
(to at least ``float32``), and the rolled state is cast back down for storage. So each step
adds one rounding of the state to the storage precision, and nothing else changes.
Non-floating leaves of a state (UORO's PRNG key and step counter) are never cast.

The option is generic: :func:`with_trace_dtype` wraps any
:class:`~braintrace.algorithms.trace_rule.TraceRule`, and the learner builds its single-step
and window steps from the wrapped rule.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp

from .trace_rule import TraceRule

__all__ = ["StoredTraceRule", "check_trace_dtype", "with_trace_dtype"]

#: The narrowest dtype the rules compute in: storage narrower than it is cast up to it.
COMPUTE_DTYPE = jnp.dtype(jnp.float32)


def check_trace_dtype(value):
    """``value`` as a floating ``numpy.dtype`` (``None`` stays ``None``: store in the compute dtype).

    Raises
    ------
    ValueError
        If ``value`` is not a dtype, or not a real floating one.

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> from braintrace.algorithms.trace_storage import check_trace_dtype
    >>> check_trace_dtype(jnp.bfloat16), check_trace_dtype(None)
    (dtype(bfloat16), None)
    """
    if value is None:
        return None
    try:
        dtype = jnp.dtype(value)
    except TypeError:
        dtype = None
    if dtype is None or not jnp.issubdtype(dtype, jnp.floating):
        raise ValueError(
            f"`trace_dtype={value!r}`: expected None or a real floating dtype for trace storage (for example "
            "jnp.bfloat16, jnp.float16 or jnp.float32)."
        )
    return dtype


def _is_float(leaf) -> bool:
    return jnp.issubdtype(jnp.result_type(leaf), jnp.floating)


def _to_storage(state, dtype):
    return jax.tree.map(lambda a: jnp.asarray(a).astype(dtype) if _is_float(a) else a, state)


def _to_compute(state):
    def up(a):
        if not _is_float(a):
            return a
        return jnp.asarray(a).astype(jnp.promote_types(jnp.result_type(a), COMPUTE_DTYPE))

    return jax.tree.map(up, state)


@dataclasses.dataclass(frozen=True, eq=False)
class StoredTraceRule(TraceRule):
    """``inner`` with its state stored in ``storage_dtype`` between steps.

    Parameters
    ----------
    inner : TraceRule
        The learning rule; it sees its state in the compute dtype.
    storage_dtype : numpy.dtype
        The floating dtype of the stored state.

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> from braintrace.algorithms.d_rtrl import ParamDimRule
    >>> from braintrace.algorithms.trace_storage import with_trace_dtype
    >>> rule = with_trace_dtype(ParamDimRule(), jnp.bfloat16)
    >>> rule.storage_dtype, rule.same_step_gradients
    (dtype(bfloat16), True)
    """

    inner: TraceRule = None
    storage_dtype: Any = None

    # The class-level flags of the contract are the inner rule's.
    @property
    def same_step_gradients(self) -> bool:
        return self.inner.same_step_gradients

    @property
    def supports_scan_descent(self) -> bool:
        return self.inner.supports_scan_descent

    @property
    def supports_cascade(self) -> bool:
        return self.inner.supports_cascade

    def __getattr__(self, name):
        # Rule-specific attributes (EProp's feedback matrices) are the inner rule's.
        if name in ("inner", "storage_dtype") or name.startswith("__"):
            raise AttributeError(name)
        return getattr(self.inner, name)

    def init(self, ctx, q):
        return _to_storage(self.inner.init(ctx, q), self.storage_dtype)

    def roll(self, ctx, state, q, step):
        return _to_storage(self.inner.roll(ctx, _to_compute(state), q, step), self.storage_dtype)

    def solve(self, ctx, state, signals, q, step) -> list:
        return self.inner.solve(ctx, _to_compute(state), signals, q, step)

    def learning_signal(self, ctx, signals, extra) -> list:
        return self.inner.learning_signal(ctx, signals, extra)

    def traces_of(self, ctx, state, relation_index: int) -> dict:
        """The inner rule's traces, as stored (in ``storage_dtype``)."""
        return self.inner.traces_of(ctx, state, relation_index)

    def __repr__(self) -> str:
        return f"{self.inner!r} stored as {self.storage_dtype}"


def with_trace_dtype(rule: TraceRule, trace_dtype) -> TraceRule:
    """``rule`` storing its state in ``trace_dtype`` (``rule`` itself when ``trace_dtype`` is None)."""
    dtype = check_trace_dtype(trace_dtype)
    if dtype is None:
        return rule
    return StoredTraceRule(rule, dtype)
