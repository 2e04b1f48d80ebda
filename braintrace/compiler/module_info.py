# Copyright 2026 The braintrace authors. Licensed under the Apache License, Version 2.0.
"""Pass 1: trace one model step, and classify the states of the canonical step.

:func:`trace_step` traces the model's ``update(*args)`` with brainstate's
``StatefulFunction``, giving a jaxpr whose inputs are ``leaves(args) + leaves(state
values)`` and whose outputs are ``leaves(output) + leaves(new state values)``, with states
in first-access order. :func:`classify_states` tabulates the canonical step (see
:mod:`braintrace.compiler.canonicalize`): states are classified as hidden (``HiddenState``
and subclasses: one array each), weights (``ParamState``: every leaf) and other states.
:func:`extract_module_info` runs trace, canonicalisation, the ``while_loop`` check and
classification in that order.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import brainstate
import jax

from .. import _errors
from .._jax_compat import Jaxpr, Var, build_jaxpr
from .canonicalize import canonicalize_step
from .control_flow_policy import ControlFlowPolicy
from .control_flow_report import check_while_loops
from .diagnostics import (
    DiagnosticKind,
    DiagnosticLevel,
    PassResult,
    deliver_records,
    format_path,
    new_record,
    publish_records,
)
from .jaxpr_tools import evaluate_flat, is_var

__all__ = ["ModuleInfo", "TracedStep", "classify_states", "evaluate_flat", "extract_module_info", "trace_step"]

Path = tuple[str, ...]


class ModuleInfo(NamedTuple):
    """The traced step of a model and the tables relating jaxpr vars to its states.

    Attributes
    ----------
    stateful_model : brainstate.transform.StatefulFunction
        The traced ``update`` method.
    closed_jaxpr : Jaxpr
        The flat jaxpr of one step (jit bodies inlined), with constants attached.
    retrieved_model_states : dict
        ``model.states()``: every state reachable from the model, by path.
    compiled_model_states : tuple of State
        The states the step touches, in jaxpr input order.
    state_id_to_path : dict
        ``id(state) -> path``.
    state_tree_invars, state_tree_outvars : tuple of tuple of Var
        The jaxpr vars of each compiled state's leaves (input and output side).
    hidden_path_to_invar, hidden_path_to_outvar : dict
        Hidden-state path to its jaxpr var before and after the step.
    invar_to_hidden_path, outvar_to_hidden_path : dict
        The inverse maps.
    hidden_outvar_to_invar : dict
        New hidden var to old hidden var.
    weight_invars : tuple of Var
        Every ``ParamState`` leaf var.
    weight_path_to_invars : dict
        ``ParamState`` path to the list of its leaf vars (``jax.tree.leaves`` order).
    invar_to_weight_path : dict
        Leaf var to ``ParamState`` path.
    num_var_out : int
        Number of flattened model outputs.
    num_var_state : int
        Number of flattened state outputs.
    out_treedef : PyTreeDef
        Tree structure of ``(output, state values)``.
    state_treedefs : tuple of PyTreeDef
        Tree structure of each compiled state's value.
    hidden_varshapes : dict
        Hidden path to ``(varshape, num_state)``.
    control_flow : ControlFlowPolicy
        The control-flow policy the step was canonicalised with.
    """

    stateful_model: Any
    closed_jaxpr: Jaxpr
    retrieved_model_states: dict
    compiled_model_states: tuple
    state_id_to_path: dict
    state_tree_invars: tuple
    state_tree_outvars: tuple
    hidden_path_to_invar: dict
    hidden_path_to_outvar: dict
    invar_to_hidden_path: dict
    outvar_to_hidden_path: dict
    hidden_outvar_to_invar: dict
    weight_invars: tuple
    weight_path_to_invars: dict
    invar_to_weight_path: dict
    num_var_out: int
    num_var_state: int
    out_treedef: Any
    state_treedefs: tuple
    hidden_varshapes: dict
    control_flow: Any = None

    # ---------------------------------------------------------------------------------
    @property
    def jaxpr(self) -> Jaxpr:
        """The flat jaxpr (an alias of ``closed_jaxpr``)."""
        return self.closed_jaxpr

    @property
    def num_args(self) -> int:
        """Number of flattened model-argument leaves at the front of the jaxpr inputs."""
        return len(self.closed_jaxpr.invars) - sum(len(v) for v in self.state_tree_invars)

    @property
    def hidden_paths(self) -> tuple[Path, ...]:
        return tuple(self.hidden_path_to_invar)

    def add_jaxpr_outs(self, extra_vars: Sequence[Var]) -> ModuleInfo:
        """A copy whose jaxpr also outputs ``extra_vars`` (same equations, same vars)."""
        jaxpr = self.closed_jaxpr
        outvars = list(jaxpr.outvars) + list(extra_vars)
        new = build_jaxpr(jaxpr.constvars, jaxpr.consts, jaxpr.invars, outvars, jaxpr.eqns, jaxpr.effects)
        return self._replace(closed_jaxpr=new)

    def states_by_path(self) -> dict:
        """The compiled states keyed by their path."""
        return {self.state_id_to_path[id(st)]: st for st in self.compiled_model_states}

    def state_values(self) -> list:
        """Current values of the compiled states."""
        return [st.value for st in self.compiled_model_states]

    def flat_inputs(self, args: Sequence[Any], old_state_vals: Sequence[Any] | None = None) -> list:
        if old_state_vals is None:
            old_state_vals = self.state_values()
        return list(jax.tree.leaves(tuple(args))) + list(jax.tree.leaves(list(old_state_vals)))

    def jaxpr_call(self, *args, old_state_vals: Sequence[Any] | None = None):
        """Evaluate the step and return :meth:`_process` of its outputs (no state is written)."""
        outs = evaluate_flat(self.closed_jaxpr, self.flat_inputs(args, old_state_vals))
        return self._process(*args, jaxpr_outs=outs, old_state_vals=old_state_vals)

    def _process(self, *args, jaxpr_outs: Sequence[Any], old_state_vals: Sequence[Any] | None = None):
        """Split raw jaxpr outputs.

        Returns
        -------
        out : PyTree
            The model output.
        new_state_vals : list
            New values of the compiled states (units restored).
        temps : dict
            ``{Var: value}`` for every output var of the (rewritten) jaxpr plus the old value
            of every hidden input var.
        hidden_vals : dict
            New hidden values (mantissas) by path.
        other_vals : dict
            New values of non-hidden, non-param states by path.
        """
        n_main = self.num_var_out + self.num_var_state
        main = list(jaxpr_outs[:n_main])
        out, state_leaves = jax.tree.unflatten(self.out_treedef, main)
        new_state_vals = list(state_leaves)
        temps = {v: value for v, value in zip(self.closed_jaxpr.outvars, jaxpr_outs, strict=True) if is_var(v)}
        if old_state_vals is None:
            old_state_vals = self.state_values()
        flat_old = jax.tree.leaves(list(old_state_vals))
        state_invars = [v for group in self.state_tree_invars for v in group]
        old_by_var = dict(zip(state_invars, flat_old, strict=True))
        for var in self.hidden_path_to_invar.values():
            temps[var] = old_by_var[var]
        hidden_vals = {}
        other_vals = {}
        for st, value in zip(self.compiled_model_states, new_state_vals, strict=True):
            path = self.state_id_to_path[id(st)]
            if isinstance(st, brainstate.HiddenState):
                hidden_vals[path] = jax.tree.leaves(value)[0]
            elif not isinstance(st, brainstate.ParamState):
                other_vals[path] = value
        return out, new_state_vals, temps, hidden_vals, other_vals

    def split_state_outvars(self):
        """The state output vars split into ``(weights, hidden, other)`` lists."""
        weights, hidden, other = [], [], []
        for st, outs in zip(self.compiled_model_states, self.state_tree_outvars, strict=True):
            if isinstance(st, brainstate.ParamState):
                weights.extend(outs)
            elif isinstance(st, brainstate.HiddenState):
                hidden.extend(outs)
            else:
                other.extend(outs)
        return weights, hidden, other


class TracedStep(NamedTuple):
    """The raw trace of one step: the jaxpr and the states it reads and writes, in input order."""

    stateful_model: Any
    jaxpr: Jaxpr
    states: tuple
    write_state_ids: frozenset
    retrieved_model_states: dict
    state_id_to_path: dict
    out_treedef: Any

    def state_leaf_slices(self) -> list[tuple[Any, slice, slice]]:
        """Per state, ``(state, invar slice, outvar slice)`` of its leaves in the step jaxpr."""
        n_leaves = [jax.tree.structure(st.value).num_leaves for st in self.states]
        i_in = len(self.jaxpr.invars) - sum(n_leaves)
        i_out = len(self.jaxpr.outvars) - sum(n_leaves)
        out = []
        for st, n in zip(self.states, n_leaves, strict=True):
            out.append((st, slice(i_in, i_in + n), slice(i_out, i_out + n)))
            i_in += n
            i_out += n
        return out


def _trace(model, args):
    """``(stateful, jaxpr, states, write_state_ids, out_treedef)``; every state value restored."""
    retrieved = dict(model.states())
    stateful = brainstate.transform.StatefulFunction(model.update, return_only_write=False)
    # The trace must not change the model: remember every state value and restore it.
    before = {id(st): st.value for st in retrieved.values()}
    try:
        stateful.make_jaxpr(*args)
        cache_key = stateful.get_arg_cache_key(*args)
        traced = stateful.get_jaxpr_by_cache(cache_key)
        states = tuple(stateful.get_states_by_cache(cache_key))
        write_states = frozenset(id(s) for s in stateful.get_write_states_by_cache(cache_key))
        out_treedef = stateful.get_out_treedef_by_cache(cache_key)
    finally:
        for st in retrieved.values():
            if id(st) in before and st.value is not before[id(st)]:
                st.value = before[id(st)]
    return stateful, traced, states, write_states, out_treedef


def trace_step(model: brainstate.nn.Module, *args) -> PassResult[TracedStep]:
    """Trace ``model.update(*args)`` without changing the model's states.

    Returns the trace with a ``state_mismatch`` record per state the step does not use.

    Raises
    ------
    TypeError
        If ``model`` is not a brainstate module.
    NotSupportedError
        If the step writes a ``ParamState``.
    """
    if not isinstance(model, brainstate.nn.Module):
        raise TypeError(
            f"compile_etrace_graph expects a `brainstate.nn.Module`; got {type(model).__name__}."
        )
    retrieved = dict(model.states())
    state_id_to_path = {id(st): path for path, st in retrieved.items()}
    stateful, traced, states, write_states, out_treedef = _trace(model, args)
    for st in states:
        if isinstance(st, brainstate.ParamState) and id(st) in write_states:
            path = state_id_to_path.get(id(st), ("<unknown>",))
            raise _errors.NotSupportedError(
                f"The step writes the ParamState `{format_path(path)}`; parameters must stay constant "
                "within a step for online learning. Keep changing quantities in a HiddenState or "
                "another non-parameter state."
            )
    unknown = 0
    for st in states:
        if id(st) not in state_id_to_path:
            state_id_to_path[id(st)] = (f"_unknown_path_{unknown}",)
            unknown += 1
    touched = {id(st) for st in states}
    records = tuple(
        new_record(DiagnosticKind.STATE_MISMATCH, DiagnosticLevel.INFO,
                   f"State `{format_path(path)}` is not used by the step; it is ignored.",
                   hidden_paths=(path,) if isinstance(st, brainstate.HiddenState) else ())
        for path, st in retrieved.items() if id(st) not in touched)
    step = TracedStep(stateful, traced, states, write_states, retrieved, state_id_to_path, out_treedef)
    return PassResult(step, records)


def _hidden_and_weight_tables(traced: TracedStep, jaxpr: Jaxpr, state_tree_invars, state_tree_outvars) -> dict:
    hidden_path_to_invar, hidden_path_to_outvar, hidden_varshapes = {}, {}, {}
    weight_path_to_invars, invar_to_weight_path = {}, {}
    weight_invars: list[Var] = []
    for st, ins, outs in zip(traced.states, state_tree_invars, state_tree_outvars, strict=True):
        path = traced.state_id_to_path[id(st)]
        if isinstance(st, brainstate.ParamState):
            weight_path_to_invars[path] = list(ins)
            for v in ins:
                invar_to_weight_path[v] = path
                if v not in weight_invars:
                    weight_invars.append(v)
        elif isinstance(st, brainstate.HiddenState):
            if len(ins) != 1:
                raise _errors.CompilationError(
                    f"HiddenState `{format_path(path)}` holds {len(ins)} arrays; a hidden state must "
                    "hold exactly one array. Use several HiddenStates or a HiddenGroupState."
                )
            hidden_path_to_invar[path] = ins[0]
            hidden_path_to_outvar[path] = outs[0]
            shape = tuple(ins[0].aval.shape)
            if isinstance(st, brainstate.HiddenGroupState):
                hidden_varshapes[path] = (shape[:-1], shape[-1])
            else:
                hidden_varshapes[path] = (shape, 1)
    outvar_to_hidden_path = {}
    for p, v in hidden_path_to_outvar.items():
        outvar_to_hidden_path.setdefault(v, p)
    return dict(
        hidden_path_to_invar=hidden_path_to_invar,
        hidden_path_to_outvar=hidden_path_to_outvar,
        invar_to_hidden_path={v: p for p, v in hidden_path_to_invar.items()},
        outvar_to_hidden_path=outvar_to_hidden_path,
        hidden_outvar_to_invar={hidden_path_to_outvar[p]: hidden_path_to_invar[p] for p in hidden_path_to_invar},
        weight_invars=tuple(weight_invars),
        weight_path_to_invars=weight_path_to_invars,
        invar_to_weight_path=invar_to_weight_path,
        hidden_varshapes=hidden_varshapes,
    )


def classify_states(traced: TracedStep, jaxpr: Jaxpr, policy: ControlFlowPolicy | None = None) -> ModuleInfo:
    """Tabulate the states of ``traced`` against the vars of its canonical step ``jaxpr``.

    ``jaxpr`` must have the traced step's inputs and output positions (as
    :func:`~braintrace.compiler.canonicalize.canonicalize_step` guarantees).

    Raises
    ------
    CompilationError
        If a ``HiddenState`` holds more than one array.
    """
    slices = traced.state_leaf_slices()
    state_tree_invars = tuple(tuple(jaxpr.invars[ins]) for _, ins, _ in slices)
    state_tree_outvars = tuple(tuple(jaxpr.outvars[outs]) for _, _, outs in slices)
    num_var_state = sum(len(v) for v in state_tree_invars)
    return ModuleInfo(
        stateful_model=traced.stateful_model,
        closed_jaxpr=jaxpr,
        retrieved_model_states=traced.retrieved_model_states,
        compiled_model_states=traced.states,
        state_id_to_path=traced.state_id_to_path,
        state_tree_invars=state_tree_invars,
        state_tree_outvars=state_tree_outvars,
        num_var_out=len(jaxpr.outvars) - num_var_state,
        num_var_state=num_var_state,
        out_treedef=traced.out_treedef,
        state_treedefs=tuple(jax.tree.structure(st.value) for st in traced.states),
        control_flow=policy,
        **_hidden_and_weight_tables(traced, jaxpr, state_tree_invars, state_tree_outvars),
    )


def build_module_info(model: brainstate.nn.Module, *args,
                      control_flow: ControlFlowPolicy | None = None) -> PassResult[ModuleInfo]:
    """Trace, canonicalise, check ``while_loop`` uses and classify: :func:`extract_module_info` with records."""
    policy = ControlFlowPolicy.resolve(control_flow)
    traced = trace_step(model, *args)
    step = traced.value
    weight_leaves, hidden_in, hidden_out_indices = {}, [], []
    for st, ins, outs in step.state_leaf_slices():
        if isinstance(st, brainstate.ParamState):
            weight_leaves[step.state_id_to_path[id(st)]] = list(step.jaxpr.invars[ins])
        elif isinstance(st, brainstate.HiddenState):
            hidden_in.extend(step.jaxpr.invars[ins])
            hidden_out_indices.extend(range(outs.start, outs.stop))
    watched = [v for leaves in weight_leaves.values() for v in leaves] + hidden_in
    canonical = canonicalize_step(step.jaxpr, policy, watched=watched, hidden_out_indices=hidden_out_indices)
    jaxpr = canonical.value
    checked = check_while_loops(jaxpr.eqns, policy, weight_path_to_invars=weight_leaves, hidden_invars=hidden_in,
                                hidden_outvars=[jaxpr.outvars[i] for i in hidden_out_indices])
    minfo = classify_states(step, jaxpr, policy)
    return PassResult(minfo, traced.records + canonical.records + checked.records)


def extract_module_info(model: brainstate.nn.Module, *args, control_flow: ControlFlowPolicy | None = None) -> ModuleInfo:
    """Trace one step of ``model`` and tabulate its states.

    Runs :func:`trace_step`, :func:`~braintrace.compiler.canonicalize.canonicalize_step`,
    :func:`~braintrace.compiler.control_flow_report.check_while_loops` and
    :func:`classify_states`; warns once per ``warning``-level record.

    Parameters
    ----------
    model : brainstate.nn.Module
        A module whose ``update(*args)`` runs one time step. Its states must be initialised.
    *args
        Example inputs of one step.
    control_flow : ControlFlowPolicy, optional
        How ``cond``/``scan``/``while_loop`` in the step are canonicalised (default policy
        when None): see :mod:`braintrace.compiler.canonicalize`.

    Returns
    -------
    ModuleInfo

    Raises
    ------
    TypeError
        If ``model`` is not a brainstate module.
    NotSupportedError
        If the step writes a ``ParamState``, or uses a weight inside a ``while_loop``.

    Examples
    --------
    >>> import brainstate, jax.numpy as jnp
    >>> import braintrace
    >>> cell = braintrace.nn.ValinaRNNCell(3, 4)
    >>> _ = brainstate.nn.init_all_states(cell)
    >>> info = braintrace.extract_module_info(cell, jnp.ones(3))
    >>> list(info.hidden_path_to_invar)
    [('h',)]
    """
    try:
        result = build_module_info(model, *args, control_flow=control_flow)
    except _errors.BraintraceError as error:
        publish_records(() if error.record is None else (error.record,))
        raise
    deliver_records(result.records, stacklevel=2)
    return result.value
