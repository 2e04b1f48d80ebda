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


class ParamDimVjpAlgorithm(ETraceAlgorithm):
    """Diagonal RTRL with parameter-dimension traces (``braintrace.D_RTRL``).

    Parameters
    ----------
    model : brainstate.nn.Module
        The model; ``model.update(*inputs)`` runs one step.
    vmap : bool
        Lanes along the leading axis over an unbatched graph (see :func:`braintrace.compile`).
    name : str, optional
        Module name.

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

    def init_traces(self, graph, q) -> dict:
        traces = {}
        for r, rel in enumerate(graph.hidden_param_op_relations):
            rule = etp_rule_of(rel.primitive)
            for i, group in enumerate(rel.hidden_groups):
                shapes = jax.eval_shape(
                    lambda x, df, eff, rule=rule, rel=rel: rule.trace_increment(x, df, eff, rel.eqn_params),
                    q.x[r], q.df[r][i], q.effective[r])
                traces[trace_key(r, group.index)] = {k: jnp.zeros(s.shape, s.dtype) for k, s in shapes.items()}
        return traces

    def roll(self, traces, q, step) -> dict:
        new = {}
        for r, rel in enumerate(self.graph.hidden_param_op_relations):
            rule = etp_rule_of(rel.primitive)
            for i, group in enumerate(rel.hidden_groups):
                key = trace_key(r, group.index)
                increment = rule.trace_increment(q.x[r], q.df[r][i], q.effective[r], rel.eqn_params)
                jac = q.jacobians[group.index]
                new[key] = {
                    k: (apply_jacobian(jac, traces[key][k], len(group.varshape)) + increment[k]).astype(traces[key][k].dtype)
                    for k in traces[key]
                }
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
