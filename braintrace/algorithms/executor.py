# Copyright 2026 The braintrace authors. Licensed under the Apache License, Version 2.0.
"""Run one compiled step and compute what the trace rules need.

Given an :class:`ETraceGraph`, :func:`run_step` evaluates the perturbed step under
``jax.vjp`` (so the backward pass can later produce the learning signal and the same-step
gradients) and returns the step's temporaries. :func:`step_quantities` turns those into

* ``x[r]``: the data input of relation ``r``;
* ``df[r][i]``: ``∂h/∂y`` of relation ``r`` for its ``i``-th group, ``(*V, S)``, from the
  forward derivative of the parameter-free tail along an all-ones tangent (exact for
  element-wise tails);
* ``D[g]``: the per-position hidden Jacobian of group ``g``, ``(*V, S, S)`` (the diagonal
  one, the coupled block, or ``(*V, K·S, K·S)`` under SnAp; see ``HiddenGroup.jacobian``).

Everything here uses ``jax.jvp``/``jax.vjp`` on the compiled jaxprs; there are no finite
differences.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from .._array_repr import describe_tree
from ..compiler.graph import ETraceGraph
from ..compiler.jaxpr_tools import evaluate_jaxpr
from ..ops.primitive import etp_rule_of
from .factored_gradients import transposed_override
from .state_layout import StateLayout  # noqa: F401  (re-exported: executor.StateLayout)

__all__ = ["StepQuantities", "VarValues", "run_step", "step_quantities", "op_inputs",
           "pull_back_to_leaf", "apply_transition_jacobian"]


@jax.tree_util.register_pytree_node_class
class VarValues:
    """An immutable ``{Var: value}`` mapping that is a JAX pytree (keys kept in order).

    Plain dicts cannot be pytrees here because jaxpr vars are not orderable.
    """

    __slots__ = ("_keys", "_values", "_index")

    def __init__(self, keys, values):
        self._keys = tuple(keys)
        self._values = tuple(values)
        self._index = {k: i for i, k in enumerate(self._keys)}

    @classmethod
    def from_dict(cls, mapping) -> VarValues:
        return cls(tuple(mapping), tuple(mapping.values()))

    def __getitem__(self, var):
        return self._values[self._index[var]]

    def __contains__(self, var) -> bool:
        return var in self._index

    def get(self, var, default=None):
        i = self._index.get(var)
        return default if i is None else self._values[i]

    def tree_flatten(self):
        return self._values, self._keys

    @classmethod
    def tree_unflatten(cls, keys, values):
        return cls(keys, values)

    def __repr__(self) -> str:
        return f"VarValues({len(self._keys)} vars)"


class StepQuantities(NamedTuple):
    """Per-step inputs of the trace rules (all without gradient).

    Attributes
    ----------
    x : tuple
        Per relation, the op input (``None`` for element-wise ops).
    df : tuple of tuple
        Per relation and connected group, ``∂h/∂y`` of shape ``(*V, S)``.
    jacobians : tuple
        Per group, ``D`` of shape ``(*V, S, S)``.
    effective : tuple of dict
        Per relation, the effective op parameters.
    hidden_old : tuple
        Per group, the stacked old hidden values ``(*V, S)`` (the point of the transition).
    transition_consts : tuple of list
        Per group, the values of its transition's constvars; with ``hidden_old`` they let a
        rule apply the *full* within-group Jacobian matrix-free (``jax.jvp`` of
        ``group.transition``), see :func:`apply_transition_jacobian`.
    folded : tuple
        Per relation, ``None``, or for an op inside a descended scan one trace increment per
        group (folded over the substeps, see :mod:`braintrace.algorithms.scan_descent`);
        such a relation has ``x`` ``None`` and ``df`` entries ``None``. Empty when the graph
        has no descended scan.
    cascade : tuple
        Per ``graph.cascades`` plan, the same-step Jacobian ``∂h^d/∂h^u`` as
        ``(N_d, *V_u, S_u)`` (see :mod:`braintrace.algorithms.cascade`); empty unless the rule
        uses cascade traces.
    """

    x: tuple
    df: tuple
    jacobians: tuple
    effective: tuple
    hidden_old: tuple = ()
    transition_consts: tuple = ()
    folded: tuple = ()
    cascade: tuple = ()

    def __repr__(self) -> str:
        fields = ", ".join(f"{name}={describe_tree(getattr(self, name))}" for name in self._fields)
        return f"StepQuantities({fields})"


def run_step(graph: ETraceGraph, layout: StateLayout, arg_leaves, param_leaves, other_leaves, factors=None,
             transposed=(), exact_input_cotangents=True):
    """Evaluate the perturbed step under ``jax.vjp``.

    With a :class:`~braintrace.algorithms.factored_gradients.FactorPlan` that has taps,
    the tapped step is evaluated instead: ``vjp_fn`` also returns the taps' cotangents
    (``∂L/∂y`` of the tapped ops) and ``temps`` the tapped ops' inputs under ``("tap", k)``.
    ``transposed`` holds the plan's transposed weights (the same values, another backward
    product; see ``factored_gradients.TransposedWeight``). With deferred factors
    (``FactorPlan.deferred``) ``vjp_fn`` also returns their ``ct`` (after the taps) and
    ``temps`` their ``m`` under ``("deferred_m", k)``; ``exact_input_cotangents=False`` lets
    their parts drop ``ct @ Wᵀ`` (see ``deferred_cotangents``).

    Returns
    -------
    main_outputs : list
        Leaves of the model output followed by the new leaves of every non-parameter state.
    temps : dict
        ``{Var: value}`` of the step temporaries (no gradient).
    vjp_fn : callable
        Pulls cotangents of ``main_outputs`` back to
        ``(arg_leaves, param_leaves, other_leaves, perturbations[, taps])``.
    """
    minfo = graph.module_info
    perturb = graph.hidden_perturb
    out_positions = layout.main_output_positions
    zeros = [jnp.zeros(v.aval.shape, v.aval.dtype) for v in perturb.perturb_vars]
    factored = factors is not None and bool(factors.taps or factors.transposed)
    tapped = factors.step_jaxpr if factored else None
    deferred = factors.deferred if factored else ()
    n_outs = len(perturb.perturb_jaxpr.outvars)

    invars = list(minfo.closed_jaxpr.invars)

    def forward(args_, params_, others_, perturbations, *taps):
        flat = list(args_) + layout.merge(params_, others_)
        deferred_m = [None] * len(deferred)
        if tapped is None:
            outs = perturb.eval_jaxpr(flat, perturbations)
        else:
            override = None
            if factors.transposed:
                override = transposed_override(factors, transposed, taps[1] if deferred else (), deferred_m,
                                               exact_input_cotangents)
            outs = evaluate_jaxpr(tapped, tapped.consts, flat + list(perturbations) + list(taps[0] if taps else ()),
                                  override=override)
        main = [outs[i] for i in out_positions]
        temps = {}
        for v, x in zip(invars, flat, strict=True):
            temps[v] = jax.lax.stop_gradient(x)
        for v, x in zip(perturb.perturb_jaxpr.outvars, outs[:n_outs], strict=True):
            temps.setdefault(v, jax.lax.stop_gradient(x))
        for k, x in enumerate(outs[n_outs:]):
            temps[("tap", k)] = jax.lax.stop_gradient(x)
        for k, m in enumerate(deferred_m):
            temps[("deferred_m", k)] = m
        return main, VarValues.from_dict(temps)

    primals = [list(arg_leaves), [list(p) for p in param_leaves], [list(o) for o in other_leaves], zeros]
    if factors is not None and factors.taps:
        primals.append([jnp.zeros(t.y_var.aval.shape, t.y_var.aval.dtype) for t in factors.taps])
    if deferred:
        primals.append([jnp.zeros(f.deferral.ct_shape, f.deferral.ct_dtype) for f in deferred])
    main, vjp_fn, temps = jax.vjp(forward, *primals, has_aux=True)
    return main, temps, vjp_fn


def op_inputs(relation, param_leaves_by_path, temps) -> dict:
    """The values of an op's trainable inputs, rebuilt from the ParamState leaves."""
    out = {}
    for key, path in relation.trainable_paths.items():
        leaf = param_leaves_by_path[path][relation.trainable_leaf_indices[key]]
        jaxpr = relation.trainable_processing_jaxprs.get(key)
        if jaxpr is None:
            out[key] = leaf
        else:
            out[key] = evaluate_jaxpr(jaxpr, [temps[c] for c in jaxpr.constvars], [leaf])[0]
    return out


