# Copyright 2026 The braintrace authors. Licensed under the Apache License, Version 2.0.
"""The published executor classes, thin objects over :mod:`braintrace.algorithms.executor`.

An executor owns a compiled :class:`~braintrace.ETraceGraph` and computes, for one step or
a ``MultiStepData`` window, the quantities the trace rules consume (``x``, ``∂h/∂y``, the
hidden Jacobians). The learners use the functions of :mod:`~braintrace.algorithms.executor`
directly; these classes exist for research code that inspects them (``learner.executor``).
Nothing here writes the model's states.
"""

from __future__ import annotations

import brainstate
import jax

from .. import _errors
from ..compiler.graph import compile_etrace_graph
from . import executor, windows
from .options import DEFAULT_SNAP_MAX_JACOBIAN_ELEMENTS

__all__ = ["ETraceGraphExecutor", "ETraceVjpGraphExecutor"]

_VJP_METHODS = ("single-step", "multi-step")


class ETraceGraphExecutor:
    """Compile a model's step and evaluate its per-step trace quantities.

    Parameters
    ----------
    model : brainstate.nn.Module
        The model (states initialised).
    include_recurrent_mixing, sparse_n, snap_max_jacobian_elements
        Hidden-group options of the compiler (non-default values need a compiler that
        provides them; otherwise :class:`~braintrace.NotSupportedError`).
    control_flow : ControlFlowPolicy, optional
        How control flow in the step is canonicalised.

    Examples
    --------
    >>> import brainstate, jax.numpy as jnp
    >>> import braintrace
    >>> cell = braintrace.nn.GRUCell(3, 4)
    >>> _ = brainstate.nn.init_all_states(cell)
    >>> ex = braintrace.ETraceGraphExecutor(cell)
    >>> _ = ex.compile_graph(jnp.ones(3))
    >>> out, q = ex.solve_h2w_h2h_jacobian(jnp.ones(3))
    >>> out.shape, q.jacobians[0].shape
    ((4,), (4, 1, 1))
    >>> _, q = ex.solve_h2w_h2h_jacobian(braintrace.MultiStepData(jnp.ones((5, 3))))
    >>> q.jacobians[0].shape
    (5, 4, 1, 1)
    """

    def __init__(self, model, include_recurrent_mixing: bool = False, sparse_n=None,
                 snap_max_jacobian_elements: int = DEFAULT_SNAP_MAX_JACOBIAN_ELEMENTS, control_flow=None):
        if not isinstance(model, brainstate.nn.Module):
            raise TypeError(f"the executor takes a `brainstate.nn.Module`; got {type(model).__name__}.")
        self.model = model
        self.control_flow = control_flow
        self._group_options = {}
        if include_recurrent_mixing:
            self._group_options["include_recurrent_mixing"] = True
        if sparse_n is not None:
            self._group_options["sparse_n"] = sparse_n
        if snap_max_jacobian_elements != DEFAULT_SNAP_MAX_JACOBIAN_ELEMENTS:
            self._group_options["snap_max_jacobian_elements"] = snap_max_jacobian_elements
        self._graph = None
        self._layout = None

    @classmethod
    def of_graph(cls, model, graph, **options):
        """An executor over an already compiled ``graph`` of ``model`` (what ``learner.executor`` is)."""
        out = cls(model, **options)
        out._graph, out._layout = graph, executor.StateLayout.of(graph)
        return out

    def compile_graph(self, *args):
        """Compile one step for these example inputs (``MultiStepData`` gives its first step)."""
        try:
            graph = compile_etrace_graph(self.model, *windows.first_step_inputs(args), control_flow=self.control_flow,
                                         **self._group_options)
        except TypeError:
            if not self._group_options:
                raise
            raise _errors.NotSupportedError(f"the compiler of this version does not take {sorted(self._group_options)};"
                                            " use the defaults.") from None
        self._graph, self._layout = graph, executor.StateLayout.of(graph)
        return graph

    @property
    def graph(self):
        """The compiled graph (raises before :meth:`compile_graph`)."""
        if self._graph is None:
            raise ValueError("the executor has no graph; call `executor.compile_graph(*example_inputs)` first.")
        return self._graph

    @property
    def path_to_states(self) -> dict:
        return dict(self.model.states())

    @property
    def state_id_to_path(self) -> dict:
        return {id(st): path for path, st in self.model.states().items()}

    def show_graph(self) -> str:
        return repr(self.graph)

    def _split_states(self):
        minfo = self.graph.module_info
        leaves = [jax.tree.leaves(self.path_to_states[minfo.state_id_to_path[id(st)]].value)
                  for st in minfo.compiled_model_states]
        return self._layout.split(leaves)

    def _step(self, arg_leaves, params, others):
        main, temps, vjp_fn = executor.run_step(self.graph, self._layout, arg_leaves, params, others)
        q = executor.step_quantities(self.graph, temps, dict(zip(self._layout.param_paths, params, strict=True)))
        return main, q, vjp_fn

    def _output(self, main):
        return main[:self.graph.module_info.num_var_out]

    def solve_h2w_h2h_jacobian(self, *args):
        """``(outputs, StepQuantities)`` of one step, or stacked over a ``MultiStepData`` window.

        The model's states are read, not written. Outputs are the flat output leaves (one
        leaf is returned bare).
        """
        params, others = self._split_states()
        window = windows.split_window_inputs(args)
        if not windows.uses_window(args):
            main, q, _ = self._step(jax.tree.leaves(window.args), params, others)
            out = self._output(main)
            return (out[0] if len(out) == 1 else out), q
        leaves = jax.tree.leaves(window.args)

        def body(others_c, t):
            args_t = [leaf[t] if seq else leaf for leaf, seq in zip(leaves, window.sequential, strict=True)]
            main, q, _ = self._step(args_t, params, others_c)
            n_out = self.graph.module_info.num_var_out
            return windows._regroup(main[n_out:], others_c), (self._output(main), q)

        _, (outs, qs) = jax.lax.scan(body, others, jax.numpy.arange(window.length))
        return (outs[0] if len(outs) == 1 else outs), qs

    def solve_h2w_h2h_l2h_jacobian(self, *args):
        """``(outputs, StepQuantities, vjp_fn)`` of one step; ``vjp_fn`` pulls cotangents of
        (outputs, new non-parameter states) back to (inputs, parameters, states, perturbations)."""
        if windows.uses_window(args):
            raise _errors.NotSupportedError("solve_h2w_h2h_l2h_jacobian takes one step's inputs; a MultiStepData "
                                            "window is differentiated by the learner (vjp_method='multi-step').")
        params, others = self._split_states()
        main, q, vjp_fn = self._step(jax.tree.leaves(windows.strip_wrappers(args)), params, others)
        out = self._output(main)
        return (out[0] if len(out) == 1 else out), q, vjp_fn


