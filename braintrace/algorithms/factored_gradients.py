# Copyright 2026 The braintrace authors. Licensed under the Apache License, Version 2.0.
"""Dense-op weight gradients as factor pairs, summed once per window of steps.

A dense op ``y = x @ W`` receives, at every step, a weight gradient that is an outer product
over the leading (batch) axes: ``x̄ᵀ s`` from ES-D-RTRL's factorised traces, and ``xᵀ ∂L/∂y``
as the same-step gradient of a weight no trace carries (the GRU reset gate, a readout). With a
batch of ``B`` each is an ``(I × B)·(B × O)`` product, which a CPU runs far below its matrix
throughput, followed by an add into the running gradient (issue 14's profile: these products
and adds were half of an ES-D-RTRL step).

Under :func:`~braintrace.etrace_grad` the step's backward pass can instead hand the pair
``(x, s)`` to the driver, which stacks ``K`` steps of pairs and adds ``Σ_k x_kᵀ s_k`` as one
``(I × K·B)·(K·B × O)`` product per window: the same sum in another order, with memory
``K·B·(I + O)`` per pair, constant in the sequence length.

How the pairs leave the step: the learner's ``custom_vjp`` step takes one zero *sink* per pair
as an extra primal input, and its backward pass returns the pair as the sink's cotangent and
a zero for the weight, so the per-step dense product is dead code that XLA removes.

Which weights qualify (:func:`plan_factors`):

* a *trace* pair: a relation of a rule that defines ``weight_factor`` (ES-D-RTRL), whose op is
  the plain dense ``etp_matmul`` (no ``weight_fn``, no processing between the ParamState leaf
  and the op) and whose groups all have the op's output shape;
* a *same-step* pair: a ParamState leaf read by exactly one equation of the perturbed step
  that carries a gradient to the step outputs, that equation being such a plain dense
  ``etp_matmul`` reading the leaf itself as its weight. Its ``∂L/∂y`` comes from a zero *tap*
  added to the op output (``_tapped_jaxpr``).

The factored step also computes the input cotangent ``ct @ Wᵀ`` of live dense ops from row
blocks of ``Wᵀ`` that the driver transposes once per sequence (:class:`TransposedWeight`):
one block per concatenated input part, so a dead part (the data input of ``[x, r*h]``) costs
nothing. Memory: the stacked pairs (a constant in ``T``) and one transposed copy of those
weights. A same-step pair that reaches the outputs only through such a part (the GRU reset
gate) stacks ``(x, ct, m)`` and has its ``s`` made per window
(:mod:`~braintrace.algorithms.deferred_cotangents`).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp

from .._jax_compat import bind_equation, build_jaxpr, new_var
from .._jax_compat import lax_primitives as P
from ..compiler.jaxpr_tools import forward_closure, is_var, make_eqn
from ..ops.matmul import etp_matmul_p
from .deferred_cotangents import chain_diagonal, find_deferral

__all__ = ["Factor", "FactorPlan", "plan_factors", "choose_window", "memory_neutral_window", "add_window",
           "group_cotangent", "per_step_groups", "MAX_WINDOW", "MIN_AUTO_WINDOW", "NARROW_WIDTH"]

#: The longest window the automatic choice uses. Longer windows gained nothing measurable
#: (GRU N=1024, B=16, T=100: K=16, 20 and 25 within noise of each other, 200-218 ms) while
#: their stacks keep growing.
MAX_WINDOW = 16
#: The shortest window the automatic choice uses. Shorter windows buy little for their
#: stacked pairs' memory (Elman N=128, B=16, T=200: K=4 14% faster than one product per step,
#: for 34% more memory; GRU N=256: K=8 7-10% faster than K=4), so 'auto' keeps the per-step
#: product below it.
MIN_AUTO_WINDOW = 8
#: A pair whose ``I`` or ``ΣO`` is at most this is *narrow* (a readout to a few outputs):
#: its product is summed as broadcast multiply-adds, which XLA:CPU ran about 1.8x faster than
#: the dot it would otherwise lower to (a ``(B·K)ᵀ`` contraction with 8 output columns; 0.58
#: against 1.03 ms per 200 steps of a 256 → 8 readout at B=16, measured in isolation).
NARROW_WIDTH = 16


class Factor(NamedTuple):
    """One factor pair: ``Σ_lead x[..., i] s[..., o]`` is added to one ParamState leaf.

    Attributes
    ----------
    kind : str
        ``'trace'`` (an ES-D-RTRL relation's ``x̄ᵀ s``) or ``'same_step'`` (a tapped op).
    index : int
        The relation index (trace) or the tap index (same step).
    param_slot, leaf : int
        The ParamState (position among the learner's parameter states) and its leaf.
    x_shape, s_shape : tuple
        Shapes of the pair, ``(*lead, I)`` and ``(*lead, O)``.
    dtype : numpy dtype
        The leaf's dtype (the pair is cast to it).
    bias : tuple or None
        ``(param_slot, leaf)`` of the op's bias, which gets ``Σ_lead s`` (the same window), or
        None when the bias (if any) keeps its per-step gradient.
    share : Var or None
        Trace pairs of relations that read the same op input (the gates of a GRU or LSTM)
        have the same ``x̄``; they share one stacked ``x̄`` and one product with their ``s``
        side by side (see :meth:`FactorPlan.groups`).
    deferral : Deferral or None
        A same-step pair whose ``s = (ct · W[rows]ᵀ) ⊙ m`` is made per window from stacked
        ``(ct, m)`` (:mod:`~braintrace.algorithms.deferred_cotangents`); its sink is
        ``(x, (ct, m))``.
    """

    kind: str
    index: int
    param_slot: int
    leaf: int
    x_shape: tuple
    s_shape: tuple
    dtype: object
    bias: tuple | None = None
    share: object = None
    deferral: object = None


class Tap(NamedTuple):
    """A zero added to the output of one dense op of the perturbed step."""

    eqn_index: int
    x_var: object
    y_var: object


class TransposedWeight(NamedTuple):
    """A dense op whose input cotangent ``ct @ Wᵀ`` reads row blocks of ``Wᵀ`` made once.

    When the op input is a concatenation ``[x_1, ..., x_n]`` along its last axis, the
    cotangent of each part is ``ct @ W[rows_k]ᵀ`` on its own: the GRU reset gate's same-step
    gradient needs the ``r*h`` part of ``ct @ Whᵀ`` every step, and the full ``(B, I+N)``
    product (the ``x`` part is dead) took twice the time of a forward product (issue 14's
    profile). The driver slices and transposes the weight once, outside its loop.

    Attributes
    ----------
    x_var, w_var : Var
        The op's input and weight operands.
    param_slot, leaf : int
        The ParamState leaf of the weight.
    parts : tuple of (Var, int, int)
        ``(part, first row, end row)`` of the op input (one part: the input itself).
    """

    x_var: object
    w_var: object
    param_slot: int
    leaf: int
    parts: tuple


class FactorPlan(NamedTuple):
    """The factor pairs of a compiled learner (empty: every gradient stays dense).

    Attributes
    ----------
    factors : tuple of Factor
        In sink order.
    taps : tuple of Tap
        The tapped ops of the same-step pairs (``Factor.index`` points here).
    tapped_jaxpr : Jaxpr or None
        The perturbed step with one extra input per tap (added to the op output) and, after
        its outputs, the tapped ops' inputs ``x``; None without taps.
    perturb_jaxpr : Jaxpr
        The perturbed step the plan was made for.
    transposed : tuple of TransposedWeight
        The ops whose input cotangent reads a transposed weight (one array per entry in
        the step's sinks).
    """

    factors: tuple = ()
    taps: tuple = ()
    tapped_jaxpr: object = None
    perturb_jaxpr: object = None
    transposed: tuple = ()

    def subset(self, keep) -> FactorPlan:
        """The plan of the factors for which ``keep(factor)`` holds (taps renumbered)."""
        factors, taps = [], []
        for f in self.factors:
            if not keep(f):
                continue
            if f.kind == "same_step":
                taps.append(self.taps[f.index])
                f = f._replace(index=len(taps) - 1)
            factors.append(f)
        tapped = _tapped_jaxpr(self.perturb_jaxpr, taps) if taps else None
        transposed = self.transposed if factors else ()
        return FactorPlan(tuple(factors), tuple(taps), tapped, self.perturb_jaxpr, transposed)

    @property
    def step_jaxpr(self):
        """The jaxpr the factored step evaluates (the tapped one, or the perturbed step)."""
        return self.perturb_jaxpr if self.tapped_jaxpr is None else self.tapped_jaxpr

    def transposed_weights(self, param_leaves) -> tuple:
        """Per :class:`TransposedWeight`, ``W[rows_k]ᵀ`` of every part, from the parameter leaves."""
        return tuple(tuple(jnp.swapaxes(param_leaves[t.param_slot][t.leaf][start:stop], 0, 1)
                           for _, start, stop in t.parts) for t in self.transposed)

    def groups(self) -> tuple:
        """The factors as sink groups: factors with one ``share`` key (same ``x``) together."""
        out, index = [], {}
        for f in self.factors:
            key = None if f.share is None else (f.share, f.x_shape, f.s_shape[:-1], f.dtype)
            if key is not None and key in index:
                out[index[key]].append(f)
                continue
            if key is not None:
                index[key] = len(out)
            out.append([f])
        return tuple(tuple(g) for g in out)

    def zero_sinks(self) -> tuple:
        """One ``(x, s)`` pair of zeros per group (the sinks the step takes), ``(x, (ct, m))`` if deferred."""
        out = []
        for g in self.groups():
            f = g[0]
            s = jnp.zeros(_group_s_shape(g), f.dtype)
            if f.deferral is not None:
                s = (jnp.zeros(f.deferral.ct_shape, f.deferral.ct_dtype), s)
            out.append((jnp.zeros(f.x_shape, f.dtype), s))
        return tuple(out)

    @property
    def deferred(self) -> tuple:
        """The factors with a :class:`~braintrace.algorithms.deferred_cotangents.Deferral`, in sink order."""
        return tuple(f for f in self.factors if f.deferral is not None)

    def __repr__(self) -> str:
        kinds = [f"{f.kind}:{f.param_slot}/{f.leaf}" for f in self.factors]
        return f"FactorPlan({kinds})"


def _group_s_shape(group) -> tuple:
    return group[0].s_shape[:-1] + (sum(f.s_shape[-1] for f in group),)


def group_cotangent(group, pairs) -> tuple:
    """The sink cotangent of one group from ``{factor: (x, s)}``: shared ``x``, ``s`` side by side."""
    f0 = group[0]
    x = pairs[f0][0].astype(f0.dtype).reshape(f0.x_shape)
    if f0.deferral is not None:
        ct, m = pairs[f0][1]
        return x, (ct.astype(f0.deferral.ct_dtype), m.astype(f0.dtype).reshape(f0.s_shape))
    parts = [pairs[f][1].astype(f.dtype).reshape(f.s_shape) for f in group]
    return x, parts[0] if len(parts) == 1 else jnp.concatenate(parts, axis=-1)


def _plain_dense(eqn_params) -> bool:
    return eqn_params.get("weight_fn") is None


def plan_factors(graph, layout, rule, ctx, param_leaves) -> FactorPlan:
    """The factor pairs of a learner: its graph, state layout, rule and parameter leaves."""
    factors = []
    trace_factor = getattr(rule, "weight_factor", None)
    if trace_factor is not None:
        for r, rel in enumerate(graph.hidden_param_op_relations):
            factor = _trace_factor(r, rel, layout, param_leaves)
            if factor is not None:
                factors.append(factor)
    taps = []
    if rule.same_step_gradients:
        for tap, factor in _same_step_factors(graph, layout, param_leaves):
            taps.append(tap)
            factors.append(factor._replace(index=len(taps) - 1))
    jaxpr = graph.hidden_perturb.perturb_jaxpr
    transposed = _transposed_weights(graph, layout, param_leaves) if factors else ()
    if taps and transposed:
        factors = _with_deferrals(graph, layout, factors, taps, transposed)
    return FactorPlan(tuple(factors), tuple(taps), _tapped_jaxpr(jaxpr, taps) if taps else None, jaxpr,
                      transposed)


def _with_deferrals(graph, layout, factors, taps, transposed) -> list:
    """``factors`` with a :class:`Deferral` on every same-step pair that qualifies."""
    eqns, main, leaf_of_var = _perturbed_step(graph, layout)
    sources = set(leaf_of_var) | set(graph.hidden_perturb.perturb_vars)
    var_of_leaf = {v: k for k, v in leaf_of_var.items()}
    out = []
    for f in factors:
        if f.kind == "same_step":
            tap = taps[f.index]
            op = eqns[tap.eqn_index]
            has_bias = bool(op.params.get("has_bias")) and len(op.invars) > 2
            own = {op.invars[1]} | ({var_of_leaf[f.bias]} if f.bias is not None else set())
            if not has_bias or f.bias is not None:
                deferral = find_deferral(eqns, main, tap.y_var, op, own, sources, transposed)
                if deferral is not None:
                    f = f._replace(deferral=deferral)
        out.append(f)
    return out


def _transposed_weights(graph, layout, param_leaves) -> tuple:
    """Live plain dense ops whose input carries a gradient (from a parameter or a perturbation).

    The weight operand must be a ParamState leaf or its ``stop_gradient`` (the detached copy
    in a perturbed step's cross-group duplicate).
    """
    eqns, main, leaf_of_var = _perturbed_step(graph, layout)
    for e in eqns:  # a detached weight: stop_gradient(W)
        if e.primitive is P.stop_gradient_p and is_var(e.invars[0]) and e.invars[0] in leaf_of_var:
            leaf_of_var[e.outvars[0]] = leaf_of_var[e.invars[0]]
    sources = set(leaf_of_var) | set(graph.hidden_perturb.perturb_vars)
    gradient_carrying = forward_closure(sources, eqns, crosses=_carries_gradient)
    producers = {v: e for e in eqns for v in e.outvars if is_var(v)}
    out = []
    for eqn in eqns:
        if eqn.primitive is not etp_matmul_p or not _plain_dense(eqn.params):
            continue
        x, w = eqn.invars[0], eqn.invars[1]
        if not (is_var(x) and is_var(w) and w in leaf_of_var and x in gradient_carrying):
            continue
        if len(w.aval.shape) != 2 or not jnp.issubdtype(w.aval.dtype, jnp.floating):
            continue
        if not forward_closure([eqn.outvars[0]], eqns, crosses=_carries_gradient) & main:
            continue  # the op's output carries no gradient: its input cotangent is dead
        slot, leaf = leaf_of_var[w]
        out.append(TransposedWeight(x, w, slot, leaf, _input_parts(x, producers.get(x))))
    return tuple(out)


def _input_parts(x, producer) -> tuple:
    """``(part, first row, end row)`` of ``x``: its concatenated parts, or ``x`` whole."""
    n = x.aval.shape[-1]
    if (producer is None or producer.primitive is not P.concatenate_p
            or producer.params.get("dimension") != len(x.aval.shape) - 1):
        return ((x, 0, n),)
    parts, start = [], 0
    for operand in producer.invars:
        stop = start + operand.aval.shape[-1]
        if is_var(operand):  # a literal part has no cotangent
            parts.append((operand, start, stop))
        start = stop
    return tuple(parts)


def transposed_override(plan: FactorPlan, transposed_values, deferred_sinks=(), deferred_m=None,
                        exact: bool = True):
    """``evaluate_jaxpr`` override: the plan's ops with input cotangent ``ct @ Wᵀ`` from ``Wᵀ``.

    A part of a deferred factor (:attr:`FactorPlan.deferred`) gets ``ct @ Wᵀ`` only when
    ``exact``; the op output adds that factor's zero entry of ``deferred_sinks``, whose
    cotangent is then ``ct`` (as a tap's is ``∂L/∂y``), and the chain's ``m`` is written to
    ``deferred_m[k]``.
    """

    by_operands = {(t.x_var, t.w_var): (k, t, values)
                   for k, (t, values) in enumerate(zip(plan.transposed, transposed_values, strict=True))}
    deferred_parts = {(f.deferral.transposed, f.deferral.part): (k, f) for k, f in enumerate(plan.deferred)}
    eqns = plan.perturb_jaxpr.eqns if deferred_parts else ()

    def override(eqn, invals, read):
        if eqn.primitive is not etp_matmul_p:
            return None
        hit = by_operands.get((eqn.invars[0], eqn.invars[1]))
        if hit is None:
            return None
        # The op on a detached input keeps the weight's (and bias's) gradient; each input part
        # gets its cotangent `ct @ W[rows]ᵀ` from a zero-valued hook (XLA drops the zeros).
        t_index, t, blocks = hit
        outs = bind_equation(eqn, [jax.lax.stop_gradient(invals[0])] + list(invals[1:]))
        y = outs[0]
        for p_index, ((part, _, _), block) in enumerate(zip(t.parts, blocks, strict=True)):
            deferred = deferred_parts.get((t_index, p_index))
            if deferred is None or exact:
                y = y + _cotangent_hook(read(part), block.astype(y.dtype)).astype(y.dtype)
            if deferred is not None:
                k, f = deferred
                y_var = plan.taps[f.index].y_var
                deferred_m[k] = jax.lax.stop_gradient(chain_diagonal(eqns, f.deferral, y_var, read(y_var), read))
                y = y + deferred_sinks[k].astype(y.dtype)
        return [y] + list(outs[1:])

    return override


@jax.custom_vjp
def _cotangent_hook(part, block):
    """Zeros shaped like the op output; backward: the part's cotangent ``ct @ block``.

    ``block`` is ``W[rows]ᵀ`` of shape ``(O, rows)``.
    """
    return jnp.zeros(part.shape[:-1] + block.shape[:1], block.dtype)


def _cotangent_hook_fwd(part, block):
    return _cotangent_hook(part, block), (block, jnp.zeros((0,), part.dtype))


def _cotangent_hook_bwd(residual, ct):
    block, like = residual
    return jnp.matmul(ct, block).astype(like.dtype), jnp.zeros_like(block)


_cotangent_hook.defvjp(_cotangent_hook_fwd, _cotangent_hook_bwd)


def _trace_factor(r, rel, layout, param_leaves):
    if (rel.primitive is not etp_matmul_p or not _plain_dense(rel.eqn_params) or rel.x_var is None
            or rel.control_flow_context is not None or "weight" not in rel.trainable_paths
            or rel.trainable_processing_jaxprs.get("weight") is not None):
        return None
    x_shape, y_shape = tuple(rel.x_var.aval.shape), tuple(rel.y_var.aval.shape)
    if len(x_shape) < 1 or x_shape[:-1] != y_shape[:-1]:
        return None
    if any(tuple(g.varshape) != y_shape for g in rel.hidden_groups):
        return None  # the op output is broadcast onto the group: keep the dense contraction
    slot = layout.param_slot(rel.trainable_paths["weight"])
    leaf = rel.trainable_leaf_indices["weight"]
    dtype = jnp.result_type(param_leaves[slot][leaf])
    if not jnp.issubdtype(dtype, jnp.floating):
        return None
    bias = None
    if ("bias" in rel.trainable_paths and rel.eqn_params.get("bias_fn") is None
            and rel.trainable_processing_jaxprs.get("bias") is None):
        bias_slot = layout.param_slot(rel.trainable_paths["bias"])
        bias_leaf = rel.trainable_leaf_indices["bias"]
        if jnp.result_type(param_leaves[bias_slot][bias_leaf]) == dtype:
            bias = (bias_slot, bias_leaf)
    return Factor("trace", r, slot, leaf, x_shape, y_shape, dtype, bias, share=rel.x_var)


def _carries_gradient(eqn) -> bool:
    return eqn.primitive is not P.stop_gradient_p


def _perturbed_step(graph, layout) -> tuple:
    """``(equations, main output vars, {ParamState leaf var: (slot, leaf)})`` of the perturbed step."""
    jaxpr = graph.hidden_perturb.perturb_jaxpr
    main = {jaxpr.outvars[i] for i in layout.main_output_positions if is_var(jaxpr.outvars[i])}
    leaf_of_var = {}
    for slot, path in enumerate(layout.param_paths):
        for leaf, var in enumerate(graph.module_info.weight_path_to_invars.get(path, ())):
            leaf_of_var[var] = (slot, leaf)
    return list(jaxpr.eqns), main, leaf_of_var


def _same_step_factors(graph, layout, param_leaves):
    eqns, main, leaf_of_var = _perturbed_step(graph, layout)

    def only_live_reader(var):
        """The one equation reading ``var`` whose outputs carry a gradient to the outputs, or None."""
        if var in main:
            return None
        readers = [i for i, e in enumerate(eqns) if any(is_var(a) and a is var for a in e.invars)]
        live = [i for i in readers
                if forward_closure([v for v in eqns[i].outvars if is_var(v)], eqns, crosses=_carries_gradient) & main]
        return live[0] if len(live) == 1 else None

    out = []
    for var, (slot, leaf) in leaf_of_var.items():
        i = only_live_reader(var)
        if i is None:
            continue
        eqn = eqns[i]
        if (eqn.primitive is not etp_matmul_p or not _plain_dense(eqn.params) or eqn.invars[1] is not var
                or sum(1 for a in eqn.invars if a is var) != 1 or not is_var(eqn.invars[0])):
            continue
        x, y = eqn.invars[0], eqn.outvars[0]
        x_shape, y_shape = tuple(x.aval.shape), tuple(y.aval.shape)
        dtype = jnp.result_type(param_leaves[slot][leaf])
        if x_shape[:-1] != y_shape[:-1] or not jnp.issubdtype(dtype, jnp.floating):
            continue
        bias = None
        if eqn.params.get("has_bias") and eqn.params.get("bias_fn") is None and len(eqn.invars) > 2:
            b = eqn.invars[2]
            if (is_var(b) and b in leaf_of_var and b is not var and sum(1 for a in eqn.invars if a is b) == 1
                    and only_live_reader(b) == i
                    and jnp.result_type(param_leaves[leaf_of_var[b][0]][leaf_of_var[b][1]]) == dtype):
                bias = leaf_of_var[b]
        out.append((Tap(i, x, y), Factor("same_step", -1, slot, leaf, x_shape, y_shape, dtype, bias)))
    return out


def _tapped_jaxpr(jaxpr, taps):
    """``jaxpr`` with ``y = ŷ + t`` after every tapped op and the ops' inputs as extra outputs."""
    by_eqn = {tap.eqn_index: tap for tap in taps}
    tap_vars = [new_var(tap.y_var.aval) for tap in taps]
    position = {tap.eqn_index: k for k, tap in enumerate(taps)}
    eqns = []
    for i, eqn in enumerate(jaxpr.eqns):
        if i not in by_eqn:
            eqns.append(eqn)
            continue
        tap = by_eqn[i]
        hat = new_var(tap.y_var.aval)
        outs = list(eqn.outvars)
        outs[0] = hat
        eqns.append(eqn.replace(outvars=outs))
        eqns.append(make_eqn([hat, tap_vars[position[i]]], [tap.y_var], P.add_p))
    return build_jaxpr(jaxpr.constvars, jaxpr.consts, list(jaxpr.invars) + tap_vars,
                       list(jaxpr.outvars) + [tap.x_var for tap in taps], eqns)


def memory_neutral_window(group) -> int:
    """The longest window whose stacked pairs need at most the dense gradients' memory.

    For a group of factors sharing one ``x`` (a single factor is a group of one):
    ``K·lead·(I + ΣO) <= I·ΣO``, at most :data:`MAX_WINDOW`; below
    :data:`MIN_AUTO_WINDOW` the automatic choice does not stack the group. The stacked pairs
    are the memory windowing adds (a constant in ``T``): :func:`add_window` runs the window
    products one after another, so one product temporary is live at a time.
    """
    group = (group,) if isinstance(group, Factor) else tuple(group)
    lead = max(1, math.prod(group[0].x_shape[:-1]))
    i, o = group[0].x_shape[-1], sum(f.s_shape[-1] for f in group)
    return min(MAX_WINDOW, (i * o) // (lead * (i + o)))


def choose_window(plan: FactorPlan, requested, length: int) -> tuple[FactorPlan, int]:
    """The factors to stack and the window length, for a sequence of ``length`` steps.

    ``'auto'`` keeps the factors whose :func:`memory_neutral_window` is at least
    :data:`MIN_AUTO_WINDOW` and uses the shortest of those windows (the whole sequence if
    that is shorter), with a remainder window when it does not divide ``length``; with those
    it also keeps the other narrow groups (:data:`NARROW_WIDTH`). An int ``K >= 2`` keeps every
    factor over ``K`` steps; ``1`` keeps no factors (one product per step, inside the step's
    backward pass). Either way the kept narrow groups that :func:`per_step_groups` names are
    summed at every step instead of stacked (no stacked memory).
    """
    if requested != "auto" and (isinstance(requested, bool) or not isinstance(requested, int) or requested < 1):
        raise ValueError(f"`gradient_window` must be 'auto' or a positive int; got {requested!r}.")
    if requested == "auto":
        windows = {f: memory_neutral_window(g) for g in plan.groups() for f in g}
        narrow = {f for g in plan.groups() if _is_narrow(g) for f in g}
        chosen = plan.subset(lambda f: windows[f] >= MIN_AUTO_WINDOW or f in narrow)
        # (``subset`` renumbers same-step factors, so the windows are read off the plan.)
        stacked = [windows[f] for f in plan.factors if windows[f] >= MIN_AUTO_WINDOW]
        if not stacked:  # narrow pairs alone do not pay for the factored step's transposed weights
            return plan.subset(lambda f: False), 1
        # No shorter divisor of ``length`` instead: the window products gain from every step
        # (Elman N=1024, B=16: K=16 with a remainder 5-9 % faster than K=10 at T=100, GRU 3-6 %;
        # the product alone 15 % faster), which outweighs compiling a remainder window.
        return chosen, min(min(stacked), length)
    k = min(int(requested), length)
    if k < 2 or not plan.factors:
        return plan.subset(lambda f: False), 1
    return plan, k


def _is_narrow(group) -> bool:
    return min(group[0].x_shape[-1], _group_s_shape(group)[-1]) <= NARROW_WIDTH


def per_step_groups(plan: FactorPlan, window: int) -> tuple:
    """Per group of ``plan``: summed at every step (True) rather than stacked over the window.

    A narrow group (:data:`NARROW_WIDTH`) that :func:`memory_neutral_window` would not stack
    over ``window`` steps: its pairs would cost more memory than its gradient.
    """
    return tuple(_is_narrow(g) and memory_neutral_window(g) < max(window, MIN_AUTO_WINDOW)
                 for g in plan.groups())


def add_window(plan: FactorPlan, layout, grads: dict, stacked, transposed=()) -> dict:
    """``grads`` (by ParamState path) plus ``Σ x_kᵀ s_k`` of every stacked group ``(K, *lead, ·)``.

    A group given as None is skipped (summed per step). Called with one step's pairs
    ``(*lead, ·)`` it adds that step's products. A deferred group's ``s`` is made here from
    its stacked ``(ct, m)`` and ``transposed`` (the plan's transposed weights).
    """
    grads = dict(grads)
    previous = None
    for group, pair in zip(plan.groups(), stacked, strict=True):
        wanted = [layout.param_paths[f.param_slot] in grads for f in group]
        if pair is None or not any(wanted):  # summed per step, or none among the differentiated weights
            continue
        xs, ss = pair
        x = xs.reshape(-1, xs.shape[-1])
        deferral = group[0].deferral
        if deferral is not None:  # s = (ct · W[rows]ᵀ) ⊙ m for the whole window at once
            cts, ms = ss
            block = transposed[deferral.transposed][deferral.part].astype(cts.dtype)
            ss = (jnp.matmul(cts.reshape(-1, cts.shape[-1]), block).astype(ms.dtype).reshape(ms.shape) * ms)
        s = ss.reshape(-1, ss.shape[-1])
        narrow = _is_narrow(group)
        if narrow:
            product = jnp.sum(x[:, :, None] * s[:, None, :], axis=0, dtype=group[0].dtype)
        else:
            if previous is not None:
                # One product at a time: XLA would otherwise run the groups' products side by
                # side, each with a temporary as large as its weight (GRU N=256: 2.36 -> 2.10 MB).
                x, s, _ = jax.lax.optimization_barrier((x, s, previous))
            product = jax.lax.dot_general(x, s, (((0,), (0,)), ((), ())), preferred_element_type=group[0].dtype)
        start = 0
        for factor, want in zip(group, wanted, strict=True):
            width = factor.s_shape[-1]
            columns = slice(start, start + width)
            start += width
            if not want:
                continue
            path = layout.param_paths[factor.param_slot]
            grads[path] = _add_to_leaf(grads[path], factor.leaf, product[:, columns])
            if not narrow:
                previous = jax.tree.leaves(grads[path])[factor.leaf]
            if factor.bias is not None:
                bias_path = layout.param_paths[factor.bias[0]]
                if bias_path in grads:
                    grads[bias_path] = _add_to_leaf(grads[bias_path], factor.bias[1], jnp.sum(s[:, columns], axis=0))
    return grads


def _add_to_leaf(tree, leaf: int, value):
    leaves, treedef = jax.tree.flatten(tree)
    leaves = list(leaves)
    leaves[leaf] = leaves[leaf] + value.astype(leaves[leaf].dtype)
    return jax.tree.unflatten(treedef, leaves)
