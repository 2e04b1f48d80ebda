# Copyright 2026 The braintrace authors. Licensed under the Apache License, Version 2.0.
"""Pass 4: the step with an additive perturbation at every new hidden value.

Every equation producing a new hidden value ``h`` is renamed to produce ``ĥ``, followed by
``h = stop_gradient(ĥ) + p_h`` where ``p_h`` is a new jaxpr input shaped like ``h``. With all
``p = 0`` the values are unchanged. Reverse mode through this jaxpr then gives

* w.r.t. ``p_h``: the learning signal ``∂L_t/∂h_t`` (partial: other new hidden values held
  fixed, which is what pairs with the traces ``dh_t/dθ``);
* w.r.t. a parameter: its exact same-step gradient along paths that avoid every new hidden
  value (a readout; the *output bypass*);
* w.r.t. an old hidden value: ``∂L_t/∂h_{t-1}`` along such paths (pairs with ``ε_{t-1}``).

The ``stop_gradient`` is what separates these parts, so nothing is counted twice.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

from .._jax_compat import Jaxpr, Literal, lax_primitives as P, new_var
from .diagnostics import DiagnosticKind, DiagnosticLevel, emit
from .jaxpr_tools import evaluate_equations, forward_closure, is_var, make_eqn
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
        ParamStates with a same-step path to the outputs that avoids new hidden values.
    bypass_hidden_paths : tuple of Path
        Hidden states whose old value reaches the outputs avoiding new hidden values.
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
                f"state: {[_fmt(p) for p in self.perturb_hidden_paths]}); got {len(perturb_data)}."
            )
        for var, value, path in zip(self.perturb_vars, perturb_data, self.perturb_hidden_paths, strict=True):
            if tuple(getattr(value, "shape", ())) != tuple(var.aval.shape):
                raise ValueError(
                    f"the perturbation of `{_fmt(path)}` must have shape {tuple(var.aval.shape)}; "
                    f"got {tuple(getattr(value, 'shape', ()))}."
                )
        jaxpr = self.perturb_jaxpr
        env = dict(zip(jaxpr.constvars, jaxpr.consts, strict=True))
        env.update(zip(jaxpr.invars, list(inputs) + list(perturb_data), strict=True))
        evaluate_equations(jaxpr.eqns, env)
        return [a.val if isinstance(a, Literal) else env[a] for a in jaxpr.outvars]


def _fmt(path) -> str:
    return ".".join(map(str, path))


def add_hidden_perturbation_from_minfo(minfo: ModuleInfo) -> HiddenPerturbation:
    """Build the perturbed step of ``minfo`` (see the module docstring).

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
    new_hidden_vars = []
    state_by_path = {minfo.state_id_to_path[id(st)]: st for st in minfo.compiled_model_states}
    for path, h in minfo.hidden_path_to_outvar.items():
        p = new_var(h.aval)
        perturb_vars.append(p)
        perturb_paths.append(path)
        perturb_states.append(state_by_path[path])
        if h in producers and h not in renamed:
            i, k = producers[h]
            hat = new_var(h.aval)
            cut = new_var(h.aval)
            renamed[h] = (i, k, hat)
            insert_after.setdefault(i, []).extend([
                make_eqn([hat], [cut], P.stop_gradient_p),
                make_eqn([cut, p], [h], P.add_p),
            ])
            new_hidden_vars.append(h)
        else:
            # The state is not written by an equation (unchanged, or a copy of another value):
            # synthesise its new value and point its state output slot at it.
            cut = new_var(h.aval)
            fresh = new_var(h.aval)
            prefix_eqns.extend([make_eqn([h], [cut], P.stop_gradient_p), make_eqn([cut, p], [fresh], P.add_p)])
            outvars[state_slot[path]] = fresh
            new_hidden_vars.append(fresh)

    new_eqns = list(prefix_eqns)
    for i, eqn in enumerate(eqns):
        hits = [(k, hat) for h, (j, k, hat) in renamed.items() if j == i]
        if hits:
            outs = list(eqn.outvars)
            for k, hat in hits:
                outs[k] = hat
            eqn = eqn.replace(outvars=outs)
        new_eqns.append(eqn)
        new_eqns.extend(insert_after.get(i, []))

    perturb_jaxpr = Jaxpr(list(jaxpr.constvars), list(jaxpr.invars) + perturb_vars, outvars, new_eqns,
                          jaxpr.effects, consts=list(jaxpr.consts))

    # Same-step paths to the outputs that avoid every new hidden value.
    _, _, other_state_outs = minfo.split_state_outvars()
    readable = set(v for v in outvars[:n_out] if is_var(v))
    readable |= set(v for v in other_state_outs if is_var(v))
    crosses = lambda e: e.primitive is not P.stop_gradient_p  # noqa: E731
    bypass_params = tuple(
        path for path, leaves in minfo.weight_path_to_invars.items()
        if forward_closure(leaves, new_eqns, crosses=crosses) & readable
    )
    bypass_hidden = tuple(
        path for path, v in minfo.hidden_path_to_invar.items()
        if forward_closure([v], new_eqns, crosses=crosses) & readable
    )
    if bypass_params:
        emit(DiagnosticKind.OUTPUT_BYPASSES_HIDDEN, DiagnosticLevel.INFO,
             f"ParamState(s) {', '.join('`' + _fmt(p) + '`' for p in bypass_params)} reach the step output "
             "without passing a new hidden value; that part of their gradient is exact and computed in "
             "the same step.",
             context={"bypass_param_paths": [_fmt(p) for p in bypass_params],
                      "bypass_hidden_paths": [_fmt(p) for p in bypass_hidden]})
    return HiddenPerturbation(
        perturb_vars=perturb_vars,
        perturb_hidden_paths=perturb_paths,
        perturb_hidden_states=perturb_states,
        perturb_jaxpr=perturb_jaxpr,
        bypass_param_paths=bypass_params,
        bypass_hidden_paths=bypass_hidden,
    )
