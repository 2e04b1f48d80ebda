# Copyright 2026 The braintrace authors. Licensed under the Apache License, Version 2.0.
"""e-prop: D-RTRL traces, an optional low-pass filter of the trace and random feedback.

For every D-RTRL trace ``ε`` (see :mod:`braintrace.algorithms.d_rtrl`) e-prop keeps a
filtered copy

    ē_t = κ ē_{t-1} + ε_t,

and the gradient of step ``t`` is ``Σ_g <L_t,g, ē_t,g>`` (plus the exact same-step gradient
of parameters that reach the output directly, as for D-RTRL). The learning signal ``L`` is
either the true ``∂L_t/∂h_t`` (``feedback='symmetric'``) or its projection through a fixed
random matrix per hidden group (``feedback='random'``): ``L' = L·B`` over the group's last
(width) axis, with ``B`` square ``N×N`` (:class:`FixedRandomFeedback`). κ = 0 with symmetric
feedback is exactly D-RTRL.

Multi-step windows (``vjp_method='multi-step'``) are supported: the window's forward pass
advances ``ε`` and ``ē`` step by step, and its backward pass adds the exact reverse-mode
gradient inside the window to ``Σ_g <L'_g, ē_g>`` at window entry, where ``L'`` is the
(projected, under random feedback) hidden cotangent at window entry. One window over the
whole sequence is therefore BPTT, whatever κ and the feedback are.
"""

from __future__ import annotations

import dataclasses
import numbers
from typing import NamedTuple

import jax
import jax.numpy as jnp

from .d_rtrl import ParamDimRule, ParamDimVjpAlgorithm

__all__ = ["EProp", "EPropRule", "EPropState", "KappaFilter", "FixedRandomFeedback", "FEEDBACKS",
           "draw_feedback_matrices"]

#: Accepted spellings of ``feedback`` and what they mean.
FEEDBACKS = {"symmetric": "symmetric", "random": "random", "random_feedback": "random"}


def _check_kappa(kappa) -> float:
    if isinstance(kappa, bool) or not isinstance(kappa, numbers.Real) or not 0.0 <= float(kappa) < 1.0:
        raise ValueError(f"`kappa_filter_decay` must be a float in [0, 1); got {kappa!r}.")
    return float(kappa)


class KappaFilter:
    """A low-pass filter ``ē ← κ ē + e`` of a pytree of arrays.

    Parameters
    ----------
    init_value : pytree of arrays
        The initial filtered value ``ē_0`` (usually zeros shaped like the filtered input).
    kappa : float
        The filter decay ``κ`` in [0, 1); ``κ = 0`` passes the input through.

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> from braintrace.algorithms.eprop import KappaFilter
    >>> f = KappaFilter(jnp.zeros(2), kappa=0.5)
    >>> f.update(jnp.ones(2))
    Array([1., 1.], dtype=float32)
    >>> f.update(jnp.ones(2))
    Array([1.5, 1.5], dtype=float32)
    """

    def __init__(self, init_value, kappa: float):
        self.kappa = _check_kappa(kappa)
        self.value = init_value

    @staticmethod
    def step(filtered, value, kappa: float):
        """One filter step without state: ``κ · filtered + value`` per leaf (dtype kept)."""
        return jax.tree.map(lambda f, v: (kappa * f + v).astype(f.dtype), filtered, value)

    def update(self, value):
        """Advance the filter by one input and return the new filtered value."""
        self.value = self.step(self.value, value, self.kappa)
        return self.value

    def __repr__(self) -> str:
        return f"KappaFilter(kappa={self.kappa})"


class FixedRandomFeedback:
    """A fixed random feedback matrix ``B`` of shape ``(n_target, n_layer)``.

    :meth:`project` maps a signal whose last axis has ``n_target`` entries to one with
    ``n_layer`` entries: ``signal @ B``. The entries are ``init_scale · N(0, 1)`` drawn from
    ``key`` once, so the same key always gives the same matrix.

    Parameters
    ----------
    n_target : int
        Width of the signal that is projected.
    n_layer : int
        Width of the layer that receives the projected signal.
    key : int or jax.Array
        A seed or a JAX PRNG key.
    init_scale : float
        Standard deviation of the entries.

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> from braintrace.algorithms.eprop import FixedRandomFeedback
    >>> fb = FixedRandomFeedback(3, 4, key=0)
    >>> fb.matrix.shape, fb.project(jnp.ones((2, 3))).shape
    ((3, 4), (2, 4))
    >>> bool(jnp.all(FixedRandomFeedback(3, 4, key=0).matrix == fb.matrix))
    True
    """

    def __init__(self, n_target: int, n_layer: int, key, init_scale: float = 0.1):
        for name, n in (("n_target", n_target), ("n_layer", n_layer)):
            if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 1:
                raise ValueError(f"`{name}` must be a positive int; got {n!r}.")
        if isinstance(init_scale, bool) or not isinstance(init_scale, numbers.Real) or not init_scale > 0:
            raise ValueError(f"`init_scale` must be a positive float; got {init_scale!r}.")
        self.n_target, self.n_layer, self.init_scale = int(n_target), int(n_layer), float(init_scale)
        key = as_key(key, "key")
        self.matrix = self.init_scale * jax.random.normal(key, (self.n_target, self.n_layer), jnp.float32)

    def project(self, signal):
        """``signal @ B`` over the last axis (which must have ``n_target`` entries)."""
        if jnp.shape(signal)[-1:] != (self.n_target,):
            raise ValueError(f"the signal's last axis must have {self.n_target} entries (n_target); got shape "
                             f"{jnp.shape(signal)}.")
        return jnp.matmul(signal, self.matrix.astype(jnp.result_type(signal)))

    def __repr__(self) -> str:
        return f"FixedRandomFeedback(n_target={self.n_target}, n_layer={self.n_layer}, init_scale={self.init_scale})"


