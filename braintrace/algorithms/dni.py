# Copyright 2026 The braintrace authors. Licensed under the Apache License, Version 2.0.
"""DNI: multi-step D-RTRL with a synthesized gradient from the future at each window exit.

A window ``[t0, t1]`` of a multi-step learner (see :mod:`braintrace.algorithms.windows`)
sees the loss of its own steps only. DNI (Jaderberg et al., 2017) adds an estimate of
``∂L_future/∂h^{t1}``, the cotangent the *next* windows would send back to the exit hidden
state, produced by a :class:`SyntheticGradient` ``M_g(h^{t1}_g)`` per hidden group. The
backward pass pushes this synthesized cotangent through the window a second time and adds
the result to the inputs, the other states, the returned entry hidden cotangent and the
*plain* (not ETP-routed) parameters; ETP-routed weights keep the plain D-RTRL gradient,
because their traces already carry the credit across windows.

The synthesizer is zero-initialised, so an untrained DNI is exactly multi-step D-RTRL.
:func:`train_synthetic_gradient` fits it by bootstrapping: the target of ``M(h^{t0-1})`` is
the learner's own returned cotangent at window entry (which includes ``M(h^{t1})``).
"""

from __future__ import annotations

import math
import numbers

import brainstate
import jax
import jax.numpy as jnp
import numpy as np

from .d_rtrl import ParamDimVjpAlgorithm
from .inputs import MultiStepData
from .options import DEFAULT_SNAP_MAX_JACOBIAN_ELEMENTS

__all__ = ["DNI", "SyntheticGradient", "train_synthetic_gradient"]


class SyntheticGradient:
    """Per hidden group, a map ``M_g: h_g ↦ ĝ_g`` on the flattened ``(*varshape, S)``.

    Without ``hidden_width`` it is linear with bias, ``ĝ = W vec(h) + b``; with it, a
    one-hidden-layer ``tanh`` network whose output layer is initialised like ``W``. Weights
    ``W`` start as ``scale · N(0, 1/n)`` (zero by default, so an untrained synthesizer
    predicts zero), biases at zero.

    Parameters
    ----------
    group_shapes : sequence of tuple
        Per group, its learning-signal shape ``(*varshape, S)`` (``DNI.group_signal_shapes``).
    hidden_width : int, optional
        Width of the hidden layer; ``None`` for a linear map.
    scale : float
        Initial scale of the output weights (0: predicts zero).
    seed : int
        Seed of the initial weights.

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> from braintrace.algorithms.dni import SyntheticGradient
    >>> sg = SyntheticGradient([(4, 1)])
    >>> sg.apply(sg.param_values(), 0, jnp.ones((4, 1))).shape
    (4, 1)
    >>> float(jnp.abs(sg.apply(sg.param_values(), 0, jnp.ones((4, 1)))).sum())
    0.0
    """

    def __init__(self, group_shapes, hidden_width=None, scale: float = 0.0, seed: int = 0):
        shapes = [tuple(int(n) for n in s) for s in group_shapes]
        if not shapes:
            raise ValueError("`group_shapes` must list at least one group's signal shape (*varshape, S).")
        bad_width = isinstance(hidden_width, bool) or not isinstance(hidden_width, numbers.Integral)
        if hidden_width is not None and (bad_width or hidden_width < 1):
            raise ValueError(f"`hidden_width` must be a positive int or None; got {hidden_width!r}.")
        if isinstance(scale, bool) or not isinstance(scale, numbers.Real) or scale < 0:
            raise ValueError(f"`scale` must be a float >= 0; got {scale!r}.")
        self.group_shapes, self.hidden_width, self.scale = shapes, hidden_width, float(scale)
        key = jax.random.PRNGKey(int(seed))
        self._states = {}
        for g, shape in enumerate(shapes):
            n = math.prod(shape)
            k1, k2, key = jax.random.split(key, 3)
            if hidden_width is None:
                layers = {"W": self.scale * jax.random.normal(k1, (n, n)) / math.sqrt(n), "b": jnp.zeros(n)}
            else:
                layers = {"W_in": jax.random.normal(k1, (n, hidden_width)) / math.sqrt(n),
                          "b_in": jnp.zeros(hidden_width),
                          "W": self.scale * jax.random.normal(k2, (hidden_width, n)) / math.sqrt(hidden_width),
                          "b": jnp.zeros(n)}
            self._states[f"group{g}"] = brainstate.ParamState(layers)

    def states_dict(self) -> dict:
        """``{'group<g>': ParamState}`` of the synthesizer's parameters (for an optimizer)."""
        return dict(self._states)

    def param_values(self) -> list:
        """Per group, the current parameter dict."""
        return [st.value for st in self._states.values()]

    def set_param_values(self, values) -> None:
        for st, v in zip(self._states.values(), values, strict=True):
            st.value = v

    def apply(self, params, group_index: int, hidden):
        """``M_g(hidden)`` with ``params`` (a :meth:`param_values` list), shaped like ``hidden``."""
        p = params[group_index]
        shape = self.group_shapes[group_index]
        if tuple(jnp.shape(hidden)) != shape:
            raise ValueError(f"the synthesizer of group {group_index} takes hidden values of shape {shape}; got "
                             f"{tuple(jnp.shape(hidden))}.")
        v = jnp.ravel(hidden).astype(p["b"].dtype)
        if "W_in" in p:
            v = jnp.tanh(v @ p["W_in"] + p["b_in"])
        return (v @ p["W"] + p["b"]).reshape(shape).astype(jnp.result_type(hidden))

    def __repr__(self) -> str:
        return f"SyntheticGradient(group_shapes={self.group_shapes}, hidden_width={self.hidden_width})"


