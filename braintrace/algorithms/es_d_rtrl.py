# Copyright 2026 The braintrace authors. Licensed under the Apache License, Version 2.0.
"""ES-D-RTRL / pp-prop: input/output-dimension (factorised) eligibility traces.

The parameter-shaped D-RTRL trace is approximated by an outer product ``ε ≈ ε_f ⊗ x̄`` of

* one input trace per distinct op input: ``x̄_t = α x̄_{t-1} + x_t``;
* one output trace per (relation, group): ``ε_f,t = α D_t ε_f,t-1 + (1 - α) ∂h_t/∂y_t``.

The gradient of step ``t`` contracts ``ε_f / (1 - α^{k+1})`` (bias correction after ``k``
earlier steps) with the learning signal into ``s`` (``y``-shaped) and pulls ``s`` back
through the op at input ``x̄``: for a dense op ``∇W = x̄ᵀ s``. Memory per dense relation is
``O(B·(I + O·S))`` instead of ``O(B·I·O·S)``. Relations without a data input (element-wise
parameters) keep their exact, already ``O(B·O·S)``, trace.
"""

from __future__ import annotations

import dataclasses
import numbers
from typing import NamedTuple

import jax
import jax.numpy as jnp

from ..ops.primitive import etp_rule_of
from .base import ETraceAlgorithm
from .d_rtrl import roll_param_trace, zero_param_trace
from .executor import _UNROLLED_JACOBIAN_STATES, apply_jacobian
from .options import DEFAULT_SNAP_MAX_JACOBIAN_ELEMENTS
from .trace_rule import TraceKey, TraceRule

__all__ = ["IODimVjpAlgorithm", "ES_D_RTRL", "OSTLFeedforward", "pp_prop", "decay_from", "IODimRule",
           "IODimState", "input_slots"]


def decay_from(decay_or_rank) -> float:
    """``α`` from a float decay in (0, 1) or an int rank ``n >= 1`` (``α = (n-1)/(n+1)``).

    Examples
    --------
    >>> from braintrace.algorithms.es_d_rtrl import decay_from
    >>> decay_from(0.9), decay_from(3)
    (0.9, 0.5)
    """
    if isinstance(decay_or_rank, bool):
        raise TypeError("`decay_or_rank` must be a float decay in (0, 1) or an int rank >= 1; got a bool.")
    if isinstance(decay_or_rank, numbers.Integral):
        if decay_or_rank < 1:
            raise ValueError(f"an integer `decay_or_rank` is a rank and must be >= 1; got {decay_or_rank}.")
        n = int(decay_or_rank)
        return (n - 1) / (n + 1)
    if isinstance(decay_or_rank, numbers.Real):
        value = float(decay_or_rank)
        if not 0.0 < value < 1.0:
            raise ValueError(f"a float `decay_or_rank` is a decay and must lie in (0, 1); got {value}.")
        return value
    raise TypeError(f"`decay_or_rank` must be a float or an int; got {type(decay_or_rank).__name__}.")


class IODimState(NamedTuple):
    """The pp-prop state.

    Attributes
    ----------
    inputs : dict
        ``{slot: x̄}``, one input trace per distinct op input (see :func:`input_slots`).
    outputs : dict
        ``{TraceKey(r, g): ε_f}`` of shape ``(*V, S)``; a relation without a data input
        (element-wise parameters) keeps its exact D-RTRL trace ``{op input key: array}``.
    """

    inputs: dict
    outputs: dict


def input_slots(graph) -> list:
    """Per relation, the index of its input trace (``None`` for relations without a data input).

    Relations that read the same var share one input trace, except ops with their own input
    representation (embedding's one-hot), which keep one slot each.
    """
    slots, by_relation = {}, []
    for r, rel in enumerate(graph.hidden_param_op_relations):
        if rel.x_var is None:
            by_relation.append(None)
            continue
        key = rel.x_var if etp_rule_of(rel.primitive).io_input is None else (rel.x_var, r)
        if key not in slots:
            slots[key] = len(slots)
        by_relation.append(slots[key])
    return by_relation


def _contract_states(trace, signal):
    """``Σ_s trace[..., s] · signal[..., s]`` over the stacked-state axis.

    For a few states (LSTM ``h``/``c``) this is unrolled: XLA:CPU runs a reduction over a
    trailing axis of 2 as a separate reduce, about 3 ms per 200 steps for a (16, 256, 2)
    trace (four per LSTM step, issue 14's profile), while the multiply-adds fuse.
    """
    n = trace.shape[-1]
    if n > _UNROLLED_JACOBIAN_STATES:  # the bound apply_jacobian unrolls up to
        return jnp.sum(trace * signal, axis=-1)
    out = trace[..., 0] * signal[..., 0]
    for k in range(1, n):
        out = out + trace[..., k] * signal[..., k]
    return out