def pull_back_to_leaf(relation, key, leaf_value, input_grad, temps):
    """Gradient w.r.t. the ParamState leaf from the gradient w.r.t. the op input."""
    jaxpr = relation.trainable_processing_jaxprs.get(key)
    if jaxpr is None:
        return input_grad
    consts = [temps[c] for c in jaxpr.constvars]
    _, pullback = jax.vjp(lambda leaf: evaluate_jaxpr(jaxpr, consts, [leaf])[0], leaf_value)
    return pullback(input_grad)[0]


def step_quantities(graph: ETraceGraph, temps, param_leaves_by_path) -> StepQuantities:
    """Compute ``x``, ``∂h/∂y`` and the group Jacobians from one step's temporaries."""
    xs, dfs, effective = [], [], []
    for rel in graph.hidden_param_op_relations:
        rule = etp_rule_of(rel.primitive)
        if rel.control_flow_context is not None:  # inside a descended scan: see `folded`
            xs.append(None)
            dfs.append((None,) * len(rel.hidden_groups))
            raw = op_inputs(rel, param_leaves_by_path, temps)
            effective.append(jax.lax.stop_gradient(rule.effective_params(raw, rel.eqn_params)))
            continue
        xs.append(None if rel.x_var is None else temps[rel.x_var])
        y = temps[rel.y_var]

        def tails(y_value, rel=rel):
            return rel.y_to_hidden_groups(y_value, temps, concat_hidden_vals=True)

        _, tangents = jax.jvp(tails, (y,), (jnp.ones_like(y),))
        dfs.append(tuple(tangents))
        raw = op_inputs(rel, param_leaves_by_path, temps)
        effective.append(jax.lax.stop_gradient(rule.effective_params(raw, rel.eqn_params)))
    jacobians, olds, all_consts = [], [], []
    for group in graph.hidden_groups:
        old = group.concat_hidden([temps[v] for v in group.hidden_invars])
        consts = [temps[v] for v in group.transition_jaxpr_constvars]
        jacobians.append(group.jacobian(old, consts))
        olds.append(old)
        all_consts.append(list(consts))
    folded = ()
    if any(rel.control_flow_context is not None for rel in graph.hidden_param_op_relations):
        from .scan_descent import descended_increments

        folded = descended_increments(graph, temps, effective)
    return StepQuantities(tuple(xs), tuple(dfs), tuple(jacobians), tuple(effective), tuple(olds),
                          tuple(all_consts), folded)