class _Holder:
    """Keeps the synthesizer out of brainstate's module-graph traversal."""

    __slots__ = ("value",)

    def __init__(self, value=None):
        self.value = value

    def __repr__(self) -> str:
        return repr(self.value)


class DNI(ParamDimVjpAlgorithm):
    """Multi-step D-RTRL with bootstrapped synthetic gradients at window exits.

    Parameters
    ----------
    model : brainstate.nn.Module
        The model; ``model.update(*inputs)`` runs one step.
    synthesizer : SyntheticGradient, optional
        Created zero-initialised at compilation when ``None``.
    name : str, optional
        Module name.
    vjp_method : {'multi-step'}
        Required: the synthesized cotangent enters at the exit of a window.
    fast_solve, trace_dtype, chunked_trace, control_flow, snap_max_jacobian_elements
        The published learner options, see :class:`~braintrace.ETraceAlgorithm`.

    Raises
    ------
    ValueError
        For ``vjp_method='single-step'``.

    Notes
    -----
    A fitted synthesizer is valid only for the ``(loss_fn, chunk_size)`` it was fitted with
    (it predicts the future of *that* loss across windows of *that* length).

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> import braintrace
    >>> learner = braintrace.compile(braintrace.nn.GRUCell(3, 4), 'dni', jnp.ones(3))
    >>> learner.group_signal_shapes
    [(4, 1)]
    >>> grads = learner.etrace_grad(jnp.ones((4, 3)), step_fn=lambda x: jnp.sum(learner(x) ** 2))
    >>> sorted(grads)
    [('Wh', 'weight'), ('Wr', 'weight'), ('Wz', 'weight')]
    """

    def __init__(self, model, synthesizer=None, name: str | None = None, vjp_method: str = "multi-step",
                 fast_solve: bool = True, trace_dtype=None, chunked_trace: bool = True, control_flow=None,
                 snap_max_jacobian_elements: int = DEFAULT_SNAP_MAX_JACOBIAN_ELEMENTS, **kwargs):
        if vjp_method != "multi-step":
            raise ValueError(
                f"DNI needs vjp_method='multi-step' (got {vjp_method!r}): the synthetic gradient estimates the "
                "credit a window's exit state receives from later windows, so the learner must run windows. "
                "Use `braintrace.DNI(model)` (multi-step by default) and `etrace_grad(..., chunk_size=k)`."
            )
        if synthesizer is not None and not isinstance(synthesizer, SyntheticGradient):
            raise TypeError(f"`synthesizer` must be a braintrace.SyntheticGradient or None; got "
                            f"{type(synthesizer).__name__}.")
        super().__init__(model, name, vjp_method=vjp_method, fast_solve=fast_solve, trace_dtype=trace_dtype,
                         chunked_trace=chunked_trace, control_flow=control_flow,
                         snap_max_jacobian_elements=snap_max_jacobian_elements, **kwargs)
        self._synth = _Holder(synthesizer)

    @property
    def synthesizer(self) -> SyntheticGradient | None:
        return self._synth.value

    @property
    def group_signal_shapes(self) -> list:
        """Per hidden group, the learning-signal shape ``(*varshape, S)`` the synthesizer maps."""
        self._assert_compiled("group_signal_shapes")
        return [tuple(int(n) for n in g.varshape) + (int(g.num_state),) for g in self.graph.hidden_groups]

    def compile_graph(self, *example_args, **example_kwargs):
        graph = super().compile_graph(*example_args, **example_kwargs)
        if self.synthesizer is None:
            self._synth.value = SyntheticGradient(self.group_signal_shapes)
        else:
            self.attach_synthesizer(self.synthesizer)
        return graph

    def attach_synthesizer(self, synthesizer: SyntheticGradient) -> None:
        """Use ``synthesizer`` (its group shapes must equal :attr:`group_signal_shapes`)."""
        if not isinstance(synthesizer, SyntheticGradient):
            raise TypeError(f"expected a braintrace.SyntheticGradient; got {type(synthesizer).__name__}.")
        if self.is_compiled and list(synthesizer.group_shapes) != self.group_signal_shapes:
            raise ValueError(f"the synthesizer maps group shapes {synthesizer.group_shapes}; this learner's groups "
                             f"have signal shapes {self.group_signal_shapes}. Build it as "
                             "`SyntheticGradient(learner.group_signal_shapes)`.")
        self._synth.value = synthesizer

    def etp_routed_leaves(self) -> set:
        """``{(param slot, leaf index)}`` of the ParamState leaves trained through an ETP relation."""
        slot_of = {p: i for i, p in enumerate(self._compiled.layout.param_paths)}
        return {(slot_of[rel.trainable_paths[k]], rel.trainable_leaf_indices[k])
                for rel in self.graph.hidden_param_op_relations for k in rel.trainable_paths}

    # The two hooks of the window step (braintrace.algorithms.windows).
    def window_extra(self):
        return None if self.synthesizer is None else self.synthesizer.param_values()

    def bootstrap_exit_cotangent(self, params, others_exit) -> list:
        """The synthesized cotangent of the window's exit states (zero for non-hidden states)."""
        minfo, layout = self.graph.module_info, self._compiled.layout
        slot_of_path = {minfo.state_id_to_path[id(minfo.compiled_model_states[i])]: slot
                        for slot, i in enumerate(layout.other_indices)}
        out = [[jnp.zeros_like(leaf) for leaf in leaves] for leaves in others_exit]
        for group in self.graph.hidden_groups:
            hidden = group.concat_hidden([others_exit[slot_of_path[p]][0] for p in group.hidden_paths])
            synthetic = self.synthesizer.apply(params, group.index, hidden)
            for p, part in zip(group.hidden_paths, group.split_hidden(synthetic), strict=True):
                leaf = others_exit[slot_of_path[p]][0]
                out[slot_of_path[p]][0] = part.reshape(leaf.shape).astype(leaf.dtype)
        return out