def as_key(key, name: str):
    """A JAX PRNG key from an int seed or a key array (raw ``uint32[2]`` or typed)."""
    if isinstance(key, bool):
        raise TypeError(f"`{name}` must be an int seed or a JAX PRNG key; got a bool.")
    if isinstance(key, numbers.Integral):
        return jax.random.PRNGKey(int(key))
    try:
        array = jnp.asarray(key)
    except TypeError:
        raise TypeError(f"`{name}` must be an int seed or a JAX PRNG key; got {type(key).__name__}.") from None
    if jnp.issubdtype(array.dtype, jax.dtypes.prng_key) or (array.dtype == jnp.uint32 and array.shape == (2,)):
        return array
    raise TypeError(f"`{name}` must be an int seed or a JAX PRNG key; got an array of {array.dtype}{list(array.shape)}.")


class EPropState(NamedTuple):
    """The e-prop state: the D-RTRL traces and their κ-filtered copies.

    Attributes
    ----------
    traces : dict
        ``{TraceKey(r, g): ε}``, the D-RTRL traces.
    filtered : dict
        ``{TraceKey(r, g): ē}`` (empty for κ = 0, where ``ē = ε``).
    """

    traces: dict
    filtered: dict


def draw_feedback_matrices(graph, key) -> tuple:
    """Per hidden group, a square :class:`FixedRandomFeedback` over its width (key ``fold_in(key, g)``)."""
    matrices = []
    for g in graph.hidden_groups:
        width = int(g.varshape[-1]) if len(g.varshape) else 1
        matrices.append(FixedRandomFeedback(width, width, jax.random.fold_in(key, g.index)))
    return tuple(matrices)


@dataclasses.dataclass(frozen=True)
class EPropRule(ParamDimRule):
    """The e-prop rule: D-RTRL traces, a κ filter and symmetric or random feedback.

    Parameters
    ----------
    kappa : float
        The filter decay ``κ`` in [0, 1).
    feedback : {'symmetric', 'random'}
        The learning signal.
    feedback_matrices : tuple of FixedRandomFeedback, optional
        Per hidden group, the random feedback (required for ``feedback='random'``; the
        learner draws them when it compiles, see :func:`draw_feedback_matrices`).

    Examples
    --------
    >>> from braintrace.algorithms.eprop import EPropRule
    >>> EPropRule(kappa=0.5)
    EPropRule(kappa=0.5, feedback='symmetric')
    """

    #: E-prop's signals are not all ``∂L/∂h``; cross-group couplings stay dropped.
    supports_cascade = False

    kappa: float = 0.0
    feedback: str = "symmetric"
    feedback_matrices: tuple | None = dataclasses.field(default=None, compare=False, repr=False)

    def init(self, ctx, q) -> EPropState:
        traces = super().init(ctx, q)
        filtered = {}
        if self.kappa > 0.0:
            filtered = {k: jax.tree.map(jnp.zeros_like, v) for k, v in traces.items()}
        return EPropState(traces, filtered)

    def roll(self, ctx, state, q, step) -> EPropState:
        traces = super().roll(ctx, state.traces, q, step)
        filtered = {}
        if self.kappa > 0.0:
            filtered = {k: KappaFilter.step(state.filtered[k], eps, self.kappa) for k, eps in traces.items()}
        return EPropState(traces, filtered)

    def solve(self, ctx, state, signals, q, step) -> list:
        return super().solve(ctx, state.filtered if self.kappa > 0.0 else state.traces, signals, q, step)

    def learning_signal(self, ctx, signals, extra) -> list:
        if self.feedback == "symmetric":
            return list(signals)
        out = []
        for fb, s in zip(self.feedback_matrices, signals, strict=True):
            if s.ndim < 2:  # a scalar group: (S,)
                out.append(s * fb.matrix[0, 0].astype(s.dtype))
            else:  # (*V, N, S): project the width axis
                out.append(jnp.moveaxis(fb.project(jnp.moveaxis(s, -1, -2)), -1, -2))
        return out

    def traces_of(self, ctx, state, relation_index) -> dict:
        """The unfiltered D-RTRL traces ``ε`` of one relation."""
        return super().traces_of(ctx, state.traces, relation_index)