def apply_transition_jacobian(group, q: StepQuantities, tangent):
    """``J tangent`` for the full within-group Jacobian ``J = ∂h_new/∂h_old`` of ``group``.

    One forward-mode pass through the group's transition at this step's point (no
    ``(PS)²`` matrix is formed); positions are mixed wherever the transition mixes them,
    unlike the per-position block ``q.jacobians[g]``. ``tangent`` is ``(*V, S)``.
    """
    g = group.index
    old, consts = q.hidden_old[g], q.transition_consts[g]
    if not group.transition_jaxpr.eqns and not any(
            o in group.transition_jaxpr.invars for o in group.transition_jaxpr.outvars):
        return jnp.zeros_like(tangent)

    def step(concat):
        return group.concat_hidden(group.transition(group.split_hidden(concat), consts))

    return jax.jvp(step, (old,), (tangent.astype(old.dtype),))[1]


def learning_signals(graph: ETraceGraph, perturb_cotangents) -> list:
    """Per group, ``∂L/∂h`` stacked to ``(*V, S)`` from the perturbation cotangents."""
    by_path = dict(zip(graph.hidden_perturb.perturb_hidden_paths, perturb_cotangents, strict=True))
    return [g.concat_hidden([by_path[p] for p in g.hidden_paths]) for g in graph.hidden_groups]


def old_hidden_signals(graph: ETraceGraph, layout: StateLayout, other_cotangents) -> list | None:
    """Per group, ``∂L/∂h_{t-1}`` along same-step paths, or None when no group has one."""
    if not graph.hidden_perturb.bypass_hidden_paths:
        return None
    by_path = layout.hidden_values_by_path(other_cotangents)
    return [g.concat_hidden([by_path[p] for p in g.hidden_paths]) for g in graph.hidden_groups]


#: Up to this many stacked states, :func:`apply_jacobian` is unrolled into multiply-adds.
_UNROLLED_JACOBIAN_STATES = 8


def apply_jacobian(jacobian, trace, varshape_rank: int):
    """``Σ_b D[..., a, b] ε[..., c, b]`` for a trace ``(*V, *C, S)``."""
    v_shape = trace.shape[:varshape_rank]
    s = trace.shape[-1]
    flat = trace.reshape(v_shape + (-1, s))
    if s == 1:
        out = flat * jacobian[..., 0, 0][..., None, None]
    elif s <= _UNROLLED_JACOBIAN_STATES:
        # A few stacked states (LSTM: h and c): as an einsum this is a dot_general with every
        # hidden position as a batch axis, which XLA:CPU runs as B·N tiny S×S products (an
        # LSTM D-RTRL step took 30x BPTT, issue 14); S broadcast multiply-adds fuse into one
        # pass over the trace.
        out = flat[..., :, 0:1] * jacobian[..., None, :, 0]
        for b in range(1, s):
            out = out + flat[..., :, b:b + 1] * jacobian[..., None, :, b]
    else:
        out = jnp.einsum("...ab,...cb->...ca", jacobian, flat)
    return out.reshape(trace.shape)