# ----------------------------------------------------------------------------------------
# Fitting the synthesizer
# ----------------------------------------------------------------------------------------
def _sum_of_squares(outputs, *rest):
    return sum(jnp.sum(jnp.square(leaf)) for leaf in jax.tree.leaves(outputs))


def _check_train_args(learner, sequences, chunk_size, epochs, lr):
    if not isinstance(learner, DNI):
        raise TypeError(f"train_synthetic_gradient fits the synthesizer of a braintrace.DNI learner; got "
                        f"{type(learner).__name__}.")
    learner._assert_compiled("train_synthetic_gradient")
    for name, value in (("chunk_size", chunk_size), ("epochs", epochs)):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
            raise ValueError(f"`{name}` must be a positive int; got {value!r}.")
    if isinstance(lr, bool) or not isinstance(lr, numbers.Real) or not lr > 0:
        raise ValueError(f"`lr` must be a positive float; got {lr!r}.")
    lengths = {int(jnp.shape(leaf)[0]) for leaf in jax.tree.leaves(sequences)}
    if len(lengths) != 1:
        raise ValueError(f"all input sequences must share one leading time length; got {sorted(lengths)}.")
    length = lengths.pop()
    if length % chunk_size:
        raise ValueError(f"`chunk_size={chunk_size}` does not divide the sequence length T={length}; pick a divisor "
                         "of T.")
    return length


def _optimizer_step(optimizer, lr, synth):
    """``(init_state, step(params, grads, state) -> (params, state))`` for SGD or an optax optimizer."""
    if optimizer is None:
        return None, lambda params, grads, state: (jax.tree.map(lambda p, g: p - lr * g, params, grads), state)
    if hasattr(optimizer, "init") and hasattr(optimizer, "update"):  # an optax GradientTransformation
        def step(params, grads, state):
            updates, state = optimizer.update(grads, state, params)
            return jax.tree.map(jnp.add, params, updates), state

        return optimizer.init(synth.param_values()), step
    raise TypeError("`optimizer` must be None (plain SGD with `lr`) or an optax GradientTransformation "
                    f"(with `init` and `update`); got {type(optimizer).__name__}.")


