# Copyright 2026 The braintrace authors. Licensed under the Apache License, Version 2.0.
"""Pass 4: the step with an additive perturbation at every new hidden value.

Every equation producing a new hidden value ``h`` of group ``b`` is renamed to produce
``ĥ``, followed by

    h = stop_gradient(ĥ) + p_h + (ĝ - stop_gradient(ĝ)),

where ``p_h`` is a new jaxpr input shaped like ``h`` and ``ĝ`` is a duplicate of the
computation of ``ĥ`` in which every input *covered by group b's traces* is read through
``stop_gradient``: the group's old and new member values (carried by ``D`` and the tails)
and the trainable inputs of the ops whose relations feed the group (carried by their
traces). The values are unchanged (with ``p = 0`` the step computes what the model does);
only the gradient routing changes. Reverse mode through this jaxpr gives

* w.r.t. ``p_h``: the learning signal ``∂L_t/∂h_t``, including same-step paths through
  other groups (a stacked layer, a leaky readout) but not the in-group paths the traces
  already contain;
* w.r.t. a parameter: its exact same-step gradient along every path the traces do not
  carry (a readout; a weight reaching a hidden state only through another op, such as the
  GRU reset gate, which therefore learns from its one-step gradient);
* w.r.t. an old hidden value: ``∂L_t/∂h_{t-1}`` along such paths, which pairs with
  ``ε_{t-1}``.

Nothing is counted twice: each path from a parameter to the loss is either in a trace or
in the same-step gradient.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

from .._jax_compat import Jaxpr, build_jaxpr, new_var
from .._jax_compat import lax_primitives as P
from ..ops.primitive import etp_rule_of
from .diagnostics import DiagnosticKind, DiagnosticLevel, PassResult, deliver_records, format_path, new_record
from .jaxpr_tools import (
    backward_slice,
    evaluate_jaxpr,
    forward_closure,
    is_var,
    make_eqn,
    producer_map,
)
from .module_info import ModuleInfo

__all__ = ["HiddenPerturbation", "add_hidden_perturbation_from_minfo"]


class HiddenPerturbation(NamedTuple):
    """The perturbed step.

    Attributes
    ----------
    perturb_vars : list of Var
        The perturbation inputs, one per hidden state (appended after the step inputs).
    perturb_hidden_paths : list of Path
        Hidden path of each perturbation var.
    perturb_hidden_states : list of HiddenState
        The corresponding states.
    perturb_jaxpr : Jaxpr
        Inputs ``step inputs + perturbations``; outputs those of the (rewritten) step.
    bypass_param_paths : tuple of Path
        ParamStates with a same-step gradient path to the outputs that no trace carries.
    bypass_hidden_paths : tuple of Path
        Hidden states whose old value has such a path (it pairs with the previous trace).
    """

    perturb_vars: list
    perturb_hidden_paths: list
    perturb_hidden_states: list
    perturb_jaxpr: Jaxpr
    bypass_param_paths: tuple = ()
    bypass_hidden_paths: tuple = ()

    def eval_jaxpr(self, inputs: Sequence[Any], perturb_data: Sequence[Any]) -> list:
        """Evaluate on flat step inputs and one perturbation array per hidden state."""
        n_in = len(self.perturb_jaxpr.invars) - len(self.perturb_vars)
        if len(inputs) != n_in:
            raise ValueError(f"the perturbed step expects {n_in} flat inputs; got {len(inputs)}.")
        if len(perturb_data) != len(self.perturb_vars):
            raise ValueError(
                f"the perturbed step expects {len(self.perturb_vars)} perturbation arrays (one per hidden "
                f"state: {[format_path(p) for p in self.perturb_hidden_paths]}); got {len(perturb_data)}."
            )
        for var, value, path in zip(self.perturb_vars, perturb_data, self.perturb_hidden_paths, strict=True):
            if tuple(getattr(value, "shape", ())) != tuple(var.aval.shape):
                raise ValueError(
                    f"the perturbation of `{format_path(path)}` must have shape {tuple(var.aval.shape)}; "
                    f"got {tuple(getattr(value, 'shape', ()))}."
                )
        jaxpr = self.perturb_jaxpr
        return evaluate_jaxpr(jaxpr, jaxpr.consts, list(inputs) + list(perturb_data))



def add_hidden_perturbation_from_minfo(minfo: ModuleInfo, hidden_groups=None, relations=None, *,
                                       include_output_bypass: bool = True) -> HiddenPerturbation:
    """Build the perturbed step of ``minfo`` (see the module docstring).

    Parameters
    ----------
    minfo : ModuleInfo
        The traced (and rewritten) step.
    hidden_groups, relations : sequence, optional
        The groups and relations of the graph. Without them every new hidden value is cut
        completely (no same-step gradient through hidden values).
    include_output_bypass : bool
        Find the output-bypass paths (default True); with False ``bypass_param_paths`` and
        ``bypass_hidden_paths`` are empty.

    Examples
    --------
    >>> import brainstate, jax.numpy as jnp
    >>> import braintrace
    >>> cell = braintrace.nn.ValinaRNNCell(3, 4)
    >>> _ = brainstate.nn.init_all_states(cell)
    >>> info = braintrace.extract_module_info(cell, jnp.ones(3))
    >>> pert = braintrace.add_hidden_perturbation_from_minfo(info)
    >>> pert.perturb_hidden_paths
    [('h',)]
    """
    result = add_hidden_perturbation(minfo, hidden_groups, relations, include_output_bypass=include_output_bypass)
    deliver_records(result.records, stacklevel=2)
    return result.value


def _perturbed_value(h, hat, p, routed) -> list:
    """Equations writing ``h = stop_gradient(ĥ) + p (+ ĝ - stop_gradient(ĝ))`` from ``ĥ``."""
    cut = new_var(h.aval)
    extra = [make_eqn([hat], [cut], P.stop_gradient_p)]
    if routed is None:
        return extra + [make_eqn([cut, p], [h], P.add_p)]
    dup_eqns, g = routed
    g_cut, delta, base = new_var(h.aval), new_var(h.aval), new_var(h.aval)
    return extra + list(dup_eqns) + [
        make_eqn([g], [g_cut], P.stop_gradient_p),
        make_eqn([g, g_cut], [delta], P.sub_p),
        make_eqn([cut, p], [base], P.add_p),
        make_eqn([base, delta], [h], P.add_p),
    ]


def _splice(eqns, prefix_eqns, renamed, insert_after) -> list:
    """The step with the renamed producers (writing ``ĥ``) and the inserted equations."""
    new_eqns = list(prefix_eqns)
    for i, eqn in enumerate(eqns):
        hits = [(k, hat) for _, (j, k, hat) in renamed.items() if j == i]
        if hits:
            outs = list(eqn.outvars)
            for k, hat in hits:
                outs[k] = hat
            eqn = eqn.replace(outvars=outs)
        new_eqns.append(eqn)
        new_eqns.extend(insert_after.get(i, []))
    return new_eqns


def add_hidden_perturbation(minfo: ModuleInfo, hidden_groups=None, relations=None, *,
                            include_output_bypass: bool = True) -> PassResult[HiddenPerturbation]:
    """:func:`add_hidden_perturbation_from_minfo` with its records, without warning."""
    jaxpr = minfo.closed_jaxpr
    eqns = list(jaxpr.eqns)
    outvars = list(jaxpr.outvars)
    producers = {}
    for i, eqn in enumerate(eqns):
        for k, v in enumerate(eqn.outvars):
            if is_var(v):
                producers[v] = (i, k)

    state_slot = {}
    n_out = minfo.num_var_out
    position = n_out
    for st, outs in zip(minfo.compiled_model_states, minfo.state_tree_outvars, strict=True):
        path = minfo.state_id_to_path[id(st)]
        state_slot[path] = position
        position += len(outs)

    perturb_vars, perturb_paths, perturb_states = [], [], []
    insert_after: dict[int, list] = {}
    prefix_eqns: list = []
    renamed: dict = {}
    state_by_path = minfo.states_by_path()
    cross = _CrossGroupRouting(minfo, eqns, hidden_groups, relations)
    for path, h in minfo.hidden_path_to_outvar.items():
        p = new_var(h.aval)
        perturb_vars.append(p)
        perturb_paths.append(path)
        perturb_states.append(state_by_path[path])
        if h in producers and h not in renamed:
            i, k = producers[h]
            hat = new_var(h.aval)
            renamed[h] = (i, k, hat)
            insert_after.setdefault(i, []).extend(_perturbed_value(h, hat, p, cross.duplicate(path, h, i)))
        else:
            # The state is not written by an equation (unchanged, or a copy of another value):
            # synthesise its new value and point its state output slot at it.
            cut = new_var(h.aval)
            fresh = new_var(h.aval)
            prefix_eqns.extend([make_eqn([h], [cut], P.stop_gradient_p), make_eqn([cut, p], [fresh], P.add_p)])
            outvars[state_slot[path]] = fresh

    new_eqns = _splice(eqns, prefix_eqns, renamed, insert_after)
    perturb_jaxpr = build_jaxpr(jaxpr.constvars, jaxpr.consts, list(jaxpr.invars) + perturb_vars, outvars, new_eqns)

    # Same-step paths to the outputs that avoid every new hidden value.
    _, _, other_state_outs = minfo.split_state_outvars()
    readable = set(v for v in outvars[:n_out] if is_var(v))
    readable |= set(v for v in other_state_outs if is_var(v))
    crosses = lambda e: e.primitive is not P.stop_gradient_p  # noqa: E731
    bypass_params = tuple(
        path for path, leaves in minfo.weight_path_to_invars.items()
        if include_output_bypass and forward_closure(leaves, new_eqns, crosses=crosses) & readable
    )
    bypass_hidden = tuple(
        path for path, v in minfo.hidden_path_to_invar.items()
        if include_output_bypass and forward_closure([v], new_eqns, crosses=crosses) & readable
    )
    records = []
    if bypass_params:
        records.append(new_record(
            DiagnosticKind.OUTPUT_BYPASSES_HIDDEN, DiagnosticLevel.INFO,
            f"ParamState(s) {', '.join('`' + format_path(p) + '`' for p in bypass_params)} reach the step output "
            "along paths no eligibility trace carries (a readout, or through another op's input); that "
            "part of their gradient is exact and computed in the same step.",
            context={"bypass_param_paths": [format_path(p) for p in bypass_params],
                     "bypass_hidden_paths": [format_path(p) for p in bypass_hidden]}))
    return PassResult(HiddenPerturbation(
        perturb_vars=perturb_vars,
        perturb_hidden_paths=perturb_paths,
        perturb_hidden_states=perturb_states,
        perturb_jaxpr=perturb_jaxpr,
        bypass_param_paths=bypass_params,
        bypass_hidden_paths=bypass_hidden,
    ), tuple(records))


class _CrossGroupRouting:
    """Builds ``ĝ``: the computation of a new hidden value with trace-covered inputs detached."""

    def __init__(self, minfo: ModuleInfo, eqns, hidden_groups, relations):
        self.minfo = minfo
        self.eqns = eqns
        self.enabled = hidden_groups is not None and relations is not None
        if not self.enabled:
            return
        self.group_of_path = {}
        for g in hidden_groups:
            for path in g.hidden_paths:
                self.group_of_path[path] = g
        producers = producer_map(eqns)
        # (equation index, input position) of trainable inputs covered by each group's traces.
        self.covered_slots: dict[int, set] = {g.index: set() for g in hidden_groups}
        for rel in relations:
            # An op inside a descended scan: its weight is covered where it enters the scan.
            context = rel.control_flow_context
            i = producers.get(rel.y_var if context is None else context.anchor_var)
            if i is None:
                continue
            positions = _trainable_positions(eqns[i]) if context is None else context.operand_positions
            for g in rel.hidden_groups:
                for key in rel.trainable_vars:
                    self.covered_slots[g.index].add((i, positions[key]))
        self.hidden_outvars = set(minfo.outvar_to_hidden_path)
        # Inputs a gradient can flow into: every state's old value and every new hidden value.
        state_invars = set(minfo.closed_jaxpr.invars[minfo.num_args:])
        self.sources = state_invars | self.hidden_outvars

    def duplicate(self, path, h, producer_index):
        """Return ``(equations, ĝ var)`` or None when no uncovered gradient path exists."""
        if not self.enabled:
            return None
        group = self.group_of_path[path]
        detach = set(group.hidden_invars) | set(group.hidden_outvars)
        covered = self.covered_slots[group.index]
        stop = self.hidden_outvars - {h}
        order, _ = backward_slice([h], self.eqns, include=lambda i, e: not any(
            is_var(o) and o in stop for o in e.outvars))
        if not order:
            return None
        # Does any gradient-carrying input reach h once covered inputs are detached?
        live_vars: set = set()
        for i in order:
            eqn = self.eqns[i]
            for pos, a in enumerate(eqn.invars):
                if not is_var(a) or (i, pos) in covered or a in detach:
                    continue
                if a in live_vars or a in self.sources:
                    live_vars.update(v for v in eqn.outvars if is_var(v))
                    break
        if h not in live_vars:
            return None
        dup: dict = {}
        detached: dict = {}
        out_eqns = []

        def detached_var(a):
            if a not in detached:
                v = new_var(a.aval)
                out_eqns.append(make_eqn([a], [v], P.stop_gradient_p))
                detached[a] = v
            return detached[a]

        for i in order:
            eqn = self.eqns[i]
            invars = []
            for pos, a in enumerate(eqn.invars):
                if not is_var(a):
                    invars.append(a)
                elif (i, pos) in covered:
                    invars.append(detached_var(dup.get(a, a)))
                elif a in dup:
                    invars.append(dup[a])
                elif a in detach:
                    invars.append(detached_var(a))
                else:
                    invars.append(a)
            outs = []
            for v in eqn.outvars:
                fresh = new_var(v.aval)
                if is_var(v):
                    dup[v] = fresh
                outs.append(fresh)
            out_eqns.append(eqn.replace(invars=invars, outvars=outs))
        return out_eqns, dup[h]


def _trainable_positions(eqn):
    return etp_rule_of(eqn.primitive).trainable_inputs(**eqn.params)
