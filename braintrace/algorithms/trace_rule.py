# Copyright 2026 The braintrace authors. Licensed under the Apache License, Version 2.0.
"""The learning-rule contract: pure ``init / roll / solve`` functions over a rule's own state.

A learning rule is a frozen dataclass, subclass of :class:`TraceRule`, whose fields are its
hyperparameters. The learner (:class:`~braintrace.ETraceAlgorithm`, a brainstate Module)
only wires it: at compile time it builds a :class:`RuleContext` (the compiled graph and the
learner options) and then calls

* ``init(ctx, q)`` once, with one step's :class:`~braintrace.algorithms.executor.StepQuantities`
  as shape structs, for the zero state;
* ``roll(ctx, state, q, step)`` every step, in the forward pass, for the next state;
* ``learning_signal(ctx, signals, extra)`` and ``solve(ctx, state, signals, q, step)`` in
  the backward pass: per relation ``{key: gradient of the effective op input}``, which the
  learner routes to the ``ParamState`` leaves.

All of them are pure functions of their arguments (they run inside ``jax.jit``, the
``jax.custom_vjp`` of the step and ``jax.lax.scan``): no ``self`` mutation and no reading of
the learner. The state is any pytree the rule owns, keyed by :class:`TraceKey` (relation,
group) rather than by strings. See ``docs/writing_a_rule.rst``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence
from typing import Any, ClassVar, NamedTuple

from ..compiler.graph import ETraceGraph
from .options import LearnerOptions

__all__ = ["TraceKey", "RuleContext", "TraceRule", "relation_groups"]

State = Any


class TraceKey(NamedTuple):
    """The key of one (relation, hidden group) entry of a rule's state.

    A plain ``(relation, group)`` tuple compares (and hashes) equal to it.

    Examples
    --------
    >>> from braintrace.algorithms.trace_rule import TraceKey
    >>> TraceKey(0, 1) == (0, 1), TraceKey(relation=2, group=0).relation
    (True, 2)
    """

    relation: int
    group: int


class RuleContext(NamedTuple):
    """What a rule may read besides its state and the step quantities.

    Attributes
    ----------
    graph : ETraceGraph
        The compiled graph: ``graph.hidden_param_op_relations`` (the relations ``r``, each
        with its ``hidden_groups``) and ``graph.hidden_groups`` (the groups ``g``).
    options : LearnerOptions
        The learner's validated options.
    """

    graph: ETraceGraph
    options: LearnerOptions

    def __repr__(self) -> str:
        return (f"RuleContext({len(self.graph.hidden_param_op_relations)} relations, "
                f"{len(self.graph.hidden_groups)} hidden groups, vjp_method={self.options.vjp_method!r})")


def relation_groups(ctx: RuleContext) -> Iterator[tuple]:
    """``(r, relation, i, group)`` for every relation ``r`` and its ``i``-th hidden group.

    ``q.df[r][i]`` is the ``∂h/∂y`` of that pair and ``TraceKey(r, group.index)`` its usual
    state key.
    """
    for r, relation in enumerate(ctx.graph.hidden_param_op_relations):
        for i, group in enumerate(relation.hidden_groups):
            yield r, relation, i, group


@dataclasses.dataclass(frozen=True)
class TraceRule:
    """Base class of the learning rules (subclass it as a frozen dataclass).

    Attributes
    ----------
    same_step_gradients : bool
        Whether parameters get their exact same-step gradient from the step's VJP and
        ``∂L_t/∂h_{t-1}`` along same-step paths is contracted with the previous state (the
        output bypass). A rule whose learning signal is not the loss gradient (a
        modulator) sets it to ``False``.

    Examples
    --------
    A rule that keeps no memory: the trace is the instantaneous increment.

    >>> import dataclasses, jax, jax.numpy as jnp
    >>> from braintrace.algorithms.trace_rule import TraceKey, TraceRule, relation_groups
    >>> from braintrace.algorithms.d_rtrl import contract_param_traces, zero_param_trace
    >>> from braintrace.ops.primitive import etp_rule_of
    >>> @dataclasses.dataclass(frozen=True)
    ... class Instantaneous(TraceRule):
    ...     def init(self, ctx, q):
    ...         return {TraceKey(r, g.index): zero_param_trace(rel, q.x[r], q.df[r][i], q.effective[r])
    ...                 for r, rel, i, g in relation_groups(ctx)}
    ...     def roll(self, ctx, state, q, step):
    ...         return {TraceKey(r, g.index): etp_rule_of(rel.primitive).trace_increment(
    ...                     q.x[r], q.df[r][i], q.effective[r], rel.eqn_params)
    ...                 for r, rel, i, g in relation_groups(ctx)}
    ...     def solve(self, ctx, state, signals, q, step):
    ...         return contract_param_traces(ctx, state, signals, q)
    >>> Instantaneous().same_step_gradients
    True
    """

    same_step_gradients: ClassVar[bool] = True
    #: Whether the rule trains ETP ops inside a descended long ``scan``: their per-step
    #: increments arrive folded over the substeps in ``q.folded`` (see
    #: :mod:`braintrace.algorithms.scan_descent`). Other rules refuse such graphs at compile.
    supports_scan_descent: ClassVar[bool] = False
    #: Whether the rule keeps cascade traces for ``graph.cascades`` (D-RTRL): the learner
    #: then compiles with ``cascade_max_elements`` and fills ``q.cascade`` with the same-step
    #: Jacobians (see :mod:`braintrace.algorithms.cascade`).
    supports_cascade: ClassVar[bool] = False

    def init(self, ctx: RuleContext, q) -> State:
        """The zero state, from one step's quantities (``ShapeDtypeStruct`` leaves)."""
        raise NotImplementedError(f"{type(self).__name__} must define `init(ctx, q)`.")

    def roll(self, ctx: RuleContext, state: State, q, step) -> State:
        """The state after one more step (``step`` counts earlier calls)."""
        raise NotImplementedError(f"{type(self).__name__} must define `roll(ctx, state, q, step)`.")

    def solve(self, ctx: RuleContext, state: State, signals: Sequence, q, step) -> list:
        """Per relation, ``{key: gradient of the effective op input}`` from the signals."""
        raise NotImplementedError(f"{type(self).__name__} must define `solve(ctx, state, signals, q, step)`.")

    def learning_signal(self, ctx: RuleContext, signals: Sequence, extra) -> list:
        """Per group, the signal :meth:`solve` contracts, from ``∂L/∂h`` (identity).

        ``extra`` is the learner's per-call value (``None`` by default; ThreeFactor's
        modulators).
        """
        return list(signals)

    def traces_of(self, ctx: RuleContext, state: State, relation_index: int) -> dict:
        """``{TraceKey: trace}`` of one relation, for ``learner.get_etrace_of``.

        The default reads a dict state keyed by ``(relation, group)``.
        """
        if not isinstance(state, dict):
            return {}
        return {TraceKey(*key): value for key, value in state.items()
                if isinstance(key, tuple) and len(key) == 2 and key[0] == relation_index}
