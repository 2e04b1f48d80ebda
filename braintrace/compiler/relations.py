# Copyright 2026 The braintrace authors. Licensed under the Apache License, Version 2.0.
"""Pass 3: relate each ETP op to the hidden groups its output feeds.

For every ETP equation ``y = op(x, θ)`` the pass

1. resolves each trainable input back to the ``ParamState`` leaf it comes from (through
   parameter-only processing such as a fixed mask, whose VJP is applied exactly later);
2. finds the hidden groups ``y`` reaches *directly*: a forward search that never crosses
   another (non element-wise) ETP op and stops at new hidden values; then, within those
   groups, every member reachable through the group's own new values (LSTM: ``c`` then
   ``h``);
3. checks that ``y`` broadcasts to each reached member's shape;
4. classifies each connection as ``all_direct`` or ``mixed`` (part of the influence runs
   through another ETP op and is missing from the trace);
5. builds, per group, the *tail* jaxpr ``y -> new group values`` made of parameter-free ops
   (other ETP outputs are constants), whose forward derivative gives ``∂h/∂y``.

Ops whose output reaches no hidden state are recorded as non-temporal (a readout learns
through the same-step output path instead) or weight-to-weight (reaches hidden states only
through another ETP op, like the GRU reset gate).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import Any, NamedTuple

from .._jax_compat import Jaxpr, Primitive, Var
from .._jax_compat import lax_primitives as P
from .._shapes import broadcasts_to as _broadcasts_to
from ..ops.primitive import etp_rule_of, is_etp_primitive
from .diagnostics import DiagnosticKind, DiagnosticLevel, PassResult, deliver_records, format_path, new_record
from .elementwise_check import non_elementwise_equations
from .hidden_groups import HiddenGroup
from .jaxpr_tools import (
    backward_slice,
    evaluate_jaxpr,
    forward_closure,
    is_var,
    jaxpr_from_slice,
    producer_map,
)
from .module_info import ModuleInfo

__all__ = [
    "PathClassification",
    "HiddenParamOpRelation",
    "find_hidden_param_op_relations",
    "find_hidden_param_op_relations_from_minfo",
]

Path = tuple[str, ...]


class PathClassification(str, enum.Enum):
    """How an op output reaches a hidden state."""

    ALL_DIRECT = "all_direct"
    MIXED = "mixed"
    ALL_THROUGH_OTHER_ETP = "all_through_other_etp"


class HiddenParamOpRelation(NamedTuple):
    """One ETP op ``y = op(x, θ)``, its trainable parameters and the hidden groups ``y`` feeds.

    Attributes
    ----------
    primitive : Primitive
        The ETP primitive (``etp_matmul``, ``etp_conv``, ...).
    x_var : Var or None
        The op's data input (``None`` for element-wise ops).
    y_var : Var
        The op's output.
    hidden_groups : list of HiddenGroup
        Groups ``y`` feeds directly.
    y_to_hidden_group_jaxprs : list of Jaxpr
        Per group, the parameter-free tail ``y -> new member values``.
    connected_hidden_paths : list of Path
        Hidden paths reached.
    eqn_params : dict
        Static parameters of the op equation.
    path_classification : dict
        ``{hidden_path: PathClassification}``.
    trainable_vars : dict
        ``{key: Var}``: the op's trainable inputs.
    trainable_paths : dict
        ``{key: ParamState path}``.
    trainable_leaf_indices : dict
        ``{key: leaf index in jax.tree.leaves(param.value)}``.
    trainable_param_states : dict
        ``{key: ParamState}``.
    trainable_processing_chains : dict
        ``{key: tuple of Primitive}`` crossed from the ParamState leaf to the op input.
    trainable_processing_jaxprs : dict
        ``{key: Jaxpr}`` mapping the ParamState leaf to the op input (empty chains absent);
        the algorithms pull gradients back through it.
    control_flow_context : DescendedRelation or None
        For an op inside a descended long ``scan``
        (:mod:`~braintrace.compiler.scan_descent`): the scan, the body tail and the exit
        maps. ``x_var``/``y_var`` are then body vars and the tails map ``y`` to the scan's
        carry. ``None`` for ops of the step itself.

    Examples
    --------
    >>> import brainstate, jax.numpy as jnp
    >>> import braintrace
    >>> gru = braintrace.nn.GRUCell(3, 4)
    >>> _ = brainstate.nn.init_all_states(gru)
    >>> relation = braintrace.compile_etrace_graph(gru, jnp.ones(3)).hidden_param_op_relations[0]
    >>> relation.trainable_paths
    {'weight': ('Wz', 'weight'), 'bias': ('Wz', 'weight')}
    >>> relation.connected_hidden_paths, relation.y_var.aval.shape
    ([('h',)], (4,))
    """

    primitive: Primitive
    x_var: Var | None
    y_var: Var
    hidden_groups: list
    y_to_hidden_group_jaxprs: list
    connected_hidden_paths: list
    eqn_params: dict
    path_classification: dict = {}
    trainable_vars: dict = {}
    trainable_paths: dict = {}
    trainable_leaf_indices: dict = {}
    trainable_param_states: dict = {}
    trainable_processing_chains: dict = {}
    trainable_processing_jaxprs: dict = {}
    control_flow_context: Any = None

    def y_to_hidden_groups(self, y_val, const_vals: Mapping[Var, Any], concat_hidden_vals: bool = True) -> list:
        """Evaluate the tails ``y -> new group values``.

        Parameters
        ----------
        y_val : jax.Array
            Value of the op output.
        const_vals : dict
            ``{Var: value}`` for every constvar of the tail jaxprs (the step temporaries).
        concat_hidden_vals : bool
            Concatenate each group's values into ``(*varshape, S)``.

        Returns
        -------
        list
            One entry per group: a list of member values, or their concatenation.
        """
        if self.control_flow_context is not None:
            raise ValueError(
                f"the `{self.primitive}` relation sits inside a descended scan: its tail maps the op output to "
                "the scan's carry at one substep, not to the hidden groups; the algorithms fold it over the "
                "substeps (see braintrace.algorithms.scan_descent and `control_flow_context`)."
            )
        results = []
        for group, jaxpr in zip(self.hidden_groups, self.y_to_hidden_group_jaxprs, strict=True):
            consts = [const_vals[v] for v in jaxpr.constvars]
            vals = evaluate_jaxpr(jaxpr, consts, [y_val])
            results.append(group.concat_hidden(vals) if concat_hidden_vals else vals)
        return results

    def dict(self) -> dict:
        """The relation's fields as a plain dictionary."""
        return self._asdict()

    def __repr__(self) -> str:
        groups = [g.index for g in self.hidden_groups]
        paths = sorted({".".join(map(str, p)) for p in self.trainable_paths.values()})
        return (f"HiddenParamOpRelation(primitive={self.primitive}, weights={paths}, "
                f"x={_aval(self.x_var)}, y={_aval(self.y_var)}, hidden_groups={groups}, "
                f"connected_hidden_paths={[format_path(p) for p in self.connected_hidden_paths]})")


