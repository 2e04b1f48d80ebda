# Copyright 2026 The braintrace authors. Licensed under the Apache License, Version 2.0.
"""Cascade traces: a weight's influence carried on through a downstream group with memory.

For a plan (:class:`~braintrace.compiler.cascade_plan.CascadePlan`) of relation ``r``
traced in group ``u`` (trace ``ε^u`` of layout ``(*V_u, *C, S_u)``) whose new value feeds
group ``d``, the cascade trace ``ε^{d←r} = ∂h^d/∂θ_r`` has layout ``(*V_u, *C, N_d)`` and
follows

    ε^{d←r}_t[p, c, k] = Σ_k' D^d_t[k, k'] ε^{d←r}_{t-1}[p, c, k'] + Σ_s J_t[k, p, s] ε^u_t[p, c, s],

with ``D^d`` the group's diagonal Jacobian (exact: the plan requires ``d``'s recurrence to
be element-wise) and ``J_t = ∂h^d_t/∂h^u_t`` the same-step Jacobian, read from the step's
own VJP: ``N_d`` one-hot cotangents on ``d``'s new state, pulled back to ``u``'s
perturbation (:func:`with_cascade_jacobians`). With a shared batch axis (``plan.batch_axis``)
``J`` is block-diagonal over it, the one-hots run over one row of ``d`` and are applied to
every row at once.

The gradient adds, per plan, ``Σ_k δ^d_k ε^{d←r}[p, c, k] - <Jᵀ δ^d, ε^u>``: the learning
signal ``δ^u`` of ``u`` already contains the same-step path through ``d`` (``Jᵀ δ^d``), which
the cascade trace also contains, so it is taken out once (:func:`cascade_gradients`).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from .._errors import NotSupportedError
from ..ops.primitive import etp_rule_of

# The learner's hook and the state key; zero/roll/gradients are ParamDimRule's helpers.
__all__ = ["CascadeKey", "cascade_quantities"]


class CascadeKey(NamedTuple):
    """The key of a cascade trace in D-RTRL's state: ``(relation, group, downstream)``.

    Examples
    --------
    >>> from braintrace.algorithms.cascade import CascadeKey
    >>> CascadeKey(0, 0, 1).downstream
    1
    """

    relation: int
    group: int
    downstream: int


def _key(plan) -> CascadeKey:
    return CascadeKey(plan.relation, plan.upstream, plan.downstream)


def _row_shape(group, batch_axis: bool) -> tuple:
    """The stacked shape of one row of ``group`` (``(*V, S)``, without the batch axis)."""
    shape = tuple(group.varshape) + (group.num_state,)
    return shape[1:] if batch_axis else shape


def _main_positions(graph, layout) -> dict:
    """``{hidden path: position among the step's main outputs}`` of the new hidden values."""
    starts, position = [], graph.module_info.num_var_out
    for count in layout.other_leaf_counts:
        starts.append(position)
        position += count
    return {path: starts[slot] for slot, path in layout.hidden_other_slots}


def _zero_cotangent(value):
    # Integer outputs (a spike counter kept in a ShortTermState) take float0 cotangents.
    if jnp.issubdtype(jnp.result_type(value), jnp.inexact):
        return jnp.zeros_like(value)
    return np.zeros(jnp.shape(value), dtype=jax.dtypes.float0)


def _same_step_jacobian(graph, layout, plan, main, vjp_fn):
    """``J = ∂h^d/∂h^u`` of this step as ``(N_d, *V_u, S_u)`` (rows of ``d`` one-hot)."""
    u, d = graph.hidden_groups[plan.upstream], graph.hidden_groups[plan.downstream]
    positions = _main_positions(graph, layout)
    full_shape = tuple(d.varshape) + (d.num_state,)
    row_shape = _row_shape(d, plan.batch_axis)
    perturb_paths = graph.hidden_perturb.perturb_hidden_paths

    def pull(one_hot):
        stacked = jnp.broadcast_to(one_hot, full_shape)
        cotangents = [_zero_cotangent(m) for m in main]
        for path, value in zip(d.hidden_paths, d.split_hidden(stacked), strict=True):
            i = positions[path]
            cotangents[i] = value.astype(main[i].dtype).reshape(jnp.shape(main[i]))
        d_perturb = vjp_fn(cotangents)[3]
        by_path = dict(zip(perturb_paths, d_perturb, strict=True))
        return jax.lax.stop_gradient(u.concat_hidden([by_path[p] for p in u.hidden_paths]))

    eye = jnp.eye(plan.num_elements, dtype=main[positions[d.hidden_paths[0]]].dtype)
    return jax.vmap(pull)(eye.reshape((plan.num_elements,) + row_shape))


def with_cascade_jacobians(graph, layout, q, main, vjp_fn):
    """``q`` with ``q.cascade``: per ``graph.cascades`` plan, this step's ``J`` (``(N_d, *V_u, S_u)``)."""
    if not graph.cascades:
        return q
    return q._replace(cascade=tuple(_same_step_jacobian(graph, layout, plan, main, vjp_fn)
                                    for plan in graph.cascades))


def cascade_quantities(rule, graph, layout, q, main, vjp_fn):
    """``q`` with the cascade Jacobians when the graph has cascades and ``rule.supports_cascade``.

    The learner's hook: ``main`` and ``vjp_fn`` are what
    :func:`~braintrace.algorithms.executor.run_step` returned for this step.

    Examples
    --------
    A leaky group ``u`` read out by a leaky group ``d`` of two elements: ``J`` is ``(2, *V_u, S_u)``.

    >>> import brainstate, jax, jax.numpy as jnp
    >>> import braintrace
    >>> from braintrace.algorithms import executor
    >>> from braintrace.algorithms.cascade import cascade_quantities
    >>> class Net(brainstate.nn.Module):
    ...     def __init__(self):
    ...         super().__init__()
    ...         self.w = brainstate.ParamState(jnp.ones((3, 4)) * 0.1)
    ...         self.w_out = brainstate.ParamState(jnp.ones((4, 2)) * 0.1)
    ...     def init_state(self, batch_size=None, **kwargs):
    ...         self.u = brainstate.HiddenState(jnp.zeros(4))
    ...         self.d = brainstate.HiddenState(jnp.zeros(2))
    ...     def update(self, x):
    ...         self.u.value = 0.8 * self.u.value + braintrace.matmul(x, self.w.value)
    ...         self.d.value = 0.9 * self.d.value + braintrace.matmul(jnp.tanh(self.u.value), self.w_out.value)
    ...         return self.d.value
    >>> net = Net()
    >>> _ = brainstate.nn.init_all_states(net)
    >>> learner = braintrace.D_RTRL(net)
    >>> graph = learner.compile_graph(jnp.ones(3))
    >>> graph.cascades[0].num_elements
    2
    >>> layout = learner._compiled.layout
    >>> values = [jax.tree.leaves(st.value) for st in graph.module_info.compiled_model_states]
    >>> params, others = layout.split(values)
    >>> main, temps, vjp_fn = executor.run_step(graph, layout, [jnp.ones(3)], params, others)
    >>> q = executor.step_quantities(graph, temps, dict(zip(layout.param_paths, params)))
    >>> cascade_quantities(learner.trace_rule, graph, layout, q, main, vjp_fn).cascade[0].shape
    (2, 4, 1)
    """
    if not graph.cascades or not getattr(rule, "supports_cascade", False):
        return q
    return with_cascade_jacobians(graph, layout, q, main, vjp_fn)


def _check_layout(plan, group, trace):
    rank = len(group.varshape)
    if tuple(trace.shape[:rank]) != tuple(group.varshape) or trace.shape[-1] != group.num_state:
        raise NotSupportedError(
            f"cascade trace of relation {plan.relation}: the trace has shape {tuple(trace.shape)}, not the standard "
            f"layout (*V, *C, S) with V={tuple(group.varshape)}, S={group.num_state}; compile with "
            "`cascade_max_elements=0` for this model."
        )


def zero_cascade_traces(ctx, traces: dict) -> dict:
    """Zero cascade traces ``{CascadeKey: {op input key: (*V_u, *C, N_d)}}`` next to ``traces``."""
    out = {}
    for plan in ctx.graph.cascades:
        u = ctx.graph.hidden_groups[plan.upstream]
        base = traces[(plan.relation, plan.upstream)]
        for t in base.values():
            _check_layout(plan, u, t)
        out[_key(plan)] = {k: jnp.zeros(t.shape[:-1] + (plan.num_elements,), t.dtype) for k, t in base.items()}
    return out


def _as_bpcx(plan, u, trace):
    v = tuple(u.varshape)
    lead = v[0] if plan.batch_axis else 1
    rest = v[1:] if plan.batch_axis else v
    positions = 1
    for n in rest:
        positions *= int(n)
    return trace.reshape(lead, positions, -1, trace.shape[-1])


def _jacobian_bkps(plan, u, jac):
    """``J`` ``(N_d, *V_u, S_u)`` as ``(B, N_d, P, S_u)``."""
    v = tuple(u.varshape)
    lead = v[0] if plan.batch_axis else 1
    j = jac.reshape((jac.shape[0], lead, -1, jac.shape[-1]))
    return jnp.moveaxis(j, 1, 0)


def _apply_downstream_jacobian(plan, d, jacobian, cascade):
    """``Σ_k' D^d[k, k'] ε[..., k']`` for a cascade trace ``(B, P, C, N_d)``."""
    s = d.num_state
    lead = cascade.shape[0]
    dj = jacobian.reshape((lead, -1, s, s))  # (B, Q, S_d, S_d)
    flat = cascade.reshape(cascade.shape[:3] + (dj.shape[1], s))
    return jnp.einsum("bqxy,bpcqy->bpcqx", dj, flat).reshape(cascade.shape)


def roll_cascade_traces(ctx, state: dict, traces: dict, q) -> dict:
    """One step of every cascade trace, from the rolled group traces ``traces`` (``ε^u_t``)."""
    out = {}
    for plan, jac in zip(ctx.graph.cascades, q.cascade, strict=True):
        u, d = ctx.graph.hidden_groups[plan.upstream], ctx.graph.hidden_groups[plan.downstream]
        key = _key(plan)
        j = _jacobian_bkps(plan, u, jac)
        new = {}
        for k, old in state[key].items():
            eps = _as_bpcx(plan, u, traces[(plan.relation, plan.upstream)][k])
            prev = _apply_downstream_jacobian(plan, d, q.jacobians[d.index], _as_bpcx(plan, u, old))
            inc = jnp.einsum("bkps,bpcs->bpck", j.astype(eps.dtype), eps)
            new[k] = (prev + inc).reshape(old.shape).astype(old.dtype)
        out[key] = new
    return out


def cascade_gradients(ctx, state: dict, traces: dict, signals, q) -> list:
    """Per relation, the cascade part of the gradient ``{key: gradient of the effective input}``.

    ``Σ_k δ^d_k ε^{d←r}[p, c, k]`` (contracted by the op's rule as a trace of width 1 with a
    signal of ones). When ``q.cascade`` holds this step's Jacobians the signals are the
    step's perturbation cotangents, whose ``δ^u`` already contains the same-step path
    through ``d``: ``<Jᵀ δ^d, ε^u>`` is then subtracted. Signals of old or entry states (the
    output bypass, multi-step windows) are cotangents of separate state values: the learner
    passes ``q`` with an empty ``cascade`` and nothing is subtracted.
    """
    out = [{} for _ in ctx.graph.hidden_param_op_relations]
    jacobians = q.cascade if q.cascade else (None,) * len(ctx.graph.cascades)
    for plan, jac in zip(ctx.graph.cascades, jacobians, strict=True):
        u, d = ctx.graph.hidden_groups[plan.upstream], ctx.graph.hidden_groups[plan.downstream]
        rel = ctx.graph.hidden_param_op_relations[plan.relation]
        rule = etp_rule_of(rel.primitive)
        lead = u.varshape[0] if plan.batch_axis else 1
        delta = signals[d.index].reshape(lead, plan.num_elements)
        summed = {}
        for k, cascade in state[_key(plan)].items():
            c = _as_bpcx(plan, u, cascade)
            summed[k] = jnp.einsum("bpck,bk->bpc", c, delta.astype(c.dtype)).reshape(cascade.shape[:-1] + (1,))
        ones = jnp.ones(tuple(u.varshape) + (1,), delta.dtype)
        parts = [rule.trace_contract(summed, ones, q.effective[plan.relation], rel.eqn_params)]
        if jac is not None:
            same_step = jnp.einsum("bkps,bk->bps", _jacobian_bkps(plan, u, jac), delta.astype(jac.dtype))
            same_step = same_step.reshape(tuple(u.varshape) + (u.num_state,))
            parts.append(rule.trace_contract(traces[(plan.relation, plan.upstream)], -same_step,
                                             q.effective[plan.relation], rel.eqn_params))
        grads = out[plan.relation]
        for part in parts:
            for k, g in part.items():
                grads[k] = g if k not in grads else grads[k] + g
    return out
