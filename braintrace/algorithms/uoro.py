# Copyright 2026 The braintrace authors. Licensed under the Apache License, Version 2.0.
"""UORO: unbiased online recurrent optimisation with one rank-1 pair per hidden group.

RTRL keeps the influence matrix ``G_t = ∂h_t/∂θ`` (``(PS) × |θ|`` per group), which follows
``G_t = J_t G_{t-1} + F_t`` with ``J_t`` the within-group hidden Jacobian and ``F_t`` the
instantaneous ``∂h_t/∂θ``. UORO (Tallec & Ollivier, 2017) keeps instead a rank-1 estimate
``s̃_t θ̃_tᵀ`` with ``E[s̃_t θ̃_tᵀ] = G_t``. Per step it draws a Rademacher vector ``ν``
(entries ±1, shaped like the group's hidden state ``(*V, S)``) and updates

    proj = νᵀ F_t                               (one contraction per relation)
    ρ0   = sqrt((‖θ̃‖ + ε) / (‖J_t s̃‖ + ε)),     ρ1 = sqrt((‖proj‖ + ε) / (‖ν‖ + ε))
    s̃   ← ρ0 J_t s̃ + ρ1 ν,                     θ̃ ← θ̃ / ρ0 + proj / ρ1

(the ``ρ`` balance the two factors' norms, which keeps the variance down; they do not
change the expectation because ``ρ`` is even in ``ν``). The gradient of step ``t`` is
``Σ_g ⟨L_g, s̃_g⟩ θ̃_g``. ``J_t s̃`` is one forward-mode pass through the group's transition
(matrix-free, positions mixed wherever the transition mixes them), so the estimate is
unbiased for the exact *within-group* recursion, not only its per-position diagonal.
Memory per group: ``O(|θ_g| + B·P·S)``.
"""

from __future__ import annotations

import dataclasses
import numbers
from typing import NamedTuple

import jax
import jax.numpy as jnp

from .._array_repr import describe_tree
from ..ops.primitive import etp_rule_of
from .base import ETraceAlgorithm
from .eprop import as_key
from .executor import apply_transition_jacobian
from .options import DEFAULT_SNAP_MAX_JACOBIAN_ELEMENTS
from .trace_rule import TraceRule

__all__ = ["RandomProjectionRule", "RandomProjectionVjpAlgorithm", "UORO", "UOROState"]


class UOROState(NamedTuple):
    """The UORO carrier.

    Attributes
    ----------
    s_tilde : tuple
        Per hidden group, ``s̃_g`` of shape ``(*varshape, S)``.
    theta_tilde : dict
        ``{(relation_index, group_index): {leaf_key: θ̃}}``, each ``θ̃`` shaped like the
        relation's effective op input.
    key : jax.Array
        The raw ``uint32[2]`` PRNG key of the projections.
    counter : jax.Array
        Number of trace steps taken (``int32``); step ``t`` draws from ``fold_in(key, t)``.
    """

    s_tilde: tuple
    theta_tilde: dict
    key: jax.Array
    counter: jax.Array

    def __repr__(self) -> str:
        return f"UOROState(s_tilde={describe_tree(self.s_tilde)}, theta_tilde={describe_tree(self.theta_tilde)})"


def _sq_norm(tree) -> jax.Array:
    return sum(jnp.sum(jnp.square(leaf.astype(jnp.float32))) for leaf in jax.tree.leaves(tree))


def _instantaneous(relation, q, r: int, i: int, signal):
    """``signalᵀ ∂h_t/∂θ`` of relation ``r`` for its ``i``-th group (no trace kept)."""
    rule = etp_rule_of(relation.primitive)
    increment = rule.trace_increment(q.x[r], q.df[r][i], q.effective[r], relation.eqn_params)
    return rule.trace_contract(increment, signal, q.effective[r], relation.eqn_params)


