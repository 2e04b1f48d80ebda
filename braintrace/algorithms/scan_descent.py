# Copyright 2026 The braintrace authors. Licensed under the Apache License, Version 2.0.
"""Run time of scan descent: the trace increment of an op inside a long scan.

For a relation whose op sits in a descended scan body
(:mod:`braintrace.compiler.scan_descent`), the per-parameter (D-RTRL) trace of one step is

    ε_t = D_t ε_{t-1} + J_exit · e_L,   e_0 = 0,   e_τ = D_τ e_{τ-1} + df_τ ⊗ x_τ,

where ``D_t`` is the group's whole-step Jacobian (through the scan, as for any opaque
equation), ``D_τ`` the per-substep Jacobian of the descended carry, ``df_τ = ∂c_τ/∂y_τ`` the
body tail, ``x_τ`` the op input at substep ``τ``, and ``J_exit = ∂h_t/∂c_L`` maps the final
carry to the group. Since every map is linear in the trace, this equals folding
``ε ← D_τ ε + df_τ ⊗ x_τ`` over the substeps of the step. :func:`descended_increments`
computes ``J_exit · e_L`` in one ``lax.scan`` that re-runs the body: nothing is unrolled and
nothing is stacked over the trip count, so compile time and memory do not depend on it.
The D-RTRL roll uses it in place of the instantaneous increment ``df_t ⊗ x_t``.

Only the per-parameter engine (``ParamDimVjpAlgorithm`` and the rules built on it) uses
these increments; other engines refuse descended graphs at compile time
(:func:`check_supported`).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from .. import _errors
from .._jax_compat import Literal
from ..compiler.jaxpr_tools import evaluate_jaxpr
from ..compiler.scan_descent import descended_relations
from ..ops.primitive import etp_rule_of
from .executor import apply_jacobian

__all__ = ["check_supported", "descended_increments"]


def check_supported(rule, graph, learner_name: str) -> None:
    """Raise ``NotSupportedError`` when ``graph`` has descended scans ``rule`` cannot train.

    Parameters
    ----------
    rule : TraceRule
        The learner's rule; its class attribute ``supports_scan_descent`` says whether its
        traces can be folded over substeps.
    graph : ETraceGraph
        The compiled graph.
    learner_name : str
        The learner's class name, for the message.

    Examples
    --------
    >>> class Rule:
    ...     supports_scan_descent = False
    >>> class Graph:
    ...     hidden_param_op_relations = ()
    >>> check_supported(Rule(), Graph(), 'D_RTRL') is None
    True
    """
    descended = descended_relations(graph.hidden_param_op_relations)
    if not descended or getattr(rule, "supports_scan_descent", False):
        return
    lengths = sorted({r.control_flow_context.scan.length for r in descended})
    weights = sorted({".".join(map(str, p)) for r in descended for p in r.trainable_paths.values()})
    raise _errors.NotSupportedError(
        f"{learner_name} cannot train ETP ops inside a descended `scan` (length "
        f"{', '.join(map(str, lengths))}; weights {', '.join('`' + w + '`' for w in weights)}): its traces are not "
        "folded over the substeps of a step. Use braintrace.D_RTRL (or EProp / ThreeFactor, which share its "
        "per-parameter traces), raise ControlFlowPolicy.scan_unroll_limit to unroll the loop, or pass "
        "ControlFlowPolicy(scan_descent='off') to leave those weights untrained."
    )


def _read(atom, temps):
    return atom.val if isinstance(atom, Literal) else temps[atom]


def _state_jacobian(scan, state, values):
    """``D_τ[..., a, b] = ∂c_new[a]/∂c_old[b]`` per position, ``(*shape, K, K)``."""
    consts = [values[v] for v in scan.transition.constvars]

    def step(stacked):
        parts = [stacked[..., k] for k in range(scan.num_state)]
        return jnp.stack(evaluate_jaxpr(scan.transition, consts, parts), axis=-1)

    stacked = jnp.stack(state, axis=-1)
    cols = []
    for b in range(scan.num_state):
        tangent = jnp.zeros_like(stacked).at[..., b].set(1.0)
        cols.append(jax.jvp(step, (stacked,), (tangent,))[1])
    return jnp.stack(cols, axis=-1)


def _body_tail_sensitivity(context, y, values):
    """``df_τ = ∂c_τ/∂y_τ`` along an all-ones tangent, ``(*shape, K)``."""
    consts = [values[v] for v in context.body_tail.constvars]

    def tail(y_value):
        return jnp.stack([jnp.broadcast_to(o, context.scan.state_shape)
                          for o in evaluate_jaxpr(context.body_tail, consts, [y_value])], axis=-1)

    return jax.jvp(tail, (y,), (jnp.ones_like(y),))[1]


def _fold(scan, members, effective, temps) -> list:
    """``e_L`` per member relation: the trace increment folded over the scan's substeps."""
    consts = [_read(a, temps) for a in scan.const_operands]
    carry0 = [_read(a, temps) for a in scan.carry_operands]
    xs = [_read(a, temps) for a in scan.xs_operands]
    n_carry = len(carry0)
    rank = len(scan.state_shape)

    def increments(state, values):
        out = []
        for rel, eff in zip(members, effective, strict=True):
            context = rel.control_flow_context
            x = None if rel.x_var is None else values[rel.x_var]
            df = _body_tail_sensitivity(context, values[rel.y_var], values)
            out.append(etp_rule_of(rel.primitive).trace_increment(x, df, eff, rel.eqn_params))
        return out

    def substep(carry, xs_t):
        state_in, folds = carry
        outs = evaluate_jaxpr(scan.body, list(scan.body_consts), [*consts, *state_in, *xs_t])
        values = dict(zip(scan.exposed, outs[n_carry:], strict=True))
        jacobian = _state_jacobian(scan, [state_in[k] for k in scan.state_positions], values)
        new = [{k: (apply_jacobian(jacobian, fold[k], rank) + inc[k]).astype(fold[k].dtype) for k in fold}
               for fold, inc in zip(folds, increments(state_in, values), strict=True)]
        return (list(outs[:n_carry]), new), None

    def first_values():
        first = [x[0] for x in xs]
        outs = evaluate_jaxpr(scan.body, list(scan.body_consts), [*consts, *carry0, *first])
        return increments(carry0, dict(zip(scan.exposed, outs[n_carry:], strict=True)))

    shapes = jax.eval_shape(first_values)
    zeros = [{k: jnp.zeros(s.shape, s.dtype) for k, s in inc.items()} for inc in shapes]
    (_, folds), _ = jax.lax.scan(substep, (carry0, zeros), xs, length=scan.length)
    return folds


