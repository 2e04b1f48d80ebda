# Copyright 2026 The braintrace authors. Licensed under the Apache License, Version 2.0.
"""D-RTRL: parameter-dimension eligibility traces with a diagonal hidden Jacobian.

For every relation ``r`` (an ETP op) and hidden group ``g`` it feeds, the trace
``ε_{r,g}`` has shape ``(*V, *C, S)`` (see :mod:`braintrace.ops.primitive`) and follows

    ε_t = D_t ε_{t-1} + (∂h_t/∂y_t) ⊗ x_t,

where ``D_t`` is the per-position ``S×S`` Jacobian of the group's transition. The gradient
of step ``t`` is ``Σ_g <∂L_t/∂h_t, ε_t>`` plus the exact same-step gradient of parameters
that reach the output directly. It equals BPTT when every weight feeds one group, the
recurrence is element-wise and the op-to-hidden tail is element-wise; a recurrent weight
that mixes positions (a dense Elman RNN) is learned through the instantaneous term only.
Memory per dense ``I→O`` relation: ``O(B·I·O·S)``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from ..ops.primitive import etp_rule_of
from .base import ETraceAlgorithm
from .executor import apply_jacobian

__all__ = ["ParamDimVjpAlgorithm", "D_RTRL"]


def trace_key(relation_index: int, group_index: int) -> str:
    return f"{relation_index}:{group_index}"


def zero_param_trace(relation, x, df, effective) -> dict:
    """Zero parameter-dimension traces ``{key: (*V, *C, S)}`` for one relation and group."""
    rule = etp_rule_of(relation.primitive)
    shapes = jax.eval_shape(lambda x_, df_, eff: rule.trace_increment(x_, df_, eff, relation.eqn_params),
                            x, df, effective)
    return {k: jnp.zeros(s.shape, s.dtype) for k, s in shapes.items()}


def folded_increment(q, relation_index: int, group_position: int):
    """The increment of an op inside a descended scan (folded over its substeps), or None."""
    if not q.folded or q.folded[relation_index] is None:
        return None
    return q.folded[relation_index][group_position]


def roll_param_trace(relation, group, trace, x, df, effective, jacobian, increment=None) -> dict:
    """One D-RTRL step of a relation's trace for one group: ``ε ← D ε + (∂h/∂y) ⊗ x``.

    ``increment`` replaces ``(∂h/∂y) ⊗ x`` when given (an op inside a descended scan).
    """
    rule = etp_rule_of(relation.primitive)
    if increment is None:
        increment = rule.trace_increment(x, df, effective, relation.eqn_params)
    if rule.param_trace_roll is not None:  # an op with its own trace layout (sparse)
        rolled = rule.param_trace_roll(trace, jacobian, **relation.eqn_params)
        return {k: (rolled[k] + increment[k]).astype(t.dtype) for k, t in trace.items()}
    rank = len(group.varshape)
    return {k: (apply_jacobian(jacobian, t, rank) + increment[k]).astype(t.dtype) for k, t in trace.items()}


class ParamDimVjpAlgorithm(ETraceAlgorithm):
    """Diagonal RTRL with parameter-dimension traces (``braintrace.D_RTRL``).

    Parameters
    ----------
    model : brainstate.nn.Module
        The model; ``model.update(*inputs)`` runs one step.
    name : str, optional
        Module name.
    vmap : bool
        Lanes along the leading axis over an unbatched graph (see :func:`braintrace.compile`).
    vjp_method, fast_solve, trace_dtype, chunked_trace, control_flow, config, random_feedback_key, snap_max_jacobian_elements
        The published learner options, see :class:`~braintrace.ETraceAlgorithm`.

    References
    ----------
    Zucchet et al. (2023), *Online learning of long-range dependencies*; Murray (2019),
    *Local online learning in recurrent networks with random feedback (RFLO)*.

    Examples
    --------
    >>> import brainstate, jax.numpy as jnp
    >>> import braintrace
    >>> cell = braintrace.nn.GRUCell(3, 4)
    >>> _ = brainstate.nn.init_all_states(cell)
    >>> learner = braintrace.D_RTRL(cell)
    >>> _ = learner.compile_graph(jnp.ones(3))
    >>> def loss():
    ...     return jnp.sum(learner(jnp.ones(3)) ** 2)
    >>> grads = brainstate.transform.grad(loss, grad_states=learner.param_states)()
    >>> sorted(grads)
    [('Wh', 'weight'), ('Wr', 'weight'), ('Wz', 'weight')]
    """

    #: Ops inside a descended long scan are trained (their increments are folded over the substeps).
    supports_scan_descent = True

    def init_traces(self, graph, q) -> dict:
        traces = {}
        for r, rel in enumerate(graph.hidden_param_op_relations):
            for i, group in enumerate(rel.hidden_groups):
                folded = folded_increment(q, r, i)
                traces[trace_key(r, group.index)] = (
                    zero_param_trace(rel, q.x[r], q.df[r][i], q.effective[r]) if folded is None
                    else {k: jnp.zeros(s.shape, s.dtype) for k, s in folded.items()})
        return traces

    def roll(self, traces, q, step) -> dict:
        new = {}
        for r, rel in enumerate(self.graph.hidden_param_op_relations):
            for i, group in enumerate(rel.hidden_groups):
                key = trace_key(r, group.index)
                new[key] = roll_param_trace(rel, group, traces[key], q.x[r], q.df[r][i], q.effective[r],
                                            q.jacobians[group.index], increment=folded_increment(q, r, i))
        return new

    def solve(self, traces, signals, q, step) -> list:
        out = []
        for r, rel in enumerate(self.graph.hidden_param_op_relations):
            rule = etp_rule_of(rel.primitive)
            grads = {}
            for group in rel.hidden_groups:
                contribution = rule.trace_contract(traces[trace_key(r, group.index)], signals[group.index],
                                                   q.effective[r], rel.eqn_params)
                for k, g in contribution.items():
                    grads[k] = g if k not in grads else grads[k] + g
            out.append(grads)
        return out


D_RTRL = ParamDimVjpAlgorithm
