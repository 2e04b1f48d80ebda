# Copyright 2026 The braintrace authors. Licensed under the Apache License, Version 2.0.
"""OSTL with H (``OSTLRecurrent``): D-RTRL traces rolled by the coupled per-position block.

The graph is compiled with ``include_recurrent_mixing=True``: the recurrent op (for example
``h → matmul(h, W_rec) → h``) is traced into the group transition, so the group Jacobian
``J = ∂h_t/∂h_{t-1}`` includes the recurrent weight. The trace of every relation and group
follows

    ε_t = D_t ε_{t-1} + (∂h_t/∂y_t) ⊗ x_t,   D_t[p] = J_t[p, :, p, :]   (S×S per position),

the per-position block of the full Jacobian (the ``coupled`` recurrence scope). On a dense
tanh RNN, where the diagonal scope sees ``D = 0``, the block keeps ``(1 - h_p²) W_rec[p, p]``;
it is exact RTRL only when ``J`` is block-diagonal. The Jacobian transient is ``O((P·S)²)``
per group and step; the trace memory is that of D-RTRL, ``O(B·I·O·S)`` per dense relation.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

from .d_rtrl import ParamDimRule, ParamDimVjpAlgorithm
from .options import DEFAULT_SNAP_MAX_JACOBIAN_ELEMENTS

__all__ = ["CoupledBlockRule", "OSTLRecurrent"]


@dataclasses.dataclass(frozen=True)
class CoupledBlockRule(ParamDimRule):
    """The maths of D-RTRL traces under the coupled scope (pure methods, no state).

    The Jacobian handed over in ``q.jacobians`` is already the coupled block (the graph is
    compiled with recurrent mixing), so the recursion, the state (``{TraceKey: trace}``) and
    the contraction are D-RTRL's (:class:`~braintrace.algorithms.d_rtrl.ParamDimRule`).

    Examples
    --------
    >>> from braintrace.algorithms.ostl_recurrent import CoupledBlockRule
    >>> CoupledBlockRule().same_step_gradients
    True
    """

    #: Descended scans and cascade traces assume the diagonal scope.
    supports_scan_descent: ClassVar[bool] = False
    supports_cascade: ClassVar[bool] = False


class OSTLRecurrent(ParamDimVjpAlgorithm):
    """OSTL with H: D-RTRL traces rolled by the coupled per-position Jacobian block.

    The ``coupled`` recurrence scope of :class:`~braintrace.ETraceConfig`. The recurrent op
    is traced into each group's transition (``include_recurrent_mixing=True``) and the trace
    rolls with ``D[p] = J[p, :, p, :]``. On the full window (multi-step, one window) it equals
    BPTT like every rule; single-step it is closer to BPTT than D-RTRL whenever a recurrent
    weight mixes positions, and equal to D-RTRL when the transition is already element-wise.

    Parameters
    ----------
    model : brainstate.nn.Module
        The model; ``model.update(*inputs)`` runs one step.
    name : str, optional
        Module name.
    vjp_method, fast_solve, trace_dtype, chunked_trace, control_flow, config, random_feedback_key, snap_max_jacobian_elements
        The published learner options, see :class:`~braintrace.ETraceAlgorithm`.
    **kwargs
        ``vmap`` (see :func:`braintrace.compile`).

    Notes
    -----
    The full Jacobian ``(P·S)²`` of each group is materialised per step (forward mode), so
    the scope suits groups of up to a few thousand positions.

    References
    ----------
    Bohnstingl et al. (2022), *Online spatio-temporal learning in deep neural networks*.

    Examples
    --------
    >>> import brainstate, jax.numpy as jnp
    >>> import braintrace
    >>> cell = braintrace.nn.ValinaRNNCell(3, 4, activation='tanh')
    >>> learner = braintrace.compile(cell, 'ostl_recurrent', jnp.ones(3))
    >>> learner.regime, learner.graph.hidden_groups[0].is_diagonal_recurrence
    ('recurrent', False)
    >>> grads = learner.etrace_grad(jnp.ones((4, 3)), step_fn=lambda x: jnp.sum(learner(x) ** 2))
    >>> sorted(grads)
    [('W', 'weight')]
    """

    regime = "recurrent"

    def __init__(self, model, name=None, vjp_method: str = "single-step", fast_solve: bool = True,
                 trace_dtype=None, chunked_trace: bool = True, control_flow=None, config=None,
                 random_feedback_key=None, snap_max_jacobian_elements: int = DEFAULT_SNAP_MAX_JACOBIAN_ELEMENTS,
                 **kwargs):
        super().__init__(model, name, vjp_method=vjp_method, fast_solve=fast_solve, trace_dtype=trace_dtype,
                         chunked_trace=chunked_trace, control_flow=control_flow, config=config,
                         random_feedback_key=random_feedback_key,
                         snap_max_jacobian_elements=snap_max_jacobian_elements, **kwargs)
        self.trace_rule = CoupledBlockRule()

    def graph_options(self) -> dict:
        return {"include_recurrent_mixing": True}