def train_synthetic_gradient(learner, inputs, chunk_size: int = 1, loss_fn=None, optimizer=None, lr: float = 0.01,
                             epochs: int = 1, reset: bool = True, batch_size=None) -> list:
    """Fit a DNI learner's synthesizer to its own bootstrapped entry cotangents.

    Each epoch runs the sequence window by window (``chunk_size`` steps per learner call).
    For the window entered at hidden state ``h^{t0-1}``, the target is the cotangent the
    learner returns for ``h^{t0-1}`` (the window's loss plus the synthesized future at its
    exit, detached), and the synthesizer takes one optimizer step on
    ``Σ_g mean((M_g(h^{t0-1}) - target_g)²)``. After the last window one more step fits
    ``M(h^{T-1})`` to zero: nothing follows the sequence, and this anchor keeps the
    bootstrap from settling on a large self-consistent solution.

    Parameters
    ----------
    learner : DNI
        A compiled DNI learner.
    inputs : array or tuple of arrays
        Time-major sequences ``(T, ...)``. The first one is the learner's input; all of them
        are sliced per window and passed to ``loss_fn``.
    chunk_size : int
        The window length ``k`` (must divide ``T``); fit with the ``k`` used for training.
    loss_fn : callable, optional
        ``loss_fn(outputs, *input_slices) -> scalar`` for one window (``outputs`` stacked
        ``(k, ...)``); the sum of squared outputs by default.
    optimizer : optax.GradientTransformation, optional
        Plain SGD with ``lr`` when None.
    lr : float
        SGD step size.
    epochs : int
        Passes over the sequence.
    reset : bool
        Zero the model's hidden states and the traces before each epoch.
    batch_size : int, optional
        Accepted for compatibility (the batch is the model's own axis of ``inputs``).

    Returns
    -------
    list of float
        Per epoch, the mean fit loss over its windows.

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> import braintrace
    >>> learner = braintrace.compile(braintrace.nn.GRUCell(2, 3), 'dni', jnp.ones(2))
    >>> history = braintrace.train_synthetic_gradient(learner, jnp.ones((4, 2)), chunk_size=2, epochs=2)
    >>> len(history)
    2
    """
    sequences = tuple(inputs) if isinstance(inputs, (tuple, list)) else (inputs,)
    length = _check_train_args(learner, sequences, chunk_size, epochs, lr)
    loss_fn = _sum_of_squares if loss_fn is None else loss_fn
    synth = learner.synthesizer
    opt_state, opt_step = _optimizer_step(optimizer, lr, synth)
    hidden = learner.hidden_states
    groups = learner.graph.hidden_groups

    def fit_loss(params, entry, targets):
        return sum(jnp.mean(jnp.square(synth.apply(params, g.index, entry[g.index]) - targets[g.index]))
                   for g in groups)

    @brainstate.transform.jit
    def window(slices, opt_state):
        entry = [g.concat_hidden([hidden[p].value for p in g.hidden_paths]) for g in groups]

        def loss():
            return loss_fn(learner(MultiStepData(slices[0])), *slices)

        d_hidden = brainstate.transform.grad(loss, grad_states=hidden)()
        targets = [jax.lax.stop_gradient(g.concat_hidden([d_hidden[p] for p in g.hidden_paths])) for g in groups]
        params = synth.param_values()
        value, grads = jax.value_and_grad(fit_loss)(params, entry, targets)
        params, opt_state = opt_step(params, grads, opt_state)
        synth.set_param_values(params)
        return value, opt_state

    @brainstate.transform.jit
    def sequence_end(opt_state):
        # Nothing follows the last window: the future credit of its exit state is zero.
        # Without this anchor the bootstrap can settle on a large self-consistent solution.
        exit_state = [g.concat_hidden([hidden[p].value for p in g.hidden_paths]) for g in groups]
        targets = [jnp.zeros_like(h) for h in exit_state]
        params = synth.param_values()
        value, grads = jax.value_and_grad(fit_loss)(params, exit_state, targets)
        params, opt_state = opt_step(params, grads, opt_state)
        synth.set_param_values(params)
        return value, opt_state

    history = []
    for _ in range(epochs):
        if reset:
            for st in hidden.values():
                st.value = jax.tree.map(jnp.zeros_like, st.value)
            learner.reset_state()
        values = []
        for start in range(0, length, chunk_size):
            slices = tuple(jax.tree.map(lambda a, s=start: a[s:s + chunk_size], seq) for seq in sequences)
            value, opt_state = window(slices, opt_state)
            values.append(float(value))
        value, opt_state = sequence_end(opt_state)
        values.append(float(value))
        history.append(float(np.mean(values)))
    return history