def _aval(v) -> str:
    if v is None:
        return "None"
    return f"{v.aval.dtype}{list(v.aval.shape)}"



def _is_blocking(eqn) -> bool:
    return is_etp_primitive(eqn.primitive) and not etp_rule_of(eqn.primitive).gradient_enabled


def _crosses(eqn) -> bool:
    return eqn.primitive is not P.stop_gradient_p and not _is_blocking(eqn)



def _resolve_trainable(var, minfo: ModuleInfo, eqns, producers):
    """Trace an op input back to ParamState leaves.

    Returns ``(path, leaf_index, chain, processing_jaxpr or None, problem or None)``.
    """
    if not is_var(var):
        return None, None, (), None, "a literal constant"
    if var in minfo.invar_to_weight_path:
        path = minfo.invar_to_weight_path[var]
        return path, minfo.weight_path_to_invars[path].index(var), (), None, None
    hidden_or_arg = set(minfo.hidden_path_to_invar.values()) | set(minfo.closed_jaxpr.invars[:minfo.num_args])
    order, free = backward_slice([var], eqns, include=lambda i, e: True)
    if var not in producers:
        return None, None, (), None, "an input or state that is not a ParamState"
    weights = [v for v in free if v in minfo.invar_to_weight_path]
    if not weights:
        return None, None, (), None, "computed without any ParamState"
    if free & hidden_or_arg:
        return None, None, (), None, "computed from model inputs or hidden states, not from parameters alone"
    paths = {minfo.invar_to_weight_path[v] for v in weights}
    if len(paths) > 1:
        return None, None, (), None, (
            "computed from several ParamStates (" + ", ".join(sorted(format_path(p) for p in paths)) + "); "
            "combine them inside the op's weight_fn instead")
    if len(weights) > 1:
        return None, None, (), None, "computed from several leaves of one ParamState"
    leaf = weights[0]
    path = minfo.invar_to_weight_path[leaf]
    chosen = [eqns[i] for i in order]
    jaxpr = jaxpr_from_slice(chosen, free, [leaf], [var])
    chain = tuple(e.primitive for e in chosen)
    return path, minfo.weight_path_to_invars[path].index(leaf), chain, jaxpr, None


