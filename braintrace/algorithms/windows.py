# Copyright 2026 The braintrace authors. Licensed under the Apache License, Version 2.0.
"""Multi-step windows: one learner call runs ``k`` steps, exact reverse mode inside.

A call ``learner(MultiStepData(xs))`` with ``xs`` of leading length ``k`` runs the window
``[t0, t1]`` (``k`` steps) in one ``jax.custom_vjp`` function. Its forward pass advances the
hidden states and the traces step by step, exactly as ``k`` single calls would. Its
backward pass (``vjp_method='multi-step'``) gives::

    ∇θ = ∂L_window/∂θ |_{h^{t0-1} fixed}  +  Σ_g ⟨∂L_window/∂h^{t0-1}_g, ε^{t0-1}_g⟩,

where the first term is plain reverse mode through the ``k`` unrolled steps of the model
(every parameter, every path, the unperturbed step jaxpr) and the second contracts the
cotangent of the hidden state at window entry with the traces at window entry, which
carry the credit of everything before the window. The contraction is the learner's own
``solve`` (so pp-prop's bias correction, the filters and the routing to parameter leaves
are the learner's). With one window covering the whole sequence the traces at entry are
zero and the result is BPTT, for every algorithm; finite windows expose the trace.

A plain (unwrapped) input to a multi-step learner is a window of length one. A
single-step learner accepts a ``MultiStepData`` forward (``etrace_evolve``) but refuses to
be differentiated through one.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from .. import _errors
from ..compiler.module_info import evaluate_flat
from ..ops.matmul import batch_sharded_traces
from . import executor
from .cascade import cascade_quantities
from .input_checks import first_order_only
from .inputs import MultiStepData, SingleStepData, is_step_data

__all__ = ["WindowInputs", "first_step_inputs", "routes_to_window", "split_window_inputs", "strip_wrappers",
           "uses_window", "window_update"]

MULTI_STEP_HINT = ("pass vjp_method='multi-step' to the learner (for example "
                   "`braintrace.compile(model, 'd_rtrl', x, vjp_method='multi-step')`)")


class WindowInputs:
    """The inputs of one window call.

    Attributes
    ----------
    args : tuple
        The call's positional inputs with the wrappers removed: a ``MultiStepData`` leaf
        keeps its leading window axis, every other leaf is one step's value.
    sequential : list of bool
        Per leaf of ``args`` (``jax.tree.leaves`` order), whether it carries the window axis.
    length : int
        The window length ``k``.
    """

    __slots__ = ("args", "sequential", "length")

    def __init__(self, args, sequential, length):
        self.args, self.sequential, self.length = args, sequential, length

    def first_step(self) -> tuple:
        """One step's inputs (the first of the window)."""
        leaves, treedef = jax.tree.flatten(self.args)
        return jax.tree.unflatten(treedef, [leaf[0] if seq else leaf
                                            for leaf, seq in zip(leaves, self.sequential, strict=True)])

    def __repr__(self) -> str:
        return f"WindowInputs(length={self.length}, {sum(self.sequential)} sequential leaves)"


def _unwrap(args):
    """``args`` without wrappers, and per resulting leaf whether it came from MultiStepData."""
    top, treedef = jax.tree.flatten(tuple(args), is_leaf=is_step_data)
    plain, sequential = [], []
    for node in top:
        if isinstance(node, MultiStepData):
            plain.append(node.data)
            sequential.extend([True] * len(jax.tree.leaves(node.data)))
        elif isinstance(node, SingleStepData):
            plain.append(node.data)
            sequential.extend([False] * len(jax.tree.leaves(node.data)))
        else:
            plain.append(node)
            sequential.append(False)
    return jax.tree.unflatten(treedef, plain), sequential


def uses_window(args) -> bool:
    """True when ``args`` holds a ``MultiStepData`` anywhere."""
    return any(isinstance(node, MultiStepData)
               for node in jax.tree.leaves(tuple(args), is_leaf=is_step_data))