class ETraceVjpGraphExecutor(ETraceGraphExecutor):
    """:class:`ETraceGraphExecutor` with the learner's VJP options.

    Parameters
    ----------
    model : brainstate.nn.Module
        The model (states initialised).
    vjp_method : {'single-step', 'multi-step'}
        The learner's VJP window (reported by :attr:`is_single_step_vjp` / :attr:`is_multi_step_vjp`).
    include_recurrent_mixing, sparse_n, snap_max_jacobian_elements, control_flow
        As for :class:`ETraceGraphExecutor`.
    full_jacobian : bool
        Accepted for compatibility: rules that need the full within-group Jacobian apply it
        matrix-free (:func:`~braintrace.algorithms.executor.apply_transition_jacobian`).
    include_output_bypass : bool
        Only True (the output bypass is always compiled).

    Examples
    --------
    >>> import brainstate, jax.numpy as jnp
    >>> import braintrace
    >>> cell = braintrace.nn.GRUCell(3, 4)
    >>> _ = brainstate.nn.init_all_states(cell)
    >>> ex = braintrace.ETraceVjpGraphExecutor(cell, vjp_method='multi-step')
    >>> ex.is_multi_step_vjp, ex.is_single_step_vjp
    (True, False)
    """

    def __init__(self, model, vjp_method: str = "single-step", include_recurrent_mixing: bool = False, sparse_n=None,
                 snap_max_jacobian_elements: int = DEFAULT_SNAP_MAX_JACOBIAN_ELEMENTS, control_flow=None,
                 full_jacobian: bool = False, include_output_bypass: bool = True):
        if vjp_method not in _VJP_METHODS:
            raise ValueError(f"`vjp_method` must be one of {_VJP_METHODS}; got {vjp_method!r}.")
        if not include_output_bypass:
            raise _errors.NotSupportedError("include_output_bypass=False is not supported by this version; the "
                                            "output bypass is always compiled.")
        super().__init__(model, include_recurrent_mixing, sparse_n, snap_max_jacobian_elements, control_flow)
        self.vjp_method = vjp_method
        self.full_jacobian = bool(full_jacobian)
        self.include_output_bypass = True

    @property
    def is_single_step_vjp(self) -> bool:
        return self.vjp_method == "single-step"

    @property
    def is_multi_step_vjp(self) -> bool:
        return self.vjp_method == "multi-step"