def find_hidden_param_op_relations_from_minfo(minfo: ModuleInfo, hid_path_to_group: Mapping[Path, HiddenGroup]):
    """Find the ETP ops of a traced step and the hidden groups their outputs feed.

    Parameters
    ----------
    minfo : ModuleInfo
        The traced step.
    hid_path_to_group : dict
        From :func:`find_hidden_groups_from_minfo`.

    Returns
    -------
    list of HiddenParamOpRelation

    Examples
    --------
    >>> import brainstate, jax.numpy as jnp
    >>> import braintrace
    >>> gru = braintrace.nn.GRUCell(3, 4)
    >>> _ = brainstate.nn.init_all_states(gru)
    >>> info = braintrace.extract_module_info(gru, jnp.ones(3))
    >>> _, by_path = braintrace.find_hidden_groups_from_minfo(info)
    >>> rels = braintrace.find_hidden_param_op_relations_from_minfo(info, by_path)
    >>> sorted(r.trainable_paths["weight"][0] for r in rels)
    ['Wh', 'Wz']
    """
    result = find_hidden_param_op_relations(minfo, hid_path_to_group)
    deliver_records(result.records, stacklevel=2)
    return result.value


class _Step(NamedTuple):
    """What every op of one step is analysed against."""

    minfo: ModuleInfo
    eqns: list
    producers: dict
    hidden_outvars: set
    readable_outvars: set
    hid_path_to_group: Mapping


def find_hidden_param_op_relations(minfo: ModuleInfo, hid_path_to_group: Mapping[Path, HiddenGroup],
                                   ) -> PassResult[list]:
    """:func:`find_hidden_param_op_relations_from_minfo` with its records, without warning."""
    for path in minfo.hidden_path_to_invar:
        if path not in hid_path_to_group:
            raise ValueError(f"hidden state `{format_path(path)}` has no hidden group; run the group pass first.")
    eqns = list(minfo.closed_jaxpr.eqns)
    _, _, other_state_outs = minfo.split_state_outvars()
    model_outvars = set(v for v in minfo.closed_jaxpr.outvars[:minfo.num_var_out] if is_var(v))
    step = _Step(minfo, eqns, producer_map(eqns), set(minfo.outvar_to_hidden_path),
                 model_outvars | set(v for v in other_state_outs if is_var(v)), hid_path_to_group)
    relations: list[HiddenParamOpRelation] = []
    records: list = []
    for index, eqn in enumerate(eqns):
        if is_etp_primitive(eqn.primitive):
            relation = _relate_op(step, index, eqn, records)
            if relation is not None:
                relations.append(relation)
    return PassResult(relations, tuple(records))