def split_window_inputs(args) -> WindowInputs:
    """Unwrap a window call's inputs and check that every sequence has one length.

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> from braintrace.algorithms.inputs import MultiStepData, SingleStepData
    >>> from braintrace.algorithms.windows import split_window_inputs
    >>> window = split_window_inputs((MultiStepData(jnp.ones((4, 3))), SingleStepData(jnp.ones(2))))
    >>> window.length, window.sequential
    (4, [True, False])
    """
    plain, sequential = _unwrap(args)
    leaves = jax.tree.leaves(plain)
    lengths = set()
    for i, (leaf, seq) in enumerate(zip(leaves, sequential, strict=True)):
        if seq:
            if jnp.ndim(leaf) == 0:
                raise ValueError(f"input leaf {i} is a MultiStepData scalar; MultiStepData needs a leading "
                                 "window (time) axis on every leaf.")
            lengths.add(int(jnp.shape(leaf)[0]))
    if len(lengths) > 1:
        raise ValueError(f"the MultiStepData inputs of one call must share one window length; got lengths "
                         f"{sorted(lengths)}.")
    if lengths == {0}:
        raise ValueError("a MultiStepData input has window length 0; give at least one step.")
    length = lengths.pop() if lengths else 1
    return WindowInputs(plain, sequential, length)


def first_step_inputs(args) -> tuple:
    """``args`` as one step's inputs: ``MultiStepData`` gives its first step, wrappers removed.

    ``compile_graph`` compiles one step, so example inputs wrapped for a window are reduced
    to their first step.
    """
    return split_window_inputs(args).first_step()


# ----------------------------------------------------------------------------------------
# The window step
# ----------------------------------------------------------------------------------------
def _regroup(flat_others, like) -> list:
    """Flat new state leaves as per-state lists shaped like ``like`` (dtype kept for the carry)."""
    out, position = [], 0
    for leaves in like:
        k = len(leaves)
        out.append([jnp.asarray(v, old.dtype) for v, old in zip(flat_others[position:position + k], leaves,
                                                                 strict=True)])
        position += k
    return out


def entry_hidden_signals(graph, layout, other_cotangents) -> list:
    """Per group, ``∂L_window/∂h^{t0-1}`` stacked to ``(*V, S)`` from the entry-state cotangents."""
    by_path = layout.hidden_values_by_path(other_cotangents)
    return [g.concat_hidden([by_path[p] for p in g.hidden_paths]) for g in graph.hidden_groups]


def _contract_entry_traces(learner, grads, entry_traces, signals, quantities, step, params, temps) -> None:
    """Add ``Σ_g ⟨signal_g, ε_g⟩``, routed to the ParamState leaves, into ``grads``.

    ``signals`` are the raw ``∂L_window/∂h^{t0-1}``; a rule with its own learning signal
    (random feedback) transforms them with its ``learning_signal`` before its ``solve``.
    """
    rule, ctx = learner._compiled.rule, learner._compiled.context
    signals = rule.learning_signal(ctx, signals, None)
    learner._accumulate(grads, rule.solve(ctx, entry_traces, signals, quantities, step), params, temps)


def _bootstrap_pass(learner, vjp_fn, outs, synthetic, d_args, grads, d_others) -> None:
    """Push a synthesized exit cotangent through the window once more (DNI, in place).

    The result reaches the inputs, the entry state cotangents and the *plain* parameters
    only: ETP-routed leaves get none of it, their traces already carry cross-window credit.
    """
    d_args2, d_params2, d_others2 = vjp_fn((jax.tree.map(jnp.zeros_like, outs), synthetic))
    routed = learner.etp_routed_leaves()
    for slot, leaves in enumerate(d_params2):
        for leaf, g in enumerate(leaves):
            if (slot, leaf) not in routed:
                grads[slot][leaf] = grads[slot][leaf] + g
    for i, g in enumerate(d_args2):
        d_args[i] = d_args[i] + g
    for slot, leaves in enumerate(d_others2):
        for leaf, g in enumerate(leaves):
            d_others[slot][leaf] = d_others[slot][leaf] + g