def _input_representation(rel, x):
    return etp_rule_of(rel.primitive).input_representation(x, rel.eqn_params)


@dataclasses.dataclass(frozen=True)
class IODimRule(TraceRule):
    """The pp-prop / ES-D-RTRL rule with decay ``α`` (state: :class:`IODimState`).

    Parameters
    ----------
    decay : float
        The trace decay ``α`` in (0, 1).

    Examples
    --------
    >>> from braintrace.algorithms.es_d_rtrl import IODimRule
    >>> IODimRule(decay=0.9)
    IODimRule(decay=0.9)
    """

    decay: float = 0.9

    def init(self, ctx, q) -> IODimState:
        inputs, outputs = {}, {}
        graph = ctx.graph
        for r, (rel, slot) in enumerate(zip(graph.hidden_param_op_relations, input_slots(graph), strict=True)):
            if slot is not None and slot not in inputs:
                x_repr = jax.eval_shape(lambda x, rel=rel: _input_representation(rel, x), q.x[r])
                inputs[slot] = jnp.zeros(x_repr.shape, x_repr.dtype)
            for i, group in enumerate(rel.hidden_groups):
                df = q.df[r][i]
                if slot is None:
                    outputs[TraceKey(r, group.index)] = zero_param_trace(rel, q.x[r], df, q.effective[r])
                else:
                    outputs[TraceKey(r, group.index)] = jnp.zeros(df.shape, df.dtype)
        return IODimState(inputs, outputs)

    def roll(self, ctx, state, q, step) -> IODimState:
        a = self.decay
        inputs, outputs = {}, {}
        graph = ctx.graph
        for r, (rel, slot) in enumerate(zip(graph.hidden_param_op_relations, input_slots(graph), strict=True)):
            if slot is not None and slot not in inputs:
                old = state.inputs[slot]
                inputs[slot] = (a * old + _input_representation(rel, q.x[r])).astype(old.dtype)
            for i, group in enumerate(rel.hidden_groups):
                key = TraceKey(r, group.index)
                jac = q.jacobians[group.index]
                rank = len(group.varshape)
                old = state.outputs[key]
                if slot is None:
                    outputs[key] = roll_param_trace(rel, group, old, q.x[r], q.df[r][i], q.effective[r], jac)
                else:
                    prop = apply_jacobian(jac, old[..., None, :], rank)[..., 0, :]
                    outputs[key] = (a * prop + (1.0 - a) * q.df[r][i]).astype(old.dtype)
        return IODimState(inputs, outputs)

    def _correction(self, step):
        """The bias correction ``1 - α^(k+1)`` after ``k = step`` earlier steps."""
        a = self.decay
        k = jnp.asarray(step, jnp.float32)
        correction = jnp.where(k >= 1000, 1.0, 1.0 - jnp.power(a, k + 1.0))
        return jax.lax.stop_gradient(jnp.maximum(correction, 1e-8))

    def weight_factor(self, ctx, state, signals, q, step, relation_index) -> tuple:
        """``(x̄, s)`` of a dense relation, with ``∇W = Σ_lead x̄ ⊗ s`` what :meth:`solve` adds.

        ``s`` sums the corrected output-trace signals of the relation's groups (each of the
        op output's shape); used by :mod:`~braintrace.algorithms.factored_gradients`.
        """
        rel = ctx.graph.hidden_param_op_relations[relation_index]
        slot = input_slots(ctx.graph)[relation_index]
        correction = self._correction(step)
        s = None
        for group in rel.hidden_groups:
            part = _contract_states(state.outputs[TraceKey(relation_index, group.index)],
                                    signals[group.index]) / correction
            s = part if s is None else s + part
        return state.inputs[slot], s

    def solve(self, ctx, state, signals, q, step) -> list:
        correction = self._correction(step)
        out = []
        graph = ctx.graph
        for r, (rel, slot) in enumerate(zip(graph.hidden_param_op_relations, input_slots(graph), strict=True)):
            rule = etp_rule_of(rel.primitive)
            grads = {}
            for group in rel.hidden_groups:
                trace = state.outputs[TraceKey(r, group.index)]
                signal = signals[group.index]
                if slot is None:
                    contribution = rule.trace_contract(trace, signal, q.effective[r], rel.eqn_params)
                else:
                    s = _contract_states(trace, signal) / correction
                    contribution = rule.io_gradient(state.inputs[slot], s, q.effective[r], rel.eqn_params,
                                                    tuple(group.varshape))
                for name, g in contribution.items():
                    grads[name] = g if name not in grads else grads[name] + g
            out.append(grads)
        return out

    def traces_of(self, ctx, state, relation_index) -> dict:
        """The output traces ``ε_f`` (or exact traces) of one relation."""
        return {key: value for key, value in state.outputs.items() if key.relation == relation_index}