def _trainable_inputs(step: _Step, index: int, eqn, records: list) -> dict:
    """The op's trainable inputs resolved to ParamState leaves, field by relation field."""
    prim_name = str(eqn.primitive)
    found = {name: {} for name in ("trainable_vars", "trainable_paths", "trainable_leaf_indices",
                                   "trainable_param_states", "trainable_processing_chains",
                                   "trainable_processing_jaxprs")}
    for key, position in etp_rule_of(eqn.primitive).trainable_inputs(**eqn.params).items():
        var = eqn.invars[position]
        path, leaf, chain, jaxpr, problem = _resolve_trainable(var, step.minfo, step.eqns, step.producers)
        if problem is not None:
            records.append(new_record(
                DiagnosticKind.TRAINABLE_INVAR_NOT_PARAMSTATE,
                DiagnosticLevel.INFO if problem in ("a literal constant", "computed without any ParamState")
                else DiagnosticLevel.WARNING,
                f"Input `{key}` of `{prim_name}` is {problem}; it is not trained online.",
                primitive=prim_name, context={"key": key, "equation": index}))
            continue
        found["trainable_vars"][key] = var
        found["trainable_paths"][key] = path
        found["trainable_leaf_indices"][key] = leaf
        found["trainable_param_states"][key] = step.minfo.states_by_path()[path]
        found["trainable_processing_chains"][key] = chain
        if jaxpr is not None:
            found["trainable_processing_jaxprs"][key] = jaxpr
            records.append(new_record(
                DiagnosticKind.WEIGHT_PROCESSED_OUTSIDE_OP, DiagnosticLevel.INFO,
                f"`{format_path(path)}` is processed by ({', '.join(map(str, chain))}) before `{prim_name}`; "
                "the online gradient is pulled back through that processing exactly.",
                primitive=prim_name, weight_path=path, context={"key": key, "chain": [str(c) for c in chain]}))
    return found


def _kept_groups(step: _Step, y_var, full: set, direct: set, prim_name: str, weight_paths, records: list):
    """The groups ``y`` reaches directly and broadcasts to, each with its reached members."""
    direct_groups = []
    for v in direct:
        if v in step.hidden_outvars:
            g = step.hid_path_to_group[step.minfo.outvar_to_hidden_path[v]]
            if g not in direct_groups:
                direct_groups.append(g)
    kept = []
    for g in sorted(direct_groups, key=lambda g: g.index):
        reached = [p for p, v in zip(g.hidden_paths, g.hidden_outvars, strict=True) if v in full]
        bad = [p for p in reached if not _broadcasts_to(y_var.aval.shape, g.varshape)]
        if not bad:
            kept.append((g, reached))
            continue
        for path in weight_paths:
            records.append(new_record(
                DiagnosticKind.RELATION_EXCLUDED_SHAPE_MISMATCH, DiagnosticLevel.WARNING,
                f"The output of `{prim_name}` has shape {tuple(y_var.aval.shape)}, which does not "
                f"broadcast to the shape {tuple(g.varshape)} of hidden group {g.index}; slicing or "
                "reshaping between an ETP op and a hidden state is not supported, so this "
                "connection is dropped.",
                primitive=prim_name, weight_path=path, hidden_paths=bad,
                context={"group": g.index, "y_shape": tuple(y_var.aval.shape), "varshape": tuple(g.varshape)}))
    return kept, bool(direct_groups)


