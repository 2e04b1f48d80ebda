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

from ..ops.primitive import etp_rule_of
from .d_rtrl import ParamDimVjpAlgorithm, roll_param_trace, zero_param_trace
from .options import DEFAULT_SNAP_MAX_JACOBIAN_ELEMENTS
from .trace_rule import TraceRule

__all__ = ["CoupledBlockRule", "OSTLRecurrent"]


def add_gradients(total: dict, contribution: dict) -> dict:
    """Sum per-key gradients (tied weights and several groups add up)."""
    for k, g in contribution.items():
        total[k] = g if k not in total else total[k] + g
    return total


@dataclasses.dataclass(frozen=True)
class CoupledBlockRule(TraceRule):
    """The maths of D-RTRL traces under the coupled scope (pure methods, no state).

    The Jacobian handed over in ``q.jacobians`` is already the coupled block (the graph is
    compiled with recurrent mixing), so the recursion is D-RTRL's. State keys are
    ``(relation_index, group_index)``.

    Examples
    --------
    >>> from braintrace.algorithms.ostl_recurrent import CoupledBlockRule
    >>> CoupledBlockRule().same_step_gradients
    True
    """

    same_step_gradients = True

    def init(self, ctx, q) -> dict:
        return {
            (r, group.index): zero_param_trace(rel, q.x[r], q.df[r][i], q.effective[r])
            for r, rel in enumerate(ctx.graph.hidden_param_op_relations)
            for i, group in enumerate(rel.hidden_groups)
        }

    def roll(self, ctx, state, q, step) -> dict:
        new = {}
        for r, rel in enumerate(ctx.graph.hidden_param_op_relations):
            for i, group in enumerate(rel.hidden_groups):
                key = (r, group.index)
                new[key] = roll_param_trace(rel, group, state[key], q.x[r], q.df[r][i], q.effective[r],
                                            q.jacobians[group.index])
        return new

    def solve(self, ctx, state, signals, q, step) -> list:
        out = []
        for r, rel in enumerate(ctx.graph.hidden_param_op_relations):
            rule = etp_rule_of(rel.primitive)
            grads: dict = {}
            for group in rel.hidden_groups:
                add_gradients(grads, rule.trace_contract(state[(r, group.index)], signals[group.index],
                                                         q.effective[r], rel.eqn_params))
            out.append(grads)
        return out

    def learning_signal(self, ctx, signals, extra) -> list:
        return list(signals)


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
