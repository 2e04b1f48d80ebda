# Copyright 2026 The braintrace authors. Licensed under the Apache License, Version 2.0.
"""SnAp-n (Menick et al. 2021): parameter traces widened to an ``n``-step neighbourhood.

A parameter slot anchored at hidden position ``p`` keeps the influence entries
``∂h_q/∂θ`` for the ``K`` positions ``q = nbr[p, k]`` reachable from ``p`` within ``n - 1``
steps of the transition's adjacency (:mod:`braintrace.compiler.snap_pattern`). With the
trace's trailing axis widened from ``S`` to ``K·S`` (index ``k·S + a``) the recursion is
D-RTRL's:

    ε_t = D̃_t ε_{t-1} + (∂h_t/∂y_t ⊕ 0) ⊗ x_t,
    D̃_t[p, (k, a), (k', b)] = J_t[nbr[p, k], a, nbr[p, k'], b] · valid[p, k] · valid[p, k'],

where the instantaneous term sits on slot 0 (the position itself) and the executor hands
over ``D̃`` (``HiddenGroup.snap_jacobian``). The gradient contracts the trace with the
learning signal gathered onto the neighbours, ``L̃[p, (k, a)] = L[nbr[p, k], a] · valid[p, k]``.

``n = 1`` is the coupled scope (:class:`~braintrace.OSTLRecurrent`); at saturation (every
position reaches every other position of its group) SnAp-n is the full within-group RTRL,
hence BPTT on a single group with element-wise op-to-hidden tails. Memory per dense
relation ``O(B·I·O·K·S)``; the Jacobian is ``O((P·S)²)`` transient plus ``P·(K·S)²``.
"""

from __future__ import annotations

import dataclasses
import numbers
from typing import ClassVar

import jax
import jax.numpy as jnp

from .d_rtrl import ParamDimRule, ParamDimVjpAlgorithm, contract_param_traces
from .options import DEFAULT_SNAP_MAX_JACOBIAN_ELEMENTS
from .ostl_recurrent import CoupledBlockRule

__all__ = ["SnApRule", "SnAp", "widen_sensitivity", "gather_signal"]


def _check_order(n) -> int:
    if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 1:
        raise ValueError(f"SnAp order `n` must be an int >= 1 (not a bool); got n={n!r}.")
    return int(n)


def widen_sensitivity(df, group):
    """``(*V, S)`` → ``(*V, K·S)`` with ``df`` on neighbour slot 0 (the position itself)."""
    if group.snap is None:
        return df
    k, s = group.snap.num_neighbours, df.shape[-1]
    if not hasattr(df, "ndim") or isinstance(df, jax.ShapeDtypeStruct):  # a shape struct (trace allocation)
        return jax.ShapeDtypeStruct(tuple(df.shape[:-1]) + (k * s,), df.dtype)
    pad = jnp.zeros(df.shape[:-1] + (k - 1, s), df.dtype)
    return jnp.concatenate([df[..., None, :], pad], axis=-2).reshape(df.shape[:-1] + (k * s,))


def gather_signal(signal, group):
    """``(*V, S)`` → ``(*V, K·S)``: ``L[nbr[p, k], a] · valid[p, k]``."""
    if group.snap is None:
        return signal
    k, s = group.snap.num_neighbours, signal.shape[-1]
    flat = signal.reshape(-1, s)
    gathered = flat[jnp.asarray(group.snap.neighbours)] * jnp.asarray(group.snap.valid, signal.dtype)[..., None]
    return gathered.reshape(signal.shape[:-1] + (k * s,))