class IODimVjpAlgorithm(ETraceAlgorithm):
    """ES-D-RTRL / pp-prop with factorised input/output traces (``braintrace.ES_D_RTRL``).

    Parameters
    ----------
    model : brainstate.nn.Module
        The model; ``model.update(*inputs)`` runs one step.
    decay_or_rank : float or int
        The trace decay ``α`` in (0, 1), or an int rank ``n`` meaning ``α = (n-1)/(n+1)``.
    name : str, optional
        Module name.
    vmap : bool
        Lanes along the leading axis over an unbatched graph.
    vjp_method, fast_solve, trace_dtype, chunked_trace, control_flow, config, random_feedback_key, snap_max_jacobian_elements
        The published learner options, see :class:`~braintrace.ETraceAlgorithm`.

    References
    ----------
    Zenke & Neftci (2021); Wang et al., *Brain-inspired online learning (ES-D-RTRL)*.

    Examples
    --------
    >>> import brainstate, jax.numpy as jnp
    >>> import braintrace
    >>> cell = braintrace.nn.ValinaRNNCell(3, 4)
    >>> _ = brainstate.nn.init_all_states(cell)
    >>> learner = braintrace.ES_D_RTRL(cell, decay_or_rank=0.9)
    >>> _ = learner.compile_graph(jnp.ones(3))
    >>> learner.decay
    0.9
    """

    def __init__(self, model, decay_or_rank=0.9, name: str | None = None, *, vmap: bool = False,
                 vjp_method: str = "single-step", fast_solve: bool = True, trace_dtype=None,
                 chunked_trace: bool = True, control_flow=None, config=None, random_feedback_key=None,
                 snap_max_jacobian_elements: int = DEFAULT_SNAP_MAX_JACOBIAN_ELEMENTS):
        super().__init__(model, name, vmap=vmap, vjp_method=vjp_method, fast_solve=fast_solve,
                         trace_dtype=trace_dtype, chunked_trace=chunked_trace, control_flow=control_flow,
                         config=config, random_feedback_key=random_feedback_key,
                         snap_max_jacobian_elements=snap_max_jacobian_elements)
        self.trace_rule = IODimRule(decay_from(decay_or_rank))

    @property
    def decay(self) -> float:
        """The trace decay ``α``."""
        return self.trace_rule.decay


ES_D_RTRL = IODimVjpAlgorithm
pp_prop = IODimVjpAlgorithm


class OSTLFeedforward(IODimVjpAlgorithm):
    """OSTL without the recurrent term: pp-prop with a vanishing decay (``α = 1e-6``).

    With ``α → 0`` the input trace is the current input and the output trace the current
    ``∂h/∂y``, so the gradient of step ``t`` is the instantaneous ``x_t ⊗ ∂h_t/∂y_t``
    contracted with the learning signal (Bohnstingl et al., *Online spatio-temporal learning
    in deep neural networks*, the variant "without H").

    Parameters
    ----------
    model : brainstate.nn.Module
        The model; ``model.update(*inputs)`` runs one step.
    decay_or_rank : float or int
        The pp-prop decay (default ``1e-6``), as for :class:`~braintrace.IODimVjpAlgorithm`.
    name : str, optional
        Module name.
    **kwargs
        The learner options of :class:`~braintrace.IODimVjpAlgorithm`.

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> import braintrace
    >>> learner = braintrace.compile(braintrace.nn.GRUCell(3, 4), 'ostl_feedforward', jnp.ones(3))
    >>> learner.decay, learner.regime
    (1e-06, 'feedforward')
    """

    #: The OSTL variant: ``'feedforward'`` (no recurrent H term).
    regime = "feedforward"

    def __init__(self, model, decay_or_rank=1e-6, name: str | None = None, **kwargs):
        super().__init__(model, decay_or_rank, name, **kwargs)