def _exit_jacobian(context, group_position, group, temps):
    """``∂h_t/∂c_L`` for one group of the relation, ``(*varshape, S, K)``."""
    jaxpr = context.exit_jaxprs[group_position]
    consts = [temps[v] for v in jaxpr.constvars]
    final = jnp.stack([temps[v] for v in context.scan.exit_carry_vars], axis=-1)

    def exit_map(stacked):
        parts = [stacked[..., k] for k in range(context.scan.num_state)]
        return group.concat_hidden(evaluate_jaxpr(jaxpr, consts, parts))

    cols = []
    for b in range(context.scan.num_state):
        tangent = jnp.zeros_like(final).at[..., b].set(1.0)
        cols.append(jax.jvp(exit_map, (final,), (tangent,))[1])
    return jnp.stack(cols, axis=-1)


def _map_out(exit_jacobian, fold, rank: int):
    """``Σ_k J[..., a, k] e[..., c, k]`` for a fold ``(*V, *C, K)``: a trace ``(*V, *C, S)``."""
    v_shape, k = fold.shape[:rank], fold.shape[-1]
    flat = fold.reshape(v_shape + (-1, k))
    out = jnp.einsum("...ak,...ck->...ca", exit_jacobian.astype(flat.dtype), flat)
    return out.reshape(fold.shape[:-1] + (exit_jacobian.shape[-2],))


def descended_increments(graph, temps, effective) -> tuple:
    """Per relation, ``None`` or one trace increment per group (``J_exit · e_L``).

    Parameters
    ----------
    graph : ETraceGraph
        The compiled graph.
    temps : VarValues
        The step temporaries (the scan operands and final carry are among them).
    effective : sequence of dict
        Per relation, the effective op parameters.

    Returns
    -------
    tuple
        ``None`` for a relation of the step itself; for a descended relation a tuple, per
        group, of ``{key: (*V, *C, S)}`` increments replacing ``df_t ⊗ x_t``.
    """
    relations = list(graph.hidden_param_op_relations)
    out = [None] * len(relations)
    by_scan: dict = {}
    for r, rel in enumerate(relations):
        context = rel.control_flow_context
        if context is not None:
            by_scan.setdefault(id(context.scan), (context.scan, []))[1].append(r)
    for scan, indices in by_scan.values():
        members = [relations[r] for r in indices]
        folds = _fold(scan, members, [effective[r] for r in indices], temps)
        for r, rel, fold in zip(indices, members, folds, strict=True):
            per_group = []
            for i, group in enumerate(rel.hidden_groups):
                jac = jax.lax.stop_gradient(_exit_jacobian(rel.control_flow_context, i, group, temps))
                per_group.append({k: _map_out(jac, f, len(group.varshape)) for k, f in fold.items()})
            out[r] = tuple(per_group)
    return tuple(out)
