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

import dataclasses
from typing import ClassVar

import jax
import jax.numpy as jnp

from ..ops.primitive import etp_rule_of
from ..compiler.cascade_plan import DEFAULT_CASCADE_MAX_ELEMENTS
from . import cascade
from .base import ETraceAlgorithm
from .executor import apply_jacobian
from .options import DEFAULT_SNAP_MAX_JACOBIAN_ELEMENTS
from .trace_rule import TraceKey, TraceRule, relation_groups

__all__ = ["ParamDimVjpAlgorithm", "D_RTRL", "ParamDimRule", "zero_param_trace", "roll_param_trace",
           "contract_param_traces"]


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


def contract_param_traces(ctx, traces, signals, q) -> list:
    """Per relation, ``Σ_g <signal_g, ε_{r,g}>`` as ``{key: gradient of the effective input}``.

    ``traces`` is ``{TraceKey: parameter-dimension trace}`` for every (relation, group).
    """
    out = []
    for r, rel in enumerate(ctx.graph.hidden_param_op_relations):
        rule = etp_rule_of(rel.primitive)
        grads = {}
        for group in rel.hidden_groups:
            contribution = rule.trace_contract(traces[TraceKey(r, group.index)], signals[group.index],
                                               q.effective[r], rel.eqn_params)
            for k, g in contribution.items():
                grads[k] = g if k not in grads else grads[k] + g
        out.append(grads)
    return out


@dataclasses.dataclass(frozen=True)
class ParamDimRule(TraceRule):
    """The D-RTRL rule: one parameter-dimension trace per (relation, group).

    State: ``{TraceKey(r, g): {op input key: (*V, *C, S)}}``, plus, for every coupling the
    compiler planned a cascade for (``graph.cascades``), ``{CascadeKey(r, u, d): {op input
    key: (*V_u, *C, N_d)}}`` (see :mod:`braintrace.algorithms.cascade`).

    Examples
    --------
    >>> import brainstate, jax.numpy as jnp
    >>> import braintrace
    >>> learner = braintrace.D_RTRL(braintrace.nn.GRUCell(3, 4))
    >>> _ = brainstate.nn.init_all_states(learner.model)
    >>> _ = learner.compile_graph(jnp.ones(3))
    >>> learner.trace_rule
    ParamDimRule()
    >>> sorted(learner.etrace.value)
    [TraceKey(relation=0, group=0), TraceKey(relation=1, group=0)]
    """

    #: Ops inside a descended long scan are trained (their increments are folded over the substeps).
    supports_scan_descent: ClassVar[bool] = True
    #: Cross-group couplings planned by the compiler get cascade traces.
    supports_cascade: ClassVar[bool] = True

    def _cascades_on(self, ctx) -> bool:
        return bool(ctx.graph.cascades) and self.supports_cascade

    def sensitivity(self, df, group):
        """The ``∂h/∂y`` the trace increment uses (D-RTRL: as given; SnAp widens it)."""
        return df

    def init(self, ctx, q) -> dict:
        traces = {}
        for r, rel, i, group in relation_groups(ctx):
            folded = folded_increment(q, r, i)
            traces[TraceKey(r, group.index)] = (
                zero_param_trace(rel, q.x[r], self.sensitivity(q.df[r][i], group), q.effective[r]) if folded is None
                else {k: jnp.zeros(s.shape, s.dtype) for k, s in folded.items()})
        if self._cascades_on(ctx):
            traces.update(cascade.zero_cascade_traces(ctx, traces))
        return traces

    def roll(self, ctx, state, q, step) -> dict:
        new = {}
        for r, rel, i, group in relation_groups(ctx):
            key = TraceKey(r, group.index)
            new[key] = roll_param_trace(rel, group, state[key], q.x[r], self.sensitivity(q.df[r][i], group),
                                        q.effective[r], q.jacobians[group.index],
                                        increment=folded_increment(q, r, i))
        if self._cascades_on(ctx):
            new.update(cascade.roll_cascade_traces(ctx, state, new, q))
        return new

    def solve(self, ctx, state, signals, q, step) -> list:
        grads = contract_param_traces(ctx, state, signals, q)
        if self._cascades_on(ctx):
            for per_rel, extra in zip(grads, cascade.cascade_gradients(ctx, state, state, signals, q), strict=True):
                for k, g in extra.items():
                    per_rel[k] = g if k not in per_rel else per_rel[k] + g
        return grads


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
    cascade_max_elements : int
        A traced group feeding a downstream group with memory (a leaky readout, a stacked
        leaky layer) gets a cascade trace when the downstream group has at most this many
        elements per batch row and the coupling is in the exact class (see
        :mod:`braintrace.compiler.cascade_plan`); 0 turns cascades off (the coupling is
        dropped, ``cross_group_coupling_dropped``). Rules that do not keep cascade traces
        (EProp, ThreeFactor, OSTLRecurrent) ignore it.

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

    def __init__(self, model, name: str | None = None, *, vmap: bool = False, vjp_method: str = "single-step",
                 fast_solve: bool = True, trace_dtype=None, chunked_trace: bool = True, control_flow=None,
                 config=None, random_feedback_key=None,
                 snap_max_jacobian_elements: int = DEFAULT_SNAP_MAX_JACOBIAN_ELEMENTS,
                 cascade_max_elements: int = DEFAULT_CASCADE_MAX_ELEMENTS):
        if isinstance(cascade_max_elements, bool) or not isinstance(cascade_max_elements, int) \
                or cascade_max_elements < 0:
            raise ValueError(f"`cascade_max_elements` must be an int >= 0; got {cascade_max_elements!r}.")
        super().__init__(model, name, vmap=vmap, vjp_method=vjp_method, fast_solve=fast_solve,
                         trace_dtype=trace_dtype, chunked_trace=chunked_trace, control_flow=control_flow,
                         config=config, random_feedback_key=random_feedback_key,
                         snap_max_jacobian_elements=snap_max_jacobian_elements)
        self.cascade_max_elements = cascade_max_elements
        self.trace_rule = ParamDimRule()

    def graph_options(self) -> dict:
        if not getattr(self.trace_rule, "supports_cascade", False):
            return {}
        return {"cascade_max_elements": getattr(self, "cascade_max_elements", DEFAULT_CASCADE_MAX_ELEMENTS)}


D_RTRL = ParamDimVjpAlgorithm