def build_window_step(learner):
    """The ``jax.custom_vjp`` function ``(arg_seq, params, others, traces, step, extra) -> ((outs, others'), traces')``.

    ``arg_seq`` are the input leaves with the window axis first, ``outs`` the model output
    leaves stacked over the window, ``others'`` the state values at window exit. ``extra``
    is the rule's per-call value (``learner.window_extra()``; the synthesizer parameters of
    DNI, else None). A learner with ``bootstrap_exit_cotangent(extra, others_exit)`` (DNI)
    adds a synthesized cotangent of the exit states to the backward pass.
    """
    compiled = learner._compiled
    graph, layout = compiled.graph, compiled.layout
    minfo = graph.module_info
    positions = layout.main_output_positions
    rule, ctx = compiled.rule, compiled.context
    n_out = minfo.num_var_out
    multi_step = learner.options.vjp_method == "multi-step"
    bootstrap = getattr(learner, "bootstrap_exit_cotangent", None)

    def plain_step(args_t, params, others):
        # The unperturbed step: reverse mode through it is exact along every path.
        outs = evaluate_flat(minfo.closed_jaxpr, list(args_t) + layout.merge(params, others))
        return [outs[i] for i in positions]

    def run_window(arg_seq, params, others, traces, step, differentiable):
        def body(carry, args_t):
            others_c, traces_c = carry
            frozen = jax.lax.stop_gradient((params, others_c))
            main, temps, perturbed_vjp = executor.run_step(graph, layout, args_t, frozen[0], frozen[1])
            q = executor.step_quantities(graph, temps, dict(zip(layout.param_paths, frozen[0], strict=True)))
            q = cascade_quantities(rule, graph, layout, q, main, perturbed_vjp)  # the cascade traces' Jacobians
            if differentiable:
                main = plain_step(args_t, params, others_c)
            new_traces = jax.lax.stop_gradient(rule.roll(ctx, traces_c, q, step))
            return (_regroup(main[n_out:], others_c), new_traces), main[:n_out]

        (others_exit, traces_exit), outs = jax.lax.scan(body, (others, traces), arg_seq)
        return (outs, others_exit), traces_exit

    def primal(arg_seq, params, others, traces, step, extra):
        return run_window(arg_seq, params, others, traces, step, differentiable=False)

    def fwd(arg_seq, params, others, traces, step, extra):
        if not multi_step:
            raise ValueError(
                f"`{type(learner).__name__}` was built with vjp_method='single-step', whose gradient pairs each "
                "step's own loss with the trace; it cannot be differentiated through a MultiStepData window "
                f"(several steps in one call). To learn from windows, {MULTI_STEP_HINT}."
            )
        arg_seq, params, others, traces = first_order_only((arg_seq, params, others, traces))
        main, vjp_fn, traces_exit = jax.vjp(
            lambda a, p, o: run_window(a, p, o, traces, step, differentiable=True),
            arg_seq, params, others, has_aux=True)
        first_args = [a[0] for a in arg_seq]
        synthetic = None
        if bootstrap is not None and extra is not None:
            synthetic = jax.lax.stop_gradient(bootstrap(extra, main[1]))
        return (main, traces_exit), (vjp_fn, traces, params, others, first_args, step, synthetic, extra)

    def bwd(residual, cotangents):
        # As in the single-step learner: shard-local trace contractions under data parallelism.
        with batch_sharded_traces(learner._data_parallel):
            return bwd_body(residual, cotangents)

    def bwd_body(residual, cotangents):
        vjp_fn, entry_traces, params, others, first_args, step, synthetic, extra = residual
        d_main, _ = cotangents
        d_main = jax.tree.map(lambda t: jnp.zeros_like(t) if type(t).__name__ == "Zero" else t, d_main)
        d_args, d_params, d_others = vjp_fn(d_main)
        d_args, d_others = list(d_args), [list(o) for o in d_others]
        signals = entry_hidden_signals(graph, layout, d_others)
        # The step quantities of the window's first step: solve reads the effective
        # parameters (constant over the window) and the routing reads the step temporaries.
        _, temps, _ = executor.run_step(graph, layout, first_args, params, others)
        q = executor.step_quantities(graph, temps, dict(zip(layout.param_paths, params, strict=True)))
        grads = [list(p) for p in d_params]
        _contract_entry_traces(learner, grads, entry_traces, signals, q, step, params, temps)
        if synthetic is not None:
            _bootstrap_pass(learner, vjp_fn, d_main[0], synthetic, d_args, grads, d_others)
        zero_traces = jax.tree.map(jnp.zeros_like, entry_traces)
        return (d_args, grads, d_others, zero_traces, np.zeros(jnp.shape(step), dtype=jax.dtypes.float0),
                jax.tree.map(jnp.zeros_like, extra))

    step_fn = jax.custom_vjp(primal)
    step_fn.defvjp(fwd, bwd)
    return step_fn


