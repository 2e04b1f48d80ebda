# Copyright 2026 The braintrace authors. Licensed under the Apache License, Version 2.0.
"""The constructor options every learner accepts, checked in one place.

Research code written for braintrace 0.2.8 passes options such as ``vjp_method``,
``fast_solve`` or ``trace_dtype`` to every learner. :class:`LearnerOptions` accepts the same
names and defaults. An option whose behaviour this version does not provide yet raises
:class:`~braintrace.NotSupportedError` at construction, naming the option and the value, so
that a script never runs with a silently different algorithm.
"""

from __future__ import annotations

import dataclasses
import numbers
from typing import Any

from .. import _errors
from ..compiler.snap_pattern import DEFAULT_SNAP_MAX_JACOBIAN_ELEMENTS

__all__ = ["LearnerOptions", "VJP_METHODS"]

VJP_METHODS = ("single-step", "multi-step")


@dataclasses.dataclass(frozen=True)
class LearnerOptions:
    """Validated learner options (the published names and defaults).

    Parameters
    ----------
    vjp_method : {'single-step', 'multi-step'}
        How the learning signal is obtained. ``'single-step'`` (the default) takes the VJP of
        each step's loss; ``'multi-step'`` runs exact reverse mode inside each window of steps
        (``MultiStepData`` inputs, ``etrace_grad(..., chunk_size=k)``) and contracts the
        hidden-state cotangent at window entry with the traces (see
        :mod:`braintrace.algorithms.windows`).
    fast_solve : bool
        Accepted for compatibility (checked to be a bool); it changes nothing in this
        version. In braintrace 0.2.8 it chooses between closed-form solve kernels (``True``)
        and a slower path vmapped over the state axis (``False``) that compute the same
        contraction. Here every rule has one contraction (the closed-form per-op
        ``trace_contract`` / ``io_gradient``), used for either value: ``True`` and ``False``
        give bit-identical gradients.
    trace_dtype : None or floating dtype
        The dtype the traces are stored in between steps (for example ``jnp.bfloat16`` halves
        the trace memory of a float32 model). ``None`` (the default) stores them in the dtype
        the rule computes in. Every ``roll`` and ``solve`` still computes in at least
        ``float32``: the stored state is cast up before and the rolled state cast back after,
        so each step adds one rounding to the storage precision. Integer leaves of a rule's
        state (UORO's key and counter) are never cast. Normalised to a ``numpy.dtype``; see
        :mod:`braintrace.algorithms.trace_storage`.
    chunked_trace : bool
        Accepted for compatibility (checked to be a bool); it changes nothing in this
        version. In braintrace 0.2.8, ``True`` rolls the D-RTRL trace over a multi-step window
        in closed form (suffix products of the per-step Jacobians by an associative scan), which
        equals the step-by-step roll up to round-off. Here a window's traces are always rolled
        step by step inside the window's scan (the recursion of single-step calls), for either
        value: ``True`` and ``False`` give bit-identical traces and gradients.
    control_flow : ControlFlowPolicy or None
        How control flow in the step is canonicalised (``None``: the default policy); passed
        to :func:`~braintrace.compile_etrace_graph`.
    config : None
        An ``ETraceConfig``; only ``None`` (the learner's own rule) is supported.
    random_feedback_key : optional
        Key of a random-feedback learning signal; kept for rules that use it.
    snap_max_jacobian_elements : int
        Size limit of SnAp Jacobians; a positive int, kept for rules that use it.

    Examples
    --------
    >>> from braintrace.algorithms.options import LearnerOptions
    >>> LearnerOptions().vjp_method
    'single-step'
    >>> LearnerOptions(vjp_method='multi-step').vjp_method
    'multi-step'
    >>> import jax.numpy as jnp
    >>> LearnerOptions(trace_dtype=jnp.bfloat16).trace_dtype
    dtype(bfloat16)
    """

    vjp_method: str = "single-step"
    fast_solve: bool = True
    trace_dtype: Any = None
    chunked_trace: bool = True
    control_flow: Any = None
    config: Any = None
    random_feedback_key: Any = None
    snap_max_jacobian_elements: int = DEFAULT_SNAP_MAX_JACOBIAN_ELEMENTS

    def __post_init__(self):
        if self.vjp_method not in VJP_METHODS:
            raise ValueError(f"`vjp_method` must be one of {list(VJP_METHODS)}; got {self.vjp_method!r}.")
        for name in ("fast_solve", "chunked_trace"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"`{name}` must be a bool; got {getattr(self, name)!r}.")
        from ..compiler.control_flow_policy import ControlFlowPolicy

        if self.control_flow is not None and not isinstance(self.control_flow, ControlFlowPolicy):
            raise _errors.NotSupportedError(
                f"`control_flow={self.control_flow!r}`: expected None or a braintrace.ControlFlowPolicy."
            )
        from .trace_storage import check_trace_dtype

        object.__setattr__(self, "trace_dtype", check_trace_dtype(self.trace_dtype))
        if self.config is not None:
            raise _errors.NotSupportedError(
                f"`config={self.config!r}`: an ETraceConfig is not supported in this version; leave "
                "`config` at None."
            )
        value = self.snap_max_jacobian_elements
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value <= 0:
            raise ValueError(f"`snap_max_jacobian_elements` must be a positive int; got {value!r}.")
