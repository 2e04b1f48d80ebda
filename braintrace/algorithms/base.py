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

The learning rule itself is a :class:`~braintrace.algorithms.trace_rule.TraceRule` held in
``learner.trace_rule``: its state layout (``init``), its recursion (``roll``) and its
contraction (``solve``) are pure functions; the learner only wires them to the compiled graph
and the states. Everything runs inside ``jax.jit`` with no Python work per step.
"""

from __future__ import annotations

from collections.abc import Callable

import brainstate
import jax
import jax.numpy as jnp
import numpy as np
from jax.custom_derivatives import CustomVJPPrimal, SymbolicZero

from .. import _errors
from ..compiler.diagnostics import format_path
from ..compiler.graph import ETraceGraph, compile_etrace_graph
from ..ops.primitive import etp_rule_of
from ..ops.matmul import batch_sharded_traces
from . import executor, factored_gradients, input_checks, scan_descent, trace_storage, windows
from .cascade import cascade_quantities
from ._legacy_rule import legacy_rule_of
from .options import DEFAULT_SNAP_MAX_JACOBIAN_ELEMENTS, LearnerOptions
from .state_layout import StateLayout
from .trace_rule import RuleContext, TraceRule

__all__ = ["ETraceAlgorithm", "ETraceVjpAlgorithm", "EligibilityTrace"]


class EligibilityTrace(brainstate.ShortTermState):
    """A brainstate state holding eligibility traces (reset with the hidden states)."""


class _Compiled:
    """Compilation products kept out of brainstate's module-graph traversal.

    ``ETraceGraph`` is a NamedTuple whose tables are keyed by jaxpr vars; brainstate would
    walk into it as a pytree when listing the learner's states. ``arg_treedef`` and
    ``arg_avals`` describe one step's inputs (one lane in vmap mode) for input checks;
    ``calls`` counts traced calls of ``update`` (``etrace_grad`` checks that its ``step_fn``
    calls the learner exactly once). ``rule`` is the learning rule the step was built with and
    ``context`` the :class:`RuleContext` it is called with. ``factors`` is the
    :class:`~braintrace.algorithms.factored_gradients.FactorPlan` of every factorable weight;
    while a driver traces a step with ``sinks = (plan, zero pairs, transposed weights)`` set
    (``plan`` a subset; the transposed weights made once, outside the driver's loop),
    ``update`` runs the factored step of that subset (built once, kept in ``factored_steps``),
    whose backward pass returns the factor pairs as the sinks' cotangents.
    """

    __slots__ = ("graph", "layout", "rule", "context", "step_fn", "arg_treedef", "arg_avals", "calls",
                 "factors", "factored_steps", "sinks")

    def __init__(self, graph=None, layout=None, rule=None, context=None, step_fn=None, arg_treedef=None,
                 arg_avals=()):
        self.graph = graph
        self.layout = layout
        self.rule = rule
        self.context = context
        self.step_fn = step_fn
        self.arg_treedef = arg_treedef
        self.arg_avals = tuple(arg_avals)
        self.calls = 0
        self.factors = factored_gradients.FactorPlan()
        self.factored_steps = {}
        self.sinks = None

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
    name : str, optional
        Module name.
    vmap : bool
        Treat the leading axis of every input and of every hidden/trace state as independent
        lanes over an unbatched graph (see :func:`braintrace.compile`).
    vjp_method, fast_solve, trace_dtype, chunked_trace, control_flow, config, random_feedback_key, snap_max_jacobian_elements
        The published learner options, validated by
        :class:`~braintrace.algorithms.options.LearnerOptions` (an option this version does not
        provide raises :class:`~braintrace.NotSupportedError`).

    Notes
    -----
    A subclass sets ``self.trace_rule`` (a :class:`~braintrace.algorithms.trace_rule.TraceRule`)
    in its ``__init__``. A subclass written for the old hooks (``init_traces(graph, q)``,
    ``roll(traces, q, step)``, ``solve(traces, signals, q, step)``, ``learning_signal(signals,
    extra)``, ``same_step_gradients``) keeps working: its hooks are wrapped into a rule when it
    compiles.
    """

    def __init__(self, model: brainstate.nn.Module, name: str | None = None, *, vmap: bool = False,
                 vjp_method: str = "single-step", fast_solve: bool = True, trace_dtype=None,
                 chunked_trace: bool = True, control_flow=None, config=None, random_feedback_key=None,
                 snap_max_jacobian_elements: int = DEFAULT_SNAP_MAX_JACOBIAN_ELEMENTS):
        # Options first: a rejected option must not leave a half-built module behind.
        options = LearnerOptions(
            vjp_method=vjp_method, fast_solve=fast_solve, trace_dtype=trace_dtype, chunked_trace=chunked_trace,
            control_flow=control_flow, config=config, random_feedback_key=random_feedback_key,
            snap_max_jacobian_elements=snap_max_jacobian_elements,
        )
        super().__init__(name=name)
        if not isinstance(model, brainstate.nn.Module):
            raise TypeError(f"the online learner wraps a `brainstate.nn.Module`; got {type(model).__name__}.")
        self.model = model
        self.vmap = bool(vmap)
        self.options = options
        self._compiled = _Compiled()
        # A BatchPlacement, set by `braintrace.compile(..., sharding=...)`.
        self._placement = None
        #: The learning rule; subclasses set it in their `__init__`.
        self.trace_rule: TraceRule | None = None
        # Placeholders until `compile_graph` allocates the rule's state.
        self.etrace = EligibilityTrace({})
        self.running_index = brainstate.LongTermState(jnp.asarray(0, jnp.int32))

    # ------------------------------------------------------------------ the rule
    def _compile_rule(self, graph: ETraceGraph) -> TraceRule:
        """The rule the step is built with (a subclass may complete ``trace_rule`` from the graph)."""
        return self.trace_rule

    def _resolved_rule(self, graph: ETraceGraph) -> TraceRule:
        rule = legacy_rule_of(self, self._compile_rule(graph))
        if rule is None:
            raise TypeError(
                f"`{type(self).__name__}` has no learning rule: set `self.trace_rule` to a "
                "`braintrace.algorithms.trace_rule.TraceRule` in `__init__` (see the 'Writing a learning rule' "
                "page of the documentation)."
            )
        return rule

    # ------------------------------------------------------------------ compilation
    def graph_options(self) -> dict:
        """Extra :func:`~braintrace.compile_etrace_graph` options of this rule's scope.

        The diagonal scope needs none; the coupled scope (``OSTLRecurrent``) and SnAp return
        ``include_recurrent_mixing`` / ``sparse_n`` / ``snap_max_jacobian_elements``.
        """
        return {}

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
        """The model's ``HiddenState`` objects by path."""
        return dict(self.model.states(brainstate.HiddenState))

    @property
    def other_states(self) -> dict:
        """The model's states that are neither ``ParamState`` nor ``HiddenState``, by path."""
        return {path: st for path, st in self.model.states().items()
                if not isinstance(st, (brainstate.ParamState, brainstate.HiddenState))}

    @property
    def path_to_states(self) -> dict:
        """Every state of the model by path."""
        return dict(self.model.states())

    @property
    def state_id_to_path(self) -> dict:
        """``{id(state): path}`` for every state of the model."""
        return {id(st): path for path, st in self.model.states().items()}

    def _assert_compiled(self, what: str) -> None:
        if self._compiled.graph is None:
            raise ValueError(
                f"`{type(self).__name__}.{what}` needs a compiled graph; call "
                f"`learner.compile_graph(*example_inputs)` (or use `braintrace.compile`) first."
            )

    def compile_graph(self, *example_args, **example_kwargs) -> ETraceGraph:
        """Compile the model's step for these example inputs and allocate the traces.

        In ``vmap`` mode the example inputs carry the lane axis first; the graph is compiled
        for one lane. Keyword inputs are bound to positions of ``model.update``.

        The learner is changed only when compilation succeeds: after an error it is exactly
        as before (compiled or not), and the model's states are unchanged.

        Raises
        ------
        NotSupportedError
            Inside ``jax.jit`` (or another JAX trace), for a non-float ``HiddenState`` and for
            complex inputs, parameters or hidden states.
        CompilationError
            If no ETP op feeds a hidden state, or a hidden state changes shape or dtype in
            the step.
        """
        input_checks.check_not_traced(self.model, example_args, example_kwargs, "compile_graph")
        example_args = windows.first_step_inputs(self._bind_inputs(example_args, example_kwargs))
        input_checks.check_no_complex(self.model, example_args)
        if self.vmap:
            lane_args = jax.tree.map(lambda a: a[0], example_args)
            lane_values = {}
            for st in self._lane_states():
                lane_values[id(st)] = st.value
                st.value = jax.tree.map(lambda a: a[0], st.value)
            try:
                graph = compile_etrace_graph(self.model, *lane_args, control_flow=self.options.control_flow,
                                             **self.graph_options())
            finally:
                for st in self._lane_states():
                    st.value = lane_values[id(st)]
        else:
            lane_args = example_args
            graph = compile_etrace_graph(self.model, *example_args, control_flow=self.options.control_flow,
                                         **self.graph_options())
        input_checks.check_hidden_states(self.model, graph)
        if not graph.hidden_param_op_relations:
            raise _errors.CompilationError(
                f"`{type(self.model).__name__}` has no ETP op feeding a hidden state, so no weight can be "
                "trained online. Use `braintrace.matmul`/`element_wise`/`conv`/`einsum` on "
                "`param_state.value` in the recurrent path; see `graph.explain()`:\n"
                + "\n".join(str(r) for r in graph.diagnostics)
            )
        # `trace_dtype`: the rule's state is stored narrower and computed in float32 (or wider).
        rule = trace_storage.with_trace_dtype(self._resolved_rule(graph), self.options.trace_dtype)
        scan_descent.check_supported(rule, graph, type(self).__name__)
        arg_leaves, arg_treedef = jax.tree.flatten(lane_args)
        compiled = _Compiled(graph, StateLayout.of(graph), rule,
                             RuleContext(graph, self.options), arg_treedef=arg_treedef,
                             arg_avals=[(jnp.shape(a), jnp.result_type(a)) for a in arg_leaves])
        compiled.step_fn = self._build_step(compiled)
        if not self.vmap:
            values = [jax.tree.leaves(st.value) for st in graph.module_info.compiled_model_states]
            params, _ = compiled.layout.split(values)
            compiled.factors = factored_gradients.plan_factors(graph, compiled.layout, rule, compiled.context,
                                                               params)
        traces = self._fresh_traces(compiled, example_args)
        # Commit: nothing above wrote the learner or the model.
        self._compiled = compiled
        self._set_traces(traces)
        return graph

    def _bind_inputs(self, args: tuple, kwargs: dict) -> tuple:
        return input_checks.bind_inputs(self.model, args, kwargs)

    def _lane_states(self) -> list:
        return [st for st in self.model.states().values() if not isinstance(st, brainstate.ParamState)]

    def init_etrace_state(self, *example_args) -> None:
        """(Re)allocate zero traces and reset the step counter."""
        self._assert_compiled("init_etrace_state")
        self._set_traces(self._fresh_traces(self._compiled, tuple(example_args)))

    def _fresh_traces(self, compiled: _Compiled, example_args: tuple) -> dict:
        structs = self._quantity_shapes(compiled, example_args)
        traces = compiled.rule.init(compiled.context, structs)
        if self.vmap:
            lanes = jax.tree.leaves(example_args)[0].shape[0]
            traces = jax.tree.map(lambda t: jnp.zeros((lanes,) + t.shape, t.dtype), traces)
        return traces

    def _set_traces(self, traces) -> None:
        # The states made in `__init__` keep their identity; their values change structure.
        self.etrace.value = traces
        self.running_index.value = jnp.asarray(0, jnp.int32)

    def reset_state(self, batch_size=None, **kwargs) -> None:
        """Zero the traces and the step counter (hidden states are the model's own)."""
        if self._compiled.graph is None:
            return
        self.etrace.value = jax.tree.map(jnp.zeros_like, self.etrace.value)
        self.running_index.value = jnp.asarray(0, jnp.int32)

    def _quantity_shapes(self, compiled: _Compiled, example_args):
        layout = compiled.layout
        minfo = compiled.graph.module_info
        values = [st.value for st in minfo.compiled_model_states]

        def probe(args, values):
            params, others = layout.split([jax.tree.leaves(v) for v in values])
            main, temps, vjp_fn = executor.run_step(compiled.graph, layout, jax.tree.leaves(args), params, others)
            q = executor.step_quantities(compiled.graph, temps, dict(zip(layout.param_paths, params, strict=True)))
            return cascade_quantities(compiled.rule, compiled.graph, layout, q, main, vjp_fn)

        args = example_args
        if self.vmap:
            args = jax.tree.map(lambda a: a[0], example_args)
            values = [v if isinstance(st, brainstate.ParamState) else jax.tree.map(lambda a: a[0], v)
                      for st, v in zip(minfo.compiled_model_states, values, strict=True)]
        return jax.eval_shape(probe, args, values)

    # ------------------------------------------------------------------ the step
    def _build_step(self, compiled: _Compiled, plan=None) -> Callable:
        """The step as a ``custom_vjp`` of ``(args, params, others, traces, step, extra[, sinks])``.

        With a ``plan`` (a :class:`~braintrace.algorithms.factored_gradients.FactorPlan`), the
        step takes one ``(x, s)`` sink per factor group and its backward pass returns the pairs
        as their cotangents, with zeros for those weights.
        """
        graph, layout, rule, ctx = compiled.graph, compiled.layout, compiled.rule, compiled.context
        same_step = bool(rule.same_step_gradients)
        uses_old_signal = bool(graph.hidden_perturb.bypass_hidden_paths) and same_step
        trace_factors = [f for f in plan.factors if f.kind == "trace"] if plan is not None else []
        step_factors = [f for f in plan.factors if f.kind == "same_step"] if plan is not None else []
        deferred = plan.deferred if plan is not None else ()

        def quantities(temps, params, main, vjp_fn):
            q = executor.step_quantities(graph, temps, dict(zip(layout.param_paths, params, strict=True)))
            return cascade_quantities(rule, graph, layout, q, main, vjp_fn)

        def primal(args, params, others, traces, step, extra, sinks=None):
            main, temps, vjp_fn = executor.run_step(graph, layout, args, params, others)
            q = quantities(temps, params, main, vjp_fn)
            return main, rule.roll(ctx, traces, q, step)

        def fwd(args, params, others, traces, step, extra, sinks=None):
            exact = True
            if deferred:  # symbolic zeros: which inputs are differentiated is known here
                exact = uses_old_signal or any(p.perturbed for p in jax.tree.leaves((args, others), is_leaf=_is_primal))
                args, params, others, traces, step, extra, sinks = jax.tree.map(
                    lambda p: p.value, (args, params, others, traces, step, extra, sinks), is_leaf=_is_primal)
            # Under a second derivative these carry tangents; the online gradient is not
            # differentiable, so refuse instead of returning zeros.
            args, params, others, traces = input_checks.first_order_only((args, params, others, traces))
            # Factored: sinks = (zero pairs, transposed weights), see factored_gradients.
            transposed = sinks[1] if sinks is not None else ()
            # A deferred pair drops its part's input cotangent unless a step input is
            # differentiated or the rule reads the old states' cotangents (deferred_cotangents).
            main, temps, vjp_fn = executor.run_step(graph, layout, args, params, others, plan, transposed, exact)
            q = quantities(temps, params, main, vjp_fn)
            new_traces = rule.roll(ctx, traces, q, step)
            residual = (vjp_fn, new_traces, traces if uses_old_signal else None, q, params, temps, step, extra,
                        transposed)
            return (main, new_traces), residual

        def bwd(residual, cotangents):
            # Traced when the gradient is taken; a data-parallel learner keeps its trace
            # contractions shard-local (see ops.matmul.batch_sharded_traces).
            with batch_sharded_traces(self._data_parallel):
                return bwd_body(residual, cotangents)

        def bwd_body(residual, cotangents):
            vjp_fn, new_traces, old_traces, q, params, temps, step, extra, transposed = residual
            d_main, _ = cotangents
            d_main = [jnp.zeros_like(t) if type(t).__name__ == "Zero" else t for t in d_main]
            d_main = [jnp.zeros(t.aval.shape, t.aval.dtype) if isinstance(t, SymbolicZero) else t for t in d_main]
            if deferred:
                d_args, d_params, d_others, d_perturb, d_taps, d_deferred = vjp_fn(d_main)
            elif plan is not None and plan.taps:
                d_args, d_params, d_others, d_perturb, d_taps = vjp_fn(d_main)
            else:
                d_args, d_params, d_others, d_perturb = vjp_fn(d_main)
            signals = rule.learning_signal(ctx, executor.learning_signals(graph, d_perturb), extra)
            if same_step:
                grads = [list(p) for p in d_params]
            else:
                grads = [[jnp.zeros_like(leaf) for leaf in p] for p in d_params]
            per_relation = rule.solve(ctx, new_traces, signals, q, step)
            pairs = {}
            for f in trace_factors:
                # The dense `x̄ᵀ s` of this weight becomes dead code; its pair goes to the driver.
                per_relation[f.index] = dict(per_relation[f.index])
                for key in ("weight",) if f.bias is None else ("weight", "bias"):
                    per_relation[f.index][key] = jnp.zeros_like(per_relation[f.index][key])
                pairs[f] = rule.weight_factor(ctx, new_traces, signals, q, step, f.index)
            for f in step_factors:
                for slot, leaf in [(f.param_slot, f.leaf)] + ([f.bias] if f.bias is not None else []):
                    grads[slot][leaf] = jnp.zeros_like(grads[slot][leaf])
                if f.deferral is None:
                    pairs[f] = (temps[("tap", f.index)], d_taps[f.index])
                else:  # s is made per window from (ct, m)
                    k = deferred.index(f)
                    pairs[f] = (temps[("tap", f.index)], (d_deferred[k], temps[("deferred_m", k)]))
            self._accumulate(grads, per_relation, params, temps)
            if uses_old_signal:
                old_signals = rule.learning_signal(ctx, executor.old_hidden_signals(graph, layout, d_others), extra)
                # Cotangents of the old states: no same-step cascade correction (see algorithms/cascade.py).
                q_old = q._replace(cascade=()) if q.cascade else q
                self._accumulate(grads, rule.solve(ctx, old_traces, old_signals, q_old, step - 1), params, temps)
            zero_traces = jax.tree.map(jnp.zeros_like, new_traces)
            d_extra = jax.tree.map(jnp.zeros_like, extra)
            if plan is None:  # the sinks argument is absent (None)
                return d_args, grads, d_others, zero_traces, _float0_like(step), d_extra, None
            d_sinks = (tuple(factored_gradients.group_cotangent(g, pairs) for g in plan.groups()),
                       jax.tree.map(jnp.zeros_like, transposed))
            return d_args, grads, d_others, zero_traces, _float0_like(step), d_extra, d_sinks

        step_fn = jax.custom_vjp(primal)
        step_fn.defvjp(fwd, bwd, symbolic_zeros=bool(deferred))
        return step_fn

    @property
    def _data_parallel(self) -> bool:
        """Whether the batch axis is sharded over more than one device."""
        return self._placement is not None and self._placement.num_shards > 1

    def _accumulate(self, grads, per_relation, params, temps) -> None:
        """Add per-relation effective-input gradients into per-leaf parameter gradients."""
        layout = self._compiled.layout
        for rel, eff_grads in zip(self._compiled.graph.hidden_param_op_relations, per_relation, strict=True):
            rule = etp_rule_of(rel.primitive)
            raw = executor.op_inputs(rel, dict(zip(layout.param_paths, params, strict=True)), temps)
            raw_grads = rule.raw_gradients(raw, eff_grads, rel.eqn_params)
            for key, g in raw_grads.items():
                path = rel.trainable_paths[key]
                slot = layout.param_slot(path)
                leaf = rel.trainable_leaf_indices[key]
                leaf_value = params[slot][leaf]
                g = executor.pull_back_to_leaf(rel, key, leaf_value, g, temps)
                grads[slot][leaf] = grads[slot][leaf] + g.astype(grads[slot][leaf].dtype)

    def update(self, *args, **kwargs):
        """One online step: run the model, advance the traces, return the model output.

        The inputs must have the tree structure, shapes and dtype kinds of the example
        inputs the learner was compiled with (keyword inputs are bound to positions of
        ``model.update``); a mismatch raises a ``ValueError``/``TypeError`` naming the input.
        """
        return self._update(args, kwargs)

    def _update(self, args: tuple, kwargs: dict, extra=None):
        """:meth:`update` with the rule's per-call value ``extra`` passed to the step."""
        self._assert_compiled("update")
        minfo = self._compiled.graph.module_info
        layout = self._compiled.layout
        args = self._bind_inputs(args, kwargs)
        if windows.routes_to_window(self, args):  # MultiStepData / vjp_method='multi-step'
            return windows.window_update(self, args)
        args = windows.strip_wrappers(args)
        arg_leaves = self._checked_arg_leaves(args)
        states = self._current_states()
        leaves = [jax.tree.leaves(st.value) for st in states]
        params, others = layout.split(leaves)
        self._compiled.calls += 1
        step = self.running_index.value
        sinks = self._compiled.sinks
        if self.vmap:
            fn = jax.vmap(self._compiled.step_fn, in_axes=(0, None, 0, 0, None, None))
            main, new_traces = fn(arg_leaves, params, others, self.etrace.value, step, extra)
        elif sinks is not None:  # a driver collects the factor pairs (factored_gradients)
            plan, zero_pairs, transposed = sinks
            fn = self._compiled.factored_steps.get(plan.factors)
            if fn is None:
                fn = self._compiled.factored_steps[plan.factors] = self._build_step(self._compiled, plan)
            main, new_traces = fn(arg_leaves, params, others, self.etrace.value, step, extra,
                                  (zero_pairs, transposed))
        else:
            main, new_traces = self._compiled.step_fn(arg_leaves, params, others, self.etrace.value, step, extra)
        n_out = minfo.num_var_out
        out_leaves, other_leaves = main[:n_out], main[n_out:]
        # Rebuild (output, state values) with units, then write the non-parameter states.
        flat = list(out_leaves) + layout.rebuild_state_values(params, other_leaves)
        out, state_vals = jax.tree.unflatten(minfo.out_treedef, flat)
        if self._placement is not None:
            # Data parallel: keep the written states on their shards (no per-step gather).
            state_vals = [self._placement.constrain(v) if i in layout.other_indices else v
                          for i, v in enumerate(state_vals)]
            new_traces = self._placement.constrain(new_traces)
        for i in layout.other_indices:
            states[i].value = state_vals[i]
        self.etrace.value = new_traces
        self.running_index.value = step + 1
        return out

    def _checked_arg_leaves(self, args: tuple) -> list:
        """The input leaves, checked against (and cast to) the compiled example inputs."""
        trace_leaves = jax.tree.leaves(self.etrace.value) if self.vmap else []
        lanes = int(trace_leaves[0].shape[0]) if trace_leaves else None
        return input_checks.checked_arg_leaves(self.model, self._compiled, args, lanes)

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

        Returns ``{(relation_index, group_index): trace}``, as the rule's
        :meth:`~braintrace.algorithms.trace_rule.TraceRule.traces_of` reports them.
        """
        self._assert_compiled("get_etrace_of")
        if isinstance(weight_path, brainstate.ParamState):
            matches = [p for p, st in self.param_states.items() if st is weight_path]
            if not matches:
                raise ValueError("this ParamState does not belong to the learner's model.")
            weight_path = matches[0]
        weight_path = tuple(weight_path)
        out = {}
        compiled = self._compiled
        for r, rel in enumerate(compiled.graph.hidden_param_op_relations):
            if weight_path in rel.trainable_paths.values():
                for key, trace in compiled.rule.traces_of(compiled.context, self.etrace.value, r).items():
                    out[(int(key[0]), int(key[1]))] = trace
        if not out:
            known = sorted({format_path(p) for rel in self._compiled.graph.hidden_param_op_relations
                            for p in rel.trainable_paths.values()})
            raise ValueError(f"`{format_path(weight_path)}` has no eligibility trace; traced weights: {known}.")
        return out

    @property
    def executor(self):
        """An :class:`~braintrace.ETraceVjpGraphExecutor` over the compiled graph (for inspection)."""
        from .graph_executor import ETraceVjpGraphExecutor

        self._assert_compiled("executor")
        return ETraceVjpGraphExecutor.of_graph(self.model, self.graph, vjp_method=self.options.vjp_method,
                                               control_flow=self.options.control_flow)

    @property
    def modulator(self):
        """The standing modulator of a modulatory rule (``None``: this rule uses ``∂L/∂h``)."""
        return None

    def show_graph(self) -> str:
        """A readable summary of the compiled graph (also returned as a string)."""
        return repr(self.graph)

    def report(self):
        """A :class:`~braintrace.CompilationReport` of the compiled graph."""
        from ..compiler.report import CompilationReport

        return CompilationReport(self.graph)

    # ------------------------------------------------------------------ drivers
    def etrace_grad(self, *sequences, step_fn: Callable, mask=None, chunk_size=None, weights=None,
                    reduction: str = "mean", loss_output: str = "per_step", return_value: bool = False,
                    has_aux: bool = False, gradient_window="auto"):
        """Online gradients over whole sequences (see :func:`braintrace.etrace_grad`)."""
        from .drivers import etrace_grad

        return etrace_grad(self, *sequences, step_fn=step_fn, mask=mask, chunk_size=chunk_size, weights=weights,
                           reduction=reduction, loss_output=loss_output, return_value=return_value,
                           has_aux=has_aux, gradient_window=gradient_window)

    def etrace_evolve(self, *sequences, step_fn=None, chunk_size=None, return_outputs: bool = False):
        """Advance states and traces over sequences without a loss (see :func:`braintrace.etrace_evolve`)."""
        from .drivers import etrace_evolve

        return etrace_evolve(self, *sequences, step_fn=step_fn, chunk_size=chunk_size,
                             return_outputs=return_outputs)


def _is_primal(x) -> bool:
    return isinstance(x, CustomVJPPrimal)


def _float0_like(x):
    # The cotangent of an integer input (the step counter).
    return np.zeros(jnp.shape(x), dtype=jax.dtypes.float0)


# The published name of the VJP-based learner base class (every learner here is VJP-based).
ETraceVjpAlgorithm = ETraceAlgorithm