def _classify(step: _Step, index: int, y_var, kept_groups, prim_name: str, weight_paths, records: list):
    """``(classification, connected paths)``: direct or mixed, per reached member."""
    eqns = step.eqns
    unrestricted = forward_closure([y_var], eqns, crosses=lambda e: e.primitive is not P.stop_gradient_p)
    classification, connected = {}, []
    for g, reached in kept_groups:
        for path, outvar in zip(g.hidden_paths, g.hidden_outvars, strict=True):
            if path not in reached:
                continue
            connected.append(path)
            order, _ = backward_slice([outvar], eqns, include=lambda i, e: True)
            mid = [eqns[i] for i in order if i != index and any(
                is_var(o) and o in unrestricted for o in eqns[i].outvars)]
            mixed = any(_is_blocking(e) for e in mid)
            classification[path] = PathClassification.MIXED if mixed else PathClassification.ALL_DIRECT
            if not mixed:
                continue
            for wpath in weight_paths:
                records.append(new_record(
                    DiagnosticKind.RELATION_PARTIAL_PATH, DiagnosticLevel.WARNING,
                    f"The output of `{prim_name}` reaches `{format_path(path)}` both directly and through "
                    "another ETP op; the trace keeps the direct part only, so the online gradient "
                    "misses the indirect part.",
                    primitive=prim_name, weight_path=wpath, hidden_paths=(path,)))
    return classification, connected


def _relate_op(step: _Step, index: int, eqn, records: list) -> HiddenParamOpRelation | None:
    """The relation of the ETP equation ``eqns[index]``, or None (with the reason recorded)."""
    rule = etp_rule_of(eqn.primitive)
    prim_name = str(eqn.primitive)
    x_var = None if rule.x_index is None else eqn.invars[rule.x_index]
    y_var = eqn.outvars[0]
    trainable = _trainable_inputs(step, index, eqn, records)
    weight_paths = list(dict.fromkeys(trainable["trainable_paths"].values()))
    if not trainable["trainable_vars"]:
        records.append(new_record(
            DiagnosticKind.RELATION_EXCLUDED_NO_PARAMSTATE, DiagnosticLevel.WARNING,
            f"No trainable input of `{prim_name}` comes from a ParamState; the op is treated as "
            "a fixed function. Pass `param_state.value` to the op to train it online.",
            primitive=prim_name, context={"equation": index}))
        return None
    blocked: list[int] = []
    direct = forward_closure([y_var], step.eqns, crosses=_crosses, stop_at=step.hidden_outvars, blocked=blocked)
    full = forward_closure([y_var], step.eqns, crosses=_crosses)
    kept_groups, any_direct = _kept_groups(step, y_var, full, direct, prim_name, weight_paths, records)
    if not kept_groups:
        if not any_direct:  # a shape mismatch is already recorded
            _record_unconnected(step, prim_name, weight_paths, blocked, y_var, records)
        return None
    classification, connected = _classify(step, index, y_var, kept_groups, prim_name, weight_paths, records)
    tails = [_build_tail(step.eqns, index, y_var, g, full, prim_name, weight_paths, records) for g, _ in kept_groups]
    for wpath in weight_paths:
        records.append(new_record(
            DiagnosticKind.RELATION_INCLUDED, DiagnosticLevel.INFO,
            f"`{prim_name}` feeds hidden group(s) {[g.index for g, _ in kept_groups]} "
            f"({', '.join('`' + format_path(p) + '`' for p in connected)}); it is trained online with an "
            "eligibility trace.",
            primitive=prim_name, weight_path=wpath, hidden_paths=connected,
            context={"groups": [g.index for g, _ in kept_groups],
                     "classification": {format_path(p): c.value for p, c in classification.items()},
                     "keys": [k for k, p in trainable["trainable_paths"].items() if p == wpath]}))
    return HiddenParamOpRelation(
        primitive=eqn.primitive,
        x_var=x_var if is_var(x_var) else None,
        y_var=y_var,
        hidden_groups=[g for g, _ in kept_groups],
        y_to_hidden_group_jaxprs=tails,
        connected_hidden_paths=connected,
        eqn_params=dict(eqn.params),
        path_classification=classification,
        **trainable,
    )