@dataclasses.dataclass(frozen=True)
class RandomProjectionRule(TraceRule):
    """The UORO trace rule (pure; ``ctx`` has ``.graph`` and ``.options``).

    Parameters
    ----------
    key : jax.Array
        The raw ``uint32[2]`` projection key.
    eps : float
        The ``ε`` of the ``ρ`` normalisation.
    """

    key: jax.Array
    eps: float = 1e-12

    same_step_gradients = True

    def _members(self, graph, group_index: int):
        """``(relation_index, position of the group in the relation)`` of a group's relations."""
        return [(r, i) for r, rel in enumerate(graph.hidden_param_op_relations)
                for i, g in enumerate(rel.hidden_groups) if g.index == group_index]

    def init(self, ctx, q) -> UOROState:
        graph = ctx.graph
        s_tilde = tuple(jnp.zeros(tuple(d.shape)[:-1], d.dtype) for d in q.jacobians)
        theta = {}
        for r, rel in enumerate(graph.hidden_param_op_relations):
            for i, group in enumerate(rel.hidden_groups):
                signal = jax.ShapeDtypeStruct(s_tilde[group.index].shape, s_tilde[group.index].dtype)
                shapes = jax.eval_shape(lambda q_, s, r=r, i=i, rel=rel: _instantaneous(rel, q_, r, i, s), q, signal)
                theta[(r, group.index)] = {k: jnp.zeros(v.shape, v.dtype) for k, v in shapes.items()}
        return UOROState(s_tilde, theta, jnp.asarray(self.key, jnp.uint32), jnp.asarray(0, jnp.int32))

    def roll(self, ctx, state: UOROState, q, step) -> UOROState:
        graph = ctx.graph
        step_key = jax.random.fold_in(state.key, state.counter)
        s_new, theta_new = [], dict(state.theta_tilde)
        for group in graph.hidden_groups:
            g = group.index
            s = state.s_tilde[g]
            nu = jax.random.rademacher(jax.random.fold_in(step_key, g), s.shape, s.dtype)
            members = self._members(graph, g)
            proj = {(r, g): _instantaneous(graph.hidden_param_op_relations[r], q, r, i, nu) for r, i in members}
            theta = {(r, g): state.theta_tilde[(r, g)] for r, _ in members}
            js = apply_transition_jacobian(group, q, s)
            rho0 = jnp.sqrt((jnp.sqrt(_sq_norm(theta)) + self.eps) / (jnp.sqrt(_sq_norm(js)) + self.eps))
            rho1 = jnp.sqrt((jnp.sqrt(_sq_norm(proj)) + self.eps) / (jnp.sqrt(_sq_norm(nu)) + self.eps))
            s_new.append((rho0 * js + rho1 * nu).astype(s.dtype))
            for key, old in theta.items():
                theta_new[key] = jax.tree.map(lambda t, p: (t / rho0 + p / rho1).astype(t.dtype), old, proj[key])
        return UOROState(tuple(s_new), theta_new, state.key, state.counter + 1)

    def solve(self, ctx, state: UOROState, signals, q, step) -> list:
        graph = ctx.graph
        out = []
        for r, rel in enumerate(graph.hidden_param_op_relations):
            grads = {}
            for group in rel.hidden_groups:
                scale = jnp.sum(signals[group.index] * state.s_tilde[group.index])
                for k, t in state.theta_tilde[(r, group.index)].items():
                    g = scale.astype(t.dtype) * t
                    grads[k] = g if k not in grads else grads[k] + g
            out.append(grads)
        return out

    def learning_signal(self, ctx, signals, extra) -> list:
        return list(signals)


def _check_projection_key(key):
    try:
        key = as_key(key, "projection_key")
    except TypeError as error:
        raise ValueError(f"{error} UORO draws its Rademacher projections from it; pass e.g. projection_key=42."
                         ) from None
    if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        key = jax.random.key_data(key)
    if key.shape != (2,):
        raise ValueError(f"`projection_key` must be one PRNG key (raw uint32[2]); got shape {tuple(key.shape)}.")
    return key


def _check_eps(eps) -> float:
    if isinstance(eps, bool) or not isinstance(eps, numbers.Real) or not float(eps) > 0:
        raise ValueError(f"`projection_eps` must be a positive float (the ρ-normalisation guard); got {eps!r}.")
    return float(eps)


