# Copyright 2026 The braintrace authors. Licensed under the Apache License, Version 2.0.
"""Coding statistics: how hidden activity visits a codebook, observed while training runs.

Everything here is observe-only: values are coded after ``jax.lax.stop_gradient``, inside
the (jitted) step, as side outputs that never change what the model computes.

- :class:`SoftCode`, :class:`CodingTrace`: pytree containers of the statistics;
- :func:`soft_assign`, :class:`SoftAssignment`: soft assignment to ``K`` centers;
- :class:`Codebook`: centers in a non-trainable state, with an optional EMA k-means update;
- reducers (:func:`identity_reducer`, :func:`spatial_mean_reducer`,
  :class:`RandomProjection`, ...): the view of an activation that gets coded;
- :func:`coding_statistics`: the pure function that codes one hidden quantity;
- :class:`CodingLayer`: wraps a module and keeps the latest :class:`CodingTrace` of its
  output in a state, with switches, diagnostics hooks and summary statistics.
"""

from .codebook import Codebook, CodebookState
from .coding_layer import CodingLayer
from .coding_statistics import coding_statistics
from .coding_trace import CodingTrace
from .monitor import HiddenMonitor, monitor_hidden, summarize_trace
from .reducers import (
    RandomProjection,
    Reducer,
    chain_reducers,
    fail_open_reducer,
    identity_reducer,
    resolve_reducer,
    spatial_mean_reducer,
)
from .soft_assign import SoftAssignment, soft_assign, squared_distances
from .soft_code import SoftCode
from .trace_slot import TraceSlot, TraceSlotState

__all__ = [
    "HiddenMonitor",
    "Codebook",
    "CodebookState",
    "CodingLayer",
    "CodingTrace",
    "RandomProjection",
    "Reducer",
    "SoftAssignment",
    "SoftCode",
    "TraceSlot",
    "TraceSlotState",
    "chain_reducers",
    "coding_statistics",
    "fail_open_reducer",
    "identity_reducer",
    "monitor_hidden",
    "summarize_trace",
    "resolve_reducer",
    "soft_assign",
    "spatial_mean_reducer",
    "squared_distances",
]