def _window_arg_leaves(learner, window: WindowInputs) -> list:
    """Input leaves with the window axis first, checked against the compiled step inputs."""
    # The shape/dtype/tree checks of a single call, on the window's first step.
    checked = learner._checked_arg_leaves(window.first_step())
    leaves = jax.tree.leaves(window.args)
    out = []
    for leaf, one, seq in zip(leaves, checked, window.sequential, strict=True):
        leaf = jnp.asarray(leaf, jnp.result_type(one))
        if seq:
            out.append(leaf)
        else:
            # The same value at every step; broadcasting outside the custom VJP lets reverse
            # mode sum its per-step cotangents.
            out.append(jnp.broadcast_to(leaf, (window.length,) + jnp.shape(leaf)))
    return out


def window_update(learner, args: tuple):
    """Run one window call of ``learner`` (see the module docstring); returns the stacked outputs."""
    if learner.vmap:
        raise _errors.NotSupportedError(
            f"`{type(learner).__name__}` was compiled with vmap=True; multi-step windows (MultiStepData inputs, "
            "vjp_method='multi-step' or chunk_size >= 2) are not supported on vmapped learners. Compile with "
            "vmap=False and a real batch axis (`braintrace.compile(..., batch_size=B)`) instead."
        )
    compiled = learner._compiled
    minfo, layout = compiled.graph.module_info, compiled.layout
    window = split_window_inputs(args)
    single = not uses_window(args)
    if single:
        # A plain input to a multi-step learner: a window of one step.
        window = WindowInputs(jax.tree.map(lambda a: jnp.asarray(a)[None], window.args),
                              [True] * len(window.sequential), 1)
    arg_seq = _window_arg_leaves(learner, window)
    states = learner._current_states()
    leaves = [jax.tree.leaves(st.value) for st in states]
    params, others = layout.split(leaves)
    compiled.calls += 1
    step = learner.running_index.value
    extra = learner.window_extra() if hasattr(learner, "window_extra") else None
    (outs, others_exit), traces_exit = build_window_step(learner)(arg_seq, params, others, learner.etrace.value,
                                                                  step, extra)
    flat_states = layout.merge(params, others_exit)
    if single:
        outs = [o[0] for o in outs]
    out, state_vals = jax.tree.unflatten(minfo.out_treedef, list(outs) + flat_states)
    if learner._placement is not None:
        state_vals = [learner._placement.constrain(v) if i in layout.other_indices else v
                      for i, v in enumerate(state_vals)]
        traces_exit = learner._placement.constrain(traces_exit)
    for i in layout.other_indices:
        states[i].value = state_vals[i]
    learner.etrace.value = traces_exit
    # running_index counts update() calls, not steps (pp-prop's bias correction lags under
    # windows, as in the published behaviour).
    learner.running_index.value = step + 1
    return out


def routes_to_window(learner, args) -> bool:
    """Whether a call with ``args`` runs as a window (a multi-step learner, or a MultiStepData input)."""
    return learner.options.vjp_method == "multi-step" or uses_window(args)


def strip_wrappers(args) -> tuple:
    """``args`` with ``SingleStepData`` wrappers removed (a call that is one plain step)."""
    return split_window_inputs(args).args