class RandomProjectionVjpAlgorithm(ETraceAlgorithm):
    """UORO: rank-1 random-projection traces, unbiased for the within-group recursion.

    Parameters
    ----------
    model : brainstate.nn.Module
        The model; ``model.update(*inputs)`` runs one step.
    name : str, optional
        Module name.
    vjp_method : {'multi-step', 'single-step'}
        Multi-step by default (the published default): each call is a window whose gradient
        is exact reverse mode inside plus the UORO estimate carried in from before.
    projection_key : int or jax.Array
        Seed (or PRNG key) of the Rademacher projections; default 42. Step ``t`` draws from
        ``fold_in(key, t)``; lanes of a vmapped learner use ``fold_in(key, lane)``.
    projection_eps : float
        ``ε`` of the ``ρ`` normalisation (default 1e-12).
    fast_solve, control_flow, config, random_feedback_key, snap_max_jacobian_elements, vmap
        The published learner options, see :class:`~braintrace.ETraceAlgorithm`.

    Notes
    -----
    One sample has a high variance (the price of ``O(|θ| + B·P·S)`` memory); average over
    projection keys, batch or time. The within-group Jacobian is applied by forward mode
    through the group's transition, which is everything the compiler places inside the
    group (recurrence through an ETP weight or a plain ``dot_general`` is a boundary, as for
    D-RTRL). The key and the step counter live in the trace state (``etrace.value.key``,
    ``.counter``); ``reset_state`` restores the key.

    References
    ----------
    Tallec & Ollivier (2017), *Unbiased online recurrent optimization*.

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> import braintrace
    >>> learner = braintrace.compile(braintrace.nn.GRUCell(3, 4), 'uoro', jnp.ones(3), projection_key=0)
    >>> type(learner).__name__, learner.options.vjp_method
    ('RandomProjectionVjpAlgorithm', 'multi-step')
    >>> grads = learner.etrace_grad(jnp.ones((4, 3)), step_fn=lambda x: jnp.sum(learner(x) ** 2))
    >>> sorted(grads)
    [('Wh', 'weight'), ('Wr', 'weight'), ('Wz', 'weight')]
    """

    def __init__(self, model, name: str | None = None, vjp_method: str = "multi-step", fast_solve: bool = True,
                 control_flow=None, config=None, projection_key=42, projection_eps: float = 1e-12,
                 random_feedback_key=None, snap_max_jacobian_elements: int = DEFAULT_SNAP_MAX_JACOBIAN_ELEMENTS,
                 **kwargs):
        key = _check_projection_key(projection_key)
        eps = _check_eps(projection_eps)
        super().__init__(model, name, vjp_method=vjp_method, fast_solve=fast_solve, control_flow=control_flow,
                         config=config, random_feedback_key=random_feedback_key,
                         snap_max_jacobian_elements=snap_max_jacobian_elements, **kwargs)
        self.projection_key = projection_key
        self.projection_eps = eps
        self.trace_rule = RandomProjectionRule(key, eps)

    # The key is not a zero-able trace: give it back after the base class zeroes the state.
    def _with_keys(self, state: UOROState) -> UOROState:
        key = self.trace_rule.key
        if self.vmap:
            lanes = state.counter.shape[0]
            keys = jax.vmap(lambda i: jax.random.fold_in(key, i))(jnp.arange(lanes))
            return state._replace(key=keys)
        return state._replace(key=jnp.asarray(key, jnp.uint32))

    def _fresh_traces(self, compiled, example_args):
        return self._with_keys(super()._fresh_traces(compiled, example_args))

    def reset_state(self, batch_size=None, **kwargs) -> None:
        """Zero ``s̃``, ``θ̃`` and the counters, and restore the projection key."""
        super().reset_state(batch_size, **kwargs)
        if self.is_compiled:
            self.etrace.value = self._with_keys(self.etrace.value)

    def get_etrace_of(self, weight_path) -> dict:
        """``{(relation_index, group_index): θ̃}`` of the relations that train ``weight_path``."""
        self._assert_compiled("get_etrace_of")
        import brainstate

        if isinstance(weight_path, brainstate.ParamState):
            matches = [p for p, st in self.param_states.items() if st is weight_path]
            if not matches:
                raise ValueError("this ParamState does not belong to the learner's model.")
            weight_path = matches[0]
        weight_path = tuple(weight_path)
        out = {k: v for k, v in self.etrace.value.theta_tilde.items()
               if weight_path in self.graph.hidden_param_op_relations[k[0]].trainable_paths.values()}
        if not out:
            raise ValueError(f"`{weight_path}` has no UORO trace (it is not trained through an ETP op).")
        return out


UORO = RandomProjectionVjpAlgorithm