def _build_tail(eqns, op_index, y_var, group: HiddenGroup, depends_on_y, prim_name, weight_paths, records) -> Jaxpr:
    def include(i, eqn):
        if i == op_index or _is_blocking(eqn):
            return False
        return any(is_var(o) and o in depends_on_y for o in eqn.outvars)

    order, free = backward_slice(group.hidden_outvars, eqns, include=include)
    chosen = [eqns[i] for i in order]
    offenders = non_elementwise_equations(chosen, allow_state_axis=any(n > 1 for n in group.num_states)
                                          or any(len(v.aval.shape) > len(group.varshape) for v in group.hidden_invars))
    if offenders:
        names = sorted({str(e.primitive) for e in offenders})
        for wpath in weight_paths:
            records.append(new_record(
                DiagnosticKind.TAIL_NOT_ELEMENTWISE, DiagnosticLevel.WARNING,
                f"Between `{prim_name}` and hidden group {group.index} there are ops that may mix "
                f"positions ({', '.join(names)}); ∂h/∂y is taken as row sums, which is exact only for "
                "element-wise tails.",
                primitive=prim_name, weight_path=wpath, hidden_paths=group.hidden_paths,
                context={"group": group.index, "primitives": names}))
    return jaxpr_from_slice(chosen, free, [y_var], list(group.hidden_outvars))


def _blocking_weights(step: _Step, blocked: list[int]) -> list[str]:
    names = []
    for i in blocked:
        e = step.eqns[i]
        if not _is_blocking(e):
            continue
        for pos in etp_rule_of(e.primitive).trainable_inputs(**e.params).values():
            v = e.invars[pos]
            if is_var(v) and v in step.minfo.invar_to_weight_path:
                names.append(format_path(step.minfo.invar_to_weight_path[v]))
    return sorted(set(names))


def _record_unconnected(step: _Step, prim_name, weight_paths, blocked, y_var, records: list) -> None:
    """Why an op whose output reaches no hidden group directly has no relation."""
    eqns = step.eqns
    if blocked:
        blockers = _blocking_weights(step, blocked)
        reaches_hidden = bool(set(forward_closure(
            [y_var], eqns, crosses=lambda e: e.primitive is not P.stop_gradient_p)) & step.hidden_outvars)
        if reaches_hidden:
            for wpath in weight_paths:
                records.append(new_record(
                    DiagnosticKind.RELATION_EXCLUDED_WEIGHT_TO_WEIGHT, DiagnosticLevel.WARNING,
                    f"The output of `{prim_name}` reaches hidden states only through another trainable op "
                    f"({', '.join(blockers) or 'an ETP op'}); per-op traces cannot carry this "
                    "path, so it has no eligibility trace and learns from its exact same-step gradient only "
                    "(its influence through earlier hidden values is ignored).",
                    primitive=prim_name, weight_path=wpath, context={"blocking_weights": blockers}))
            return
    reaches_output = bool(forward_closure([y_var], eqns) & step.readable_outvars)
    for wpath in weight_paths:
        if reaches_output:
            records.append(new_record(
                DiagnosticKind.RELATION_EXCLUDED_NON_TEMPORAL, DiagnosticLevel.INFO,
                f"The output of `{prim_name}` reaches the model output without passing a hidden state "
                "(a readout); it needs no trace and gets its exact same-step gradient.",
                primitive=prim_name, weight_path=wpath))
        else:
            records.append(new_record(
                DiagnosticKind.RELATION_EXCLUDED_NON_TEMPORAL, DiagnosticLevel.WARNING,
                f"The output of `{prim_name}` reaches neither a hidden state nor the model output; "
                "this weight gets no gradient.",
                primitive=prim_name, weight_path=wpath))