@dataclasses.dataclass(frozen=True)
class SnApRule(ParamDimRule):
    """The maths of SnAp-n traces (pure methods, no state); keys ``(relation, group)``.

    Parameters
    ----------
    n : int
        The SnAp order (>= 1).

    Examples
    --------
    >>> from braintrace.algorithms.snap import SnApRule
    >>> SnApRule(n=2).n
    2
    >>> SnApRule(n=0)
    Traceback (most recent call last):
    ...
    ValueError: SnAp order `n` must be an int >= 1 (not a bool); got n=0.
    """

    n: int = 2
    #: Descended scans and cascade traces assume the diagonal (unwidened) layout.
    supports_scan_descent: ClassVar[bool] = False
    supports_cascade: ClassVar[bool] = False

    def __post_init__(self):
        object.__setattr__(self, "n", _check_order(self.n))

    def sensitivity(self, df, group):
        return widen_sensitivity(df, group)

    def solve(self, ctx, state, signals, q, step) -> list:
        groups = ctx.graph.hidden_groups
        gathered = [gather_signal(signal, group) for signal, group in zip(signals, groups, strict=True)]
        return contract_param_traces(ctx, state, gathered, q)


class SnAp(ParamDimVjpAlgorithm):
    """SnAp-n: D-RTRL traces over each position's ``n``-step neighbourhood.

    The ``sparse_n`` recurrence scope of :class:`~braintrace.ETraceConfig`. ``n = 1`` is
    the coupled scope (the graph is compiled like :class:`~braintrace.OSTLRecurrent`); for
    ``n >= 2`` the graph is compiled with ``sparse_n=n`` and every group gets a SnAp pattern
    (``graph.hidden_groups[g].snap``). When the neighbourhood covers the group (a dense
    recurrent matmul saturates at ``n = 2``), the rule is within-group RTRL.

    Parameters
    ----------
    model : brainstate.nn.Module
        The model; ``model.update(*inputs)`` runs one step.
    n : int
        The SnAp order, an int >= 1 (default 2).
    name : str, optional
        Module name.
    vjp_method : {'single-step', 'multi-step'}
        As for :class:`~braintrace.D_RTRL`.
    fast_solve : bool
        Accepted for compatibility; no effect (see :class:`~braintrace.algorithms.options.LearnerOptions`).
    snap_max_jacobian_elements : int
        Upper bound on ``P·(K·S)²`` per group; compilation raises a
        :class:`~braintrace.CompilationError` naming the group above it.
    **kwargs
        Other learner options (``trace_dtype``, ``chunked_trace``, ``control_flow``, ``vmap``).

    Raises
    ------
    ValueError
        If ``n`` is not an int >= 1 (a bool is rejected).

    References
    ----------
    Menick et al. (2021), *Practical real time recurrent learning with a sparse approximation*.

    Examples
    --------
    >>> import brainstate, jax.numpy as jnp
    >>> import braintrace
    >>> cell = braintrace.nn.ValinaRNNCell(3, 4, activation='tanh')
    >>> learner = braintrace.compile(cell, braintrace.SnAp, jnp.ones(3), n=2)
    >>> learner.graph.hidden_groups[0].snap       # a dense recurrence saturates at n = 2
    SnapPattern(n=2, positions=4, K=4, precise=True)
    >>> grads = learner.etrace_grad(jnp.ones((5, 3)), step_fn=lambda x: jnp.sum(learner(x) ** 2))
    >>> sorted(grads)
    [('W', 'weight')]
    """

    def __init__(self, model, n: int = 2, name=None, vjp_method: str = "single-step", fast_solve: bool = True,
                 snap_max_jacobian_elements: int = DEFAULT_SNAP_MAX_JACOBIAN_ELEMENTS, **kwargs):
        n = _check_order(n)
        super().__init__(model, name, vjp_method=vjp_method, fast_solve=fast_solve,
                         snap_max_jacobian_elements=snap_max_jacobian_elements, **kwargs)
        self.n = n
        self.trace_rule = CoupledBlockRule() if n == 1 else SnApRule(n=n)

    def graph_options(self) -> dict:
        if self.n == 1:
            return {"include_recurrent_mixing": True}
        return {"include_recurrent_mixing": True, "sparse_n": self.n,
                "snap_max_jacobian_elements": self.options.snap_max_jacobian_elements}
