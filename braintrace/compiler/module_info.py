# Copyright 2026 The braintrace authors. Licensed under the Apache License, Version 2.0.
"""Pass 1: trace one model step into a flat jaxpr and classify its states.

The model's ``update(*args)`` is traced with brainstate's ``StatefulFunction``, giving a
jaxpr whose inputs are ``leaves(args) + leaves(state values)`` and whose outputs are
``leaves(output) + leaves(new state values)``, with states in first-access order. Every
``jit`` body is inlined so that later passes can identify values by ``Var`` identity.
States are classified as hidden (``HiddenState`` and subclasses: one array each), weights
(``ParamState``: every leaf) and other states.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import brainstate
import jax

from .. import _errors
from .._jax_compat import Jaxpr, Literal, Var, build_jaxpr, new_var
from .._jax_compat import lax_primitives as P
from .canonicalize import canonicalize_control_flow
from .control_flow_policy import ControlFlowPolicy
from .diagnostics import DiagnosticKind, DiagnosticLevel, emit
from .jaxpr_tools import evaluate_equations, inline_calls, is_var, make_eqn

__all__ = ["ModuleInfo", "extract_module_info"]

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


def evaluate_flat(jaxpr: Jaxpr, flat_inputs: Sequence[Any]) -> list:
    """Evaluate the flat step jaxpr on flat inputs (constants taken from the jaxpr)."""
    env = dict(zip(jaxpr.constvars, jaxpr.consts, strict=True))
    env.update(zip(jaxpr.invars, flat_inputs, strict=True))
    evaluate_equations(jaxpr.eqns, env)
    return [a.val if isinstance(a, Literal) else env[a] for a in jaxpr.outvars]


def _path_str(path) -> str:
    return ".".join(map(str, path))


def extract_module_info(model: brainstate.nn.Module, *args, control_flow: ControlFlowPolicy | None = None) -> ModuleInfo:
    """Trace one step of ``model`` and tabulate its states.

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
    policy = ControlFlowPolicy.resolve(control_flow)
    if not isinstance(model, brainstate.nn.Module):
        raise TypeError(
            f"compile_etrace_graph expects a `brainstate.nn.Module`; got {type(model).__name__}."
        )
    retrieved = dict(model.states())
    state_id_to_path = {id(st): path for path, st in retrieved.items()}

    stateful = brainstate.transform.StatefulFunction(model.update, return_only_write=False)
    # The trace must not change the model: remember every state value and restore it.
    before = {id(st): st.value for st in retrieved.values()}
    try:
        stateful.make_jaxpr(*args)
        cache_key = stateful.get_arg_cache_key(*args)
        traced = stateful.get_jaxpr_by_cache(cache_key)
        states = tuple(stateful.get_states_by_cache(cache_key))
        write_states = set(id(s) for s in stateful.get_write_states_by_cache(cache_key))
        out_treedef = stateful.get_out_treedef_by_cache(cache_key)
    finally:
        for st in retrieved.values():
            if id(st) in before and st.value is not before[id(st)]:
                st.value = before[id(st)]

    for st in states:
        if isinstance(st, brainstate.ParamState) and id(st) in write_states:
            path = state_id_to_path.get(id(st), ("<unknown>",))
            raise _errors.NotSupportedError(
                f"The step writes the ParamState `{_path_str(path)}`; parameters must stay constant "
                "within a step for online learning. Keep changing quantities in a HiddenState or "
                "another non-parameter state."
            )

    unknown = 0
    for st in states:
        if id(st) not in state_id_to_path:
            state_id_to_path[id(st)] = (f"_unknown_path_{unknown}",)
            unknown += 1
    touched = {id(st) for st in states}
    for path, st in retrieved.items():
        if id(st) not in touched:
            emit(DiagnosticKind.STATE_MISMATCH, DiagnosticLevel.INFO,
                 f"State `{_path_str(path)}` is not used by the step; it is ignored.",
                 hidden_paths=(path,) if isinstance(st, brainstate.HiddenState) else ())

    eqns, outvars, lifted, _ = inline_calls(traced.eqns, traced.outvars)
    eqns, outvars, lifted_in_flow = canonicalize_control_flow(
        eqns, outvars, policy, **_state_vars_for_canonicalization(states, state_id_to_path, traced, outvars))
    lifted = lifted + lifted_in_flow
    # Normalise literal outputs into vars so that every output has an identity.
    for i, atom in enumerate(outvars):
        if isinstance(atom, Literal):
            fresh = new_var(atom.aval)
            eqns.append(make_eqn([atom], [fresh], P.copy_p))
            outvars[i] = fresh
    constvars = list(traced.constvars) + [v for v, _ in lifted]
    consts = list(traced.consts) + [c for _, c in lifted]
    jaxpr = build_jaxpr(constvars, consts, traced.invars, outvars, eqns)

    # Tables.
    state_treedefs = tuple(jax.tree.structure(st.value) for st in states)
    n_state_leaves = [st_def.num_leaves for st_def in state_treedefs]
    n_args = len(jaxpr.invars) - sum(n_state_leaves)
    num_var_out = len(outvars) - sum(n_state_leaves)
    state_tree_invars, state_tree_outvars = [], []
    i_in, i_out = n_args, num_var_out
    for n in n_state_leaves:
        state_tree_invars.append(tuple(jaxpr.invars[i_in:i_in + n]))
        state_tree_outvars.append(tuple(outvars[i_out:i_out + n]))
        i_in += n
        i_out += n

    hidden_path_to_invar, hidden_path_to_outvar, hidden_varshapes = {}, {}, {}
    weight_path_to_invars, invar_to_weight_path = {}, {}
    weight_invars: list[Var] = []
    for st, ins, outs in zip(states, state_tree_invars, state_tree_outvars, strict=True):
        path = state_id_to_path[id(st)]
        if isinstance(st, brainstate.ParamState):
            weight_path_to_invars[path] = list(ins)
            for v in ins:
                invar_to_weight_path[v] = path
                if v not in weight_invars:
                    weight_invars.append(v)
        elif isinstance(st, brainstate.HiddenState):
            if len(ins) != 1:
                raise _errors.CompilationError(
                    f"HiddenState `{_path_str(path)}` holds {len(ins)} arrays; a hidden state must "
                    "hold exactly one array. Use several HiddenStates or a HiddenGroupState."
                )
            hidden_path_to_invar[path] = ins[0]
            hidden_path_to_outvar[path] = outs[0]
            shape = tuple(ins[0].aval.shape)
            if isinstance(st, brainstate.HiddenGroupState):
                hidden_varshapes[path] = (shape[:-1], shape[-1])
            else:
                hidden_varshapes[path] = (shape, 1)
    invar_to_hidden_path = {v: p for p, v in hidden_path_to_invar.items()}
    outvar_to_hidden_path = {}
    for p, v in hidden_path_to_outvar.items():
        outvar_to_hidden_path.setdefault(v, p)
    hidden_outvar_to_invar = {hidden_path_to_outvar[p]: hidden_path_to_invar[p] for p in hidden_path_to_invar}

    return ModuleInfo(
        stateful_model=stateful,
        closed_jaxpr=jaxpr,
        retrieved_model_states=retrieved,
        compiled_model_states=states,
        state_id_to_path=state_id_to_path,
        state_tree_invars=tuple(state_tree_invars),
        state_tree_outvars=tuple(state_tree_outvars),
        hidden_path_to_invar=hidden_path_to_invar,
        hidden_path_to_outvar=hidden_path_to_outvar,
        invar_to_hidden_path=invar_to_hidden_path,
        outvar_to_hidden_path=outvar_to_hidden_path,
        hidden_outvar_to_invar=hidden_outvar_to_invar,
        weight_invars=tuple(weight_invars),
        weight_path_to_invars=weight_path_to_invars,
        invar_to_weight_path=invar_to_weight_path,
        num_var_out=num_var_out,
        num_var_state=sum(n_state_leaves),
        out_treedef=out_treedef,
        state_treedefs=state_treedefs,
        hidden_varshapes=hidden_varshapes,
        control_flow=policy,
    )


def _state_vars_for_canonicalization(states, state_id_to_path, traced, outvars) -> dict:
    """Weight leaf invars by path, and the hidden input/output vars, of the traced step."""
    n_leaves = [jax.tree.structure(st.value).num_leaves for st in states]
    i_in = len(traced.invars) - sum(n_leaves)
    i_out = len(outvars) - sum(n_leaves)
    weight_leaves, hidden_in, hidden_out = {}, [], []
    for st, n in zip(states, n_leaves, strict=True):
        ins, outs = traced.invars[i_in:i_in + n], outvars[i_out:i_out + n]
        if isinstance(st, brainstate.ParamState):
            weight_leaves[state_id_to_path[id(st)]] = list(ins)
        elif isinstance(st, brainstate.HiddenState):
            hidden_in.extend(ins)
            hidden_out.extend(outs)
        i_in += n
        i_out += n
    return {"weight_leaves": weight_leaves, "hidden_invars": hidden_in, "hidden_outvars": hidden_out}