class EProp(ParamDimVjpAlgorithm):
    """e-prop: D-RTRL traces with a κ filter and symmetric or random feedback.

    Parameters
    ----------
    model : brainstate.nn.Module
        The model; ``model.update(*inputs)`` runs one step.
    feedback : {'symmetric', 'random', 'random_feedback'}
        ``'symmetric'`` contracts the traces with the true ``∂L_t/∂h_t``; ``'random'`` (alias
        ``'random_feedback'``) with ``L·B_g``, a fixed random square ``N×N`` projection over the
        last (width) axis of each hidden group ``g`` (:class:`FixedRandomFeedback`, scale 0.1,
        key ``fold_in(random_feedback_key, g)``). Plain parameters (a readout) keep their exact
        same-step gradient.
    kappa_filter_decay : float
        The trace filter ``κ`` in [0, 1): the gradient contracts ``ē_t = κ ē_{t-1} + ε_t``.
    random_feedback_key : int or jax.Array, optional
        Seed or PRNG key of the random feedback matrices; required for random feedback.
    name : str, optional
        Module name.
    vjp_method : {'single-step', 'multi-step'}
        As for :class:`~braintrace.D_RTRL`; multi-step windows contract the filtered trace and
        the (projected) hidden cotangent at window entry.
    fast_solve : bool
        Accepted for compatibility; no effect (see :class:`~braintrace.algorithms.options.LearnerOptions`).
    **kwargs
        Other learner options (``trace_dtype``, ``chunked_trace``, ``control_flow``,
        ``snap_max_jacobian_elements``, ``vmap``), see :class:`~braintrace.ETraceAlgorithm`.

    Raises
    ------
    ValueError
        For κ outside [0, 1), an unknown ``feedback``, or random feedback without a key.

    Notes
    -----
    The random signal is the linear projection ``L·B`` (not normalised per position), so the
    rule stays linear in the loss. A group whose width differs from the readout's is still
    projected ``N×N``: the matrix is square over the group's own width.

    References
    ----------
    Bellec et al. (2020), *A solution to the learning dilemma for recurrent networks of
    spiking neurons*; Lillicrap et al. (2016), *Random synaptic feedback weights support
    error backpropagation for deep learning*.

    Examples
    --------
    >>> import brainstate, jax.numpy as jnp
    >>> import braintrace
    >>> cell = braintrace.nn.GRUCell(3, 4)
    >>> learner = braintrace.compile(cell, 'eprop', jnp.ones(3), kappa_filter_decay=0.5)
    >>> xs = jnp.ones((5, 3))
    >>> grads = learner.etrace_grad(xs, step_fn=lambda x: jnp.sum(learner(x) ** 2))
    >>> sorted(grads)
    [('Wh', 'weight'), ('Wr', 'weight'), ('Wz', 'weight')]
    >>> rf = braintrace.EProp(braintrace.nn.GRUCell(3, 4), feedback='random', random_feedback_key=0)
    >>> rf.feedback
    'random'
    """

    def __init__(self, model, feedback: str = "symmetric", kappa_filter_decay: float = 0.0,
                 random_feedback_key=None, name: str | None = None, vjp_method: str = "single-step",
                 fast_solve: bool = True, **kwargs):
        if not isinstance(feedback, str) or feedback.strip().lower() not in FEEDBACKS:
            raise ValueError(f"`feedback` must be one of {sorted(FEEDBACKS)}; got {feedback!r}.")
        feedback = FEEDBACKS[feedback.strip().lower()]
        kappa = _check_kappa(kappa_filter_decay)
        if feedback == "random":
            if random_feedback_key is None:
                raise ValueError("EProp with feedback='random' needs `random_feedback_key` (an int seed or a JAX "
                                 "PRNG key) for its fixed random feedback matrices; pass "
                                 "`random_feedback_key=0`, for example.")
            random_feedback_key = as_key(random_feedback_key, "random_feedback_key")
        super().__init__(model, name, vjp_method=vjp_method, fast_solve=fast_solve,
                         random_feedback_key=random_feedback_key, **kwargs)
        self.trace_rule = EPropRule(kappa=kappa, feedback=feedback)
        self._feedback_key = random_feedback_key

    @property
    def feedback(self) -> str:
        """``'symmetric'`` or ``'random'``."""
        return self.trace_rule.feedback

    @property
    def kappa(self) -> float:
        """The trace filter decay ``κ``."""
        return self.trace_rule.kappa

    @property
    def kappa_filter_decay(self) -> float:
        return self.kappa

    def _compile_rule(self, graph):
        if self.feedback != "random":
            return self.trace_rule
        # Drawn here, outside any trace: the matrices are constants of the step.
        return dataclasses.replace(self.trace_rule,
                                   feedback_matrices=draw_feedback_matrices(graph, self._feedback_key))

    @property
    def feedback_matrices(self) -> list:
        """Per hidden group (in ``graph.hidden_groups`` order), its :class:`FixedRandomFeedback`."""
        if self.feedback != "random":
            raise ValueError("`feedback_matrices` exist only with feedback='random'.")
        self._assert_compiled("feedback_matrices")
        return list(self._compiled.rule.feedback_matrices)
