# Copyright 2026 The braintrace authors. Licensed under the Apache License, Version 2.0.
"""The online learner: a brainstate Module that wraps a model and keeps eligibility traces.

One call of :meth:`ETraceAlgorithm.update` runs one model step and advances the traces. It
is a ``jax.custom_vjp`` function of the parameters: differentiating a loss of its output
(``brainstate.transform.grad``) returns the *online* gradient estimate instead of
backpropagating through time. Its backward pass

1. pulls the loss cotangent back through the perturbed step, which gives the learning
   signal ``∂L_t/∂h_t`` per hidden group, the exact same-step gradient of parameters that
   reach the output without a hidden state, and ``∂L_t/∂h_{t-1}`` along such paths;
2. contracts the traces with those signals (``solve``) and adds everything up per
   ``ParamState`` leaf.

Subclasses define the trace layout (``init``), its recursion (``roll``) and its contraction
(``solve``). Everything runs inside ``jax.jit`` with no Python work per step.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import brainstate
import jax
import jax.numpy as jnp
import numpy as np

from .. import _errors
from ..compiler.diagnostics import format_path
from ..compiler.graph import ETraceGraph, compile_etrace_graph
from ..ops.primitive import etp_rule_of
from . import executor

__all__ = ["ETraceAlgorithm", "EligibilityTrace"]


class EligibilityTrace(brainstate.ShortTermState):
    """A brainstate state holding eligibility traces (reset with the hidden states)."""


class _Compiled:
    """Compilation products kept out of brainstate's module-graph traversal.

    ``ETraceGraph`` is a NamedTuple whose tables are keyed by jaxpr vars; brainstate would
    walk into it as a pytree when listing the learner's states.
    """

    __slots__ = ("graph", "layout", "step_fn")

    def __init__(self, graph=None, layout=None, step_fn=None):
        self.graph = graph
        self.layout = layout
        self.step_fn = step_fn

    def __repr__(self) -> str:
        if self.graph is None:
            return "not compiled"
        return (f"compiled({len(self.graph.hidden_groups)} hidden groups, "
                f"{len(self.graph.hidden_param_op_relations)} relations)")



class ETraceAlgorithm(brainstate.nn.Module):
    """Base class of the online-learning algorithms.

    Parameters
    ----------
    model : brainstate.nn.Module
        The model; ``model.update(*inputs)`` runs one time step.
    vmap : bool
        Treat the leading axis of every input and of every hidden/trace state as independent
        lanes over an unbatched graph (see :func:`braintrace.compile`).
    name : str, optional
        Module name.
    """

    def __init__(self, model: brainstate.nn.Module, *, vmap: bool = False, name: str | None = None):
        super().__init__(name=name)
        if not isinstance(model, brainstate.nn.Module):
            raise TypeError(f"the online learner wraps a `brainstate.nn.Module`; got {type(model).__name__}.")
        self.model = model
        self.vmap = bool(vmap)
        self._compiled = _Compiled()

    # ------------------------------------------------------------------ subclass hooks
    def init_traces(self, graph: ETraceGraph, quantities: executor.StepQuantities) -> dict:
        """Zero traces shaped from one step's quantities (shape structs)."""
        raise NotImplementedError

    def roll(self, traces: dict, q: executor.StepQuantities, step: jax.Array) -> dict:
        """Advance the traces by one step."""
        raise NotImplementedError

    def solve(self, traces: dict, signals: Sequence[jax.Array], q: executor.StepQuantities,
              step: jax.Array) -> list:
        """Per relation, ``{key: gradient of the effective op input}``."""
        raise NotImplementedError

    # ------------------------------------------------------------------ compilation
    @property
    def graph(self) -> ETraceGraph:
        """The compiled graph (raises before :meth:`compile_graph`)."""
        self._assert_compiled("graph")
        return self._compiled.graph

    @property
    def is_compiled(self) -> bool:
        return self._compiled.graph is not None

    @property
    def param_states(self) -> dict:
        """The model's ``ParamState`` objects by path (the keys of the returned gradients)."""
        return dict(self.model.states(brainstate.ParamState))

    @property
    def hidden_states(self) -> dict:
        return dict(self.model.states(brainstate.HiddenState))

    def _assert_compiled(self, what: str) -> None:
        if self._compiled.graph is None:
            raise ValueError(
                f"`{type(self).__name__}.{what}` needs a compiled graph; call "
                f"`learner.compile_graph(*example_inputs)` (or use `braintrace.compile`) first."
            )

    def compile_graph(self, *example_args) -> ETraceGraph:
        """Compile the model's step for these example inputs and allocate the traces.

        In ``vmap`` mode the example inputs carry the lane axis first; the graph is compiled
        for one lane.
        """
        if self.vmap:
            lane_args = jax.tree.map(lambda a: a[0], example_args)
            lane_values = {}
            for st in self._lane_states():
                lane_values[id(st)] = st.value
                st.value = jax.tree.map(lambda a: a[0], st.value)
            try:
                graph = compile_etrace_graph(self.model, *lane_args)
            finally:
                for st in self._lane_states():
                    st.value = lane_values[id(st)]
        else:
            graph = compile_etrace_graph(self.model, *example_args)
        if not graph.hidden_param_op_relations:
            raise _errors.CompilationError(
                f"`{type(self.model).__name__}` has no ETP op feeding a hidden state, so no weight can be "
                "trained online. Use `braintrace.matmul`/`element_wise`/`conv`/`einsum` on "
                "`param_state.value` in the recurrent path; see `graph.explain()`:\n"
                + "\n".join(str(r) for r in graph.diagnostics)
            )
        self._compiled = _Compiled(graph, executor.StateLayout.of(graph))
        self._compiled.step_fn = self._build_step()
        self.init_etrace_state(*example_args)
        return graph

    def _lane_states(self) -> list:
        return [st for st in self.model.states().values() if not isinstance(st, brainstate.ParamState)]

    def init_etrace_state(self, *example_args) -> None:
        """(Re)allocate zero traces and reset the step counter."""
        self._assert_compiled("init_etrace_state")
        structs = self._quantity_shapes(example_args)
        traces = self.init_traces(self._compiled.graph, structs)
        if self.vmap:
            lanes = jax.tree.leaves(example_args)[0].shape[0]
            traces = jax.tree.map(lambda t: jnp.zeros((lanes,) + t.shape, t.dtype), traces)
        self.etrace = EligibilityTrace(traces)
        self.running_index = brainstate.LongTermState(jnp.asarray(0, jnp.int32))

    def reset_state(self, batch_size=None, **kwargs) -> None:
        """Zero the traces and the step counter (hidden states are the model's own)."""
        if self._compiled.graph is None:
            return
        self.etrace.value = jax.tree.map(jnp.zeros_like, self.etrace.value)
        self.running_index.value = jnp.asarray(0, jnp.int32)

    def _quantity_shapes(self, example_args):
        layout = self._compiled.layout
        minfo = self._compiled.graph.module_info
        values = [st.value for st in minfo.compiled_model_states]

        def probe(args, values):
            params, others = layout.split([jax.tree.leaves(v) for v in values])
            _, temps, _ = executor.run_step(self._compiled.graph, layout, jax.tree.leaves(args), params, others)
            return executor.step_quantities(self._compiled.graph, temps, dict(zip(layout.param_paths, params, strict=True)))

        args = example_args
        if self.vmap:
            args = jax.tree.map(lambda a: a[0], example_args)
            values = [v if isinstance(st, brainstate.ParamState) else jax.tree.map(lambda a: a[0], v)
                      for st, v in zip(minfo.compiled_model_states, values, strict=True)]
        return jax.eval_shape(probe, args, values)

    # ------------------------------------------------------------------ the step
    def _build_step(self) -> Callable:
        graph, layout = self._compiled.graph, self._compiled.layout
        uses_old_signal = bool(graph.hidden_perturb.bypass_hidden_paths)

        def quantities(temps, params):
            return executor.step_quantities(graph, temps, dict(zip(layout.param_paths, params, strict=True)))

        def primal(args, params, others, traces, step):
            main, temps, _ = executor.run_step(graph, layout, args, params, others)
            q = quantities(temps, params)
            return main, self.roll(traces, q, step)

        def fwd(args, params, others, traces, step):
            main, temps, vjp_fn = executor.run_step(graph, layout, args, params, others)
            q = quantities(temps, params)
            new_traces = self.roll(traces, q, step)
            residual = (vjp_fn, new_traces, traces if uses_old_signal else None, q, params, temps, step)
            return (main, new_traces), residual

        def bwd(residual, cotangents):
            vjp_fn, new_traces, old_traces, q, params, temps, step = residual
            d_main, _ = cotangents
            d_main = [jnp.zeros_like(t) if type(t).__name__ == "Zero" else t for t in d_main]
            d_args, d_params, d_others, d_perturb = vjp_fn(d_main)
            signals = executor.learning_signals(graph, d_perturb)
            grads = [list(p) for p in d_params]
            self._accumulate(grads, self.solve(new_traces, signals, q, step), params, temps)
            if uses_old_signal:
                old_signals = executor.old_hidden_signals(graph, layout, d_others)
                self._accumulate(grads, self.solve(old_traces, old_signals, q, step - 1), params, temps)
            zero_traces = jax.tree.map(jnp.zeros_like, new_traces)
            return d_args, grads, d_others, zero_traces, _float0_like(step)

        step_fn = jax.custom_vjp(primal)
        step_fn.defvjp(fwd, bwd)
        return step_fn

    def _accumulate(self, grads, per_relation, params, temps) -> None:
        """Add per-relation effective-input gradients into per-leaf parameter gradients."""
        index_of_path = {p: i for i, p in enumerate(self._compiled.layout.param_paths)}
        for rel, eff_grads in zip(self._compiled.graph.hidden_param_op_relations, per_relation, strict=True):
            rule = etp_rule_of(rel.primitive)
            raw = executor.op_inputs(rel, dict(zip(self._compiled.layout.param_paths, params, strict=True)), temps)
            raw_grads = rule.raw_gradients(raw, eff_grads, rel.eqn_params)
            for key, g in raw_grads.items():
                path = rel.trainable_paths[key]
                slot = index_of_path[path]
                leaf = rel.trainable_leaf_indices[key]
                leaf_value = params[slot][leaf]
                g = executor.pull_back_to_leaf(rel, key, leaf_value, g, temps)
                grads[slot][leaf] = grads[slot][leaf] + g.astype(grads[slot][leaf].dtype)

    def update(self, *args):
        """One online step: run the model, advance the traces, return the model output."""
        self._assert_compiled("update")
        minfo = self._compiled.graph.module_info
        layout = self._compiled.layout
        states = self._current_states()
        leaves = [jax.tree.leaves(st.value) for st in states]
        params, others = layout.split(leaves)
        arg_leaves = jax.tree.leaves(args)
        step = self.running_index.value
        if self.vmap:
            fn = jax.vmap(self._compiled.step_fn, in_axes=(0, None, 0, 0, None))
        else:
            fn = self._compiled.step_fn
        main, new_traces = fn(arg_leaves, params, others, self.etrace.value, step)
        n_out = minfo.num_var_out
        out_leaves, other_leaves = main[:n_out], main[n_out:]
        # Rebuild (output, state values) with units, then write the non-parameter states.
        position = 0
        per_state_leaves = []
        for i in range(len(states)):
            if i in layout.param_indices:
                per_state_leaves.append(leaves[i])
            else:
                k = len(leaves[i])
                per_state_leaves.append(other_leaves[position:position + k])
                position += k
        flat = list(out_leaves) + [leaf for ls in per_state_leaves for leaf in ls]
        out, state_vals = jax.tree.unflatten(minfo.out_treedef, flat)
        for i in layout.other_indices:
            states[i].value = state_vals[i]
        self.etrace.value = new_traces
        self.running_index.value = step + 1
        return out

    def _current_states(self) -> list:
        """The model's states for the compiled paths.

        ``brainstate.nn.init_all_states`` creates new state objects; looking them up by path
        keeps the learner attached to the model after a re-initialisation.
        """
        minfo = self._compiled.graph.module_info
        current = self.model.states()
        out = []
        for st in minfo.compiled_model_states:
            path = minfo.state_id_to_path[id(st)]
            now = current[path] if path in current else st
            if now is not st:
                old_leaves = jax.tree.leaves(st.value)
                new_leaves = jax.tree.leaves(now.value)
                if len(old_leaves) != len(new_leaves) or any(
                        jnp.shape(a) != jnp.shape(b) for a, b in zip(old_leaves, new_leaves, strict=True)):
                    raise ValueError(
                        f"state `{format_path(path)}` changed shape since the graph was compiled "
                        f"({[jnp.shape(a) for a in old_leaves]} -> {[jnp.shape(b) for b in new_leaves]}); "
                        "recompile with `learner.compile_graph(...)` after changing the batch size."
                    )
            out.append(now)
        return out

    # ------------------------------------------------------------------ inspection
    def get_etrace_of(self, weight_path) -> dict:
        """The traces of the relations that train ``weight_path`` (a path tuple or ParamState).

        Returns ``{(relation_index, group_index): trace}``.
        """
        self._assert_compiled("get_etrace_of")
        if isinstance(weight_path, brainstate.ParamState):
            matches = [p for p, st in self.param_states.items() if st is weight_path]
            if not matches:
                raise ValueError("this ParamState does not belong to the learner's model.")
            weight_path = matches[0]
        weight_path = tuple(weight_path)
        out = {}
        for r, rel in enumerate(self._compiled.graph.hidden_param_op_relations):
            if weight_path in rel.trainable_paths.values():
                for g in rel.hidden_groups:
                    key = f"{r}:{g.index}"
                    if key in self.etrace.value:
                        out[(r, g.index)] = self.etrace.value[key]
        if not out:
            known = sorted({format_path(p) for rel in self._compiled.graph.hidden_param_op_relations
                            for p in rel.trainable_paths.values()})
            raise ValueError(f"`{format_path(weight_path)}` has no eligibility trace; traced weights: {known}.")
        return out

    def show_graph(self) -> str:
        """A readable summary of the compiled graph (also returned as a string)."""
        return repr(self.graph)

    def report(self):
        """A :class:`~braintrace.CompilationReport` of the compiled graph."""
        from ..compiler.report import CompilationReport

        return CompilationReport(self.graph)

    # ------------------------------------------------------------------ drivers
    def etrace_grad(self, *sequences, step_fn: Callable, mask=None, reduction: str = "mean",
                    return_value: bool = False, has_aux: bool = False):
        """Online gradients over whole sequences (see :func:`braintrace.etrace_grad`)."""
        from .drivers import etrace_grad

        return etrace_grad(self, *sequences, step_fn=step_fn, mask=mask, reduction=reduction,
                           return_value=return_value, has_aux=has_aux)

    def etrace_evolve(self, *sequences, return_outputs: bool = False):
        """Advance states and traces over sequences without a loss."""
        from .drivers import etrace_evolve

        return etrace_evolve(self, *sequences, return_outputs=return_outputs)


def _float0_like(x):
    # The cotangent of an integer input (the step counter).
    return np.zeros(jnp.shape(x), dtype=jax.dtypes.float0)
