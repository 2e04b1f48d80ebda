# Copyright 2026 The braintrace authors. Licensed under the Apache License, Version 2.0.
"""Sequence drivers: online gradients and state evolution over whole sequences.

Both drivers step through time with ``brainstate.transform.scan``/``for_loop`` (one traced
step, no Python work per step), so memory does not grow with the sequence length.
"""

from __future__ import annotations

from collections.abc import Callable

import math
import numbers

import brainstate
import jax
import jax.numpy as jnp

from .._errors import NotSupportedError
from . import factored_gradients
from .inputs import MultiStepData, is_step_data
from .windows import MULTI_STEP_HINT

__all__ = ["etrace_grad", "etrace_evolve"]


def _sequence_length(sequences) -> int:
    if not sequences:
        raise ValueError("give at least one input sequence (time on the leading axis).")
    lengths = []
    for i, seq in enumerate(sequences):
        leaves = jax.tree.leaves(seq)
        if not leaves:
            raise ValueError(f"input sequence {i} has no arrays.")
        for leaf in leaves:
            if jnp.ndim(leaf) == 0:
                raise ValueError(f"input sequence {i} has a scalar leaf; sequences need a leading time axis.")
            lengths.append((i, int(jnp.shape(leaf)[0])))
    distinct = sorted({n for _, n in lengths})
    if len(distinct) != 1:
        raise ValueError(
            "all input sequences must share one leading time length; got lengths "
            + ", ".join(f"sequence {i}: {n}" for i, n in lengths) + "."
        )
    if distinct[0] == 0:
        raise ValueError("input sequences are empty (time length 0).")
    return distinct[0]


def etrace_grad(learner, *sequences, step_fn: Callable, mask=None, chunk_size: int | None = None, weights=None,
                reduction: str = "mean", loss_output: str = "per_step", return_value: bool = False,
                has_aux: bool = False, gradient_window="auto"):
    """Accumulate online gradients over sequences.

    At every step ``t``, ``step_fn(*slices_t)`` must call the learner exactly once and return
    a scalar loss (or ``(loss, aux)`` with ``has_aux``); any other number of calls raises a
    ``ValueError``. The online gradient of ``mask_t * loss_t`` w.r.t. every ``ParamState`` of
    the model is accumulated; a ``ParamState`` the step never reads gets an exact zero.

    The result is not differentiable: a second derivative (``jax.grad`` or ``jax.jacfwd``
    over ``etrace_grad``) raises :class:`braintrace.NotSupportedError` instead of returning
    zeros.

    Parameters
    ----------
    learner : ETraceAlgorithm
        A compiled learner.
    *sequences
        Inputs with time on the leading axis (pytrees allowed); all share one length ``T``.
    step_fn : callable
        ``step_fn(*slices) -> loss`` (or ``(loss, aux)``).
    mask : array_like, optional
        ``(T,)`` weights of the per-step losses (the traces advance on masked steps too).
    chunk_size : int, optional
        Window length ``k``. ``None`` or 1: one step per call. ``k >= 2`` (needs
        ``T % k == 0``, ``vjp_method='multi-step'`` and a learner without ``vmap``) calls
        ``step_fn`` once per window with slices of leading length ``k``; it must call the
        learner once on ``MultiStepData`` inputs and return a ``(k,)`` vector of per-step
        losses (or a scalar window loss when no ``mask`` is given). Each window's gradient is
        exact reverse mode inside the window plus the traces at window entry contracted with
        the hidden-state cotangent there (see :mod:`braintrace.algorithms.windows`).
    weights : dict or sequence of ParamState, optional
        The parameters to differentiate (``{path: ParamState}`` or ParamStates of the
        model); every ``ParamState`` of the model by default. The result has their paths.
    reduction : {'mean', 'sum'}
        ``'mean'`` divides the summed gradient once by ``max(Σ mask, 1)``.
    loss_output : {'per_step'}
        What ``step_fn`` returns: the loss of its step (or window). The only value.
    return_value : bool
        Also return the per-step losses ``(T,)``.
    has_aux : bool
        ``step_fn`` returns ``(loss, aux)``; the stacked aux is returned last.
    gradient_window : 'auto' or int
        For one step per call (``chunk_size`` None): the per-step weight outer products of
        plain dense ops (ES-D-RTRL's ``x̄ᵀ s``, the same-step gradient of an untraced weight
        such as a GRU reset gate or a readout) are stacked over this many steps and summed
        as one matrix product (the same sum in another order; see
        :mod:`braintrace.algorithms.factored_gradients`). ``'auto'`` stacks the weights whose
        stacked factors over at least 8 steps take at most the memory of the dense gradients
        they replace (a constant in ``T``), over the shortest such window, at most 16 steps
        (``T`` if the sequence is shorter; a last, shorter window takes the remainder), and
        keeps 1 when no weight allows 8 steps; an int forces the
        window; ``1`` keeps one product per step (the least memory). With a window, narrow
        pairs too small to stack (a readout to a few outputs) are summed at every step.

    Returns
    -------
    grads, or (grads, losses), or (grads, losses, aux), or (grads, aux)
        ``grads`` is a dict keyed by ``ParamState`` path, like ``model.states(ParamState)``.
        ``losses`` is ``(T,)`` (or ``(T // k,)`` for scalar window losses).

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> import braintrace
    >>> learner = braintrace.compile(braintrace.nn.GRUCell(2, 4), 'd_rtrl', jnp.zeros(2))
    >>> xs = jnp.ones((10, 2))                       # ten time steps
    >>> grads, losses = learner.etrace_grad(xs, step_fn=lambda x: jnp.sum(learner(x) ** 2),
    ...                                     return_value=True)
    >>> grads[('Wz', 'weight')]['weight'].shape, losses.shape
    ((6, 4), (10,))
    """
    learner._assert_compiled("etrace_grad")
    if reduction not in ("mean", "sum"):
        raise ValueError(f"`reduction` must be 'mean' or 'sum'; got {reduction!r}.")
    if not callable(step_fn):
        raise TypeError("`step_fn` must be a callable that calls the learner and returns a scalar loss.")
    _check_not_wrapped(sequences)
    length = _sequence_length(sequences)
    masked = mask is not None
    mask = jnp.ones((length,), jnp.float32) if mask is None else jnp.asarray(mask, jnp.float32)
    if mask.shape != (length,):
        raise ValueError(f"`mask` must have shape ({length},) matching the sequences; got {mask.shape}.")
    chunk = _chunk_size(learner, chunk_size, length, needs_multi_step=True)
    if loss_output != "per_step":
        raise NotSupportedError(f"`loss_output={loss_output!r}` is not supported; `step_fn` returns the loss of its "
                                "step (or window), loss_output='per_step'.")
    all_weights = learner.param_states if weights is None else _selected_weights(learner, weights)
    # Only the ParamStates the compiled step reads get a gradient transformation; the others
    # (unused by the step, see `explain()`'s state_mismatch) have an exactly zero gradient.
    compiled_paths = set(learner._compiled.layout.param_paths)
    weights = {path: st for path, st in all_weights.items() if path in compiled_paths}

    compiled = learner._compiled
    plan, window = factored_gradients.choose_window(compiled.factors, gradient_window, length)
    # A multi-step learner runs every call as a window (windows.py), which has no sinks.
    factored = (window > 1 and chunk is None and not learner.vmap and not learner._data_parallel
                and learner.options.vjp_method != "multi-step")
    per_step = factored_gradients.per_step_groups(plan, window) if factored else ()
    transposed = ()
    if factored and plan.transposed:
        # Made here, outside the loop, so XLA cannot fold the transpose back into the product.
        states = learner._current_states()
        params, _ = compiled.layout.split([jax.tree.leaves(st.value) for st in states])
        transposed = plan.transposed_weights(params)

    def body(acc, inputs):
        xs, m = inputs

        def masked_loss(sinks=None):
            calls_before = learner._compiled.calls
            compiled.sinks = None if sinks is None else (plan, sinks, transposed)
            try:
                result = step_fn(*xs)
            finally:
                compiled.sinks = None
            _check_called_once(learner, learner._compiled.calls - calls_before)
            loss, aux = result if has_aux else (result, None)
            loss = jnp.asarray(loss)
            if chunk is not None:
                return _window_loss(loss, m, chunk, masked), (loss, aux)
            if loss.ndim != 0:
                raise ValueError(
                    f"`step_fn` must return a scalar loss; got an array of shape {loss.shape}. Reduce it "
                    "(for example with jnp.mean) inside step_fn."
                )
            return m * loss, (loss, aux)

        if factored:
            (grads, pairs), (loss, aux) = brainstate.transform.grad(
                masked_loss, grad_states=weights, argnums=0, has_aux=True)(plan.zero_sinks())
            acc = jax.tree.map(jnp.add, acc, grads)
            if any(per_step):  # narrow pairs (a readout) are summed now, not stacked
                acc = factored_gradients.add_window(
                    plan, compiled.layout, acc, [p if now else None for p, now in zip(pairs, per_step)], transposed)
            return acc, (loss, aux, tuple(None if now else p for p, now in zip(pairs, per_step)))
        grads, (loss, aux) = brainstate.transform.grad(masked_loss, grad_states=weights, has_aux=True)()
        acc = jax.tree.map(jnp.add, acc, grads)
        return acc, (loss, aux)

    def stacked_step(carry, inputs):
        acc, stacks, index = carry
        acc, (loss, aux, pairs) = body(acc, inputs)
        stacks = tuple(None if pair is None else jax.tree.map(
            lambda stack, value: jax.lax.dynamic_update_index_in_dim(stack, value, index, 0), stack, pair)
            for stack, pair in zip(stacks, pairs))
        return (acc, stacks, index + 1), (loss, aux)

    def window_body(carry, inputs):
        # `window` steps written into the stacks, then their factor pairs summed into the
        # gradients at once. The stacks travel in the carry: every row is written before the
        # product reads it, so they need no zeroing per window (a scan's stacked outputs would
        # be zeroed and copied every window: 1.6 ms of a 39 ms GRU N=256 sequence at K=8).
        acc, stacks = carry
        (acc, stacks, _), out = brainstate.transform.scan(stacked_step, (acc, stacks, 0), inputs)
        return (factored_gradients.add_window(plan, compiled.layout, acc, stacks, transposed), stacks), out

    def empty_stacks(size):
        return tuple(None if now else jax.tree.map(lambda a: jnp.zeros((size,) + a.shape, a.dtype), pair)
                     for pair, now in zip(plan.zero_sinks(), per_step))

    zeros = {path: jax.tree.map(jnp.zeros_like, st.value) for path, st in weights.items()}
    if chunk is None and factored:
        grads, (losses, aux) = _windowed_scan(window_body, zeros, empty_stacks, (tuple(sequences), mask),
                                              length, window)
    elif chunk is None:
        grads, (losses, aux) = brainstate.transform.scan(body, zeros, (tuple(sequences), mask))
    else:
        windows_in = (_to_windows(tuple(sequences), chunk), mask.reshape(-1, chunk))
        grads, (losses, aux) = brainstate.transform.scan(body, zeros, windows_in)
        if losses.ndim == 2:  # (T // k, k) per-step losses back to (T,)
            losses = losses.reshape(length)
    grads = {path: grads[path] if path in grads else jax.tree.map(jnp.zeros_like, st.value)
             for path, st in all_weights.items()}
    if reduction == "mean":
        grads = jax.tree.map(lambda g: g / jnp.maximum(jnp.sum(mask), 1.0), grads)
    if return_value and has_aux:
        return grads, losses, aux
    if return_value:
        return grads, losses
    if has_aux:
        return grads, aux
    return grads


def _windowed_scan(window_body, init, empty_stacks, xs, length: int, window: int):
    """Scan ``window_body`` over windows of ``window`` steps of ``xs`` (a remainder last).

    ``window_body`` carries ``(gradients, stacks)``; ``empty_stacks(k)`` makes the stacks of
    a ``k``-step window.
    """
    full = length // window
    merge = lambda a: a.reshape((-1,) + a.shape[2:])  # noqa: E731
    parts, grads = [], init
    if full:
        head = jax.tree.map(lambda a: a[:full * window].reshape((full, window) + a.shape[1:]), xs)
        (grads, _), out = brainstate.transform.scan(window_body, (grads, empty_stacks(window)), head)
        parts.append(jax.tree.map(merge, out))
    if length % window:
        tail = jax.tree.map(lambda a: a[full * window:], xs)
        (grads, _), out = window_body((grads, empty_stacks(length % window)), tail)
        parts.append(out)
    if len(parts) == 1:
        return grads, parts[0]
    return grads, jax.tree.map(lambda a, b: jnp.concatenate([a, b]), *parts)


def _selected_weights(learner, weights) -> dict:
    """``weights`` (a dict by path or ParamStates of the model) as ``{path: ParamState}``."""
    by_id = {id(st): path for path, st in learner.param_states.items()}
    states = weights.values() if isinstance(weights, dict) else (
        [weights] if isinstance(weights, brainstate.ParamState) else list(weights))
    out = {}
    for st in states:
        if not isinstance(st, brainstate.ParamState) or id(st) not in by_id:
            raise ValueError(f"`weights` must hold ParamStates of the learner's model; got {type(st).__name__} "
                             f"that is not one (known paths: {sorted(learner.param_states)}).")
        out[by_id[id(st)]] = st
    if not out:
        raise ValueError("`weights` is empty; pass None to differentiate every ParamState.")
    return out


def _check_called_once(learner, calls: int) -> None:
    if calls == 1:
        return
    what = type(learner).__name__
    model = type(learner.model).__name__
    if calls == 0:
        found = ("never called this learner; calling the wrapped model (or another learner) directly "
                 "bypasses the eligibility traces and gives at best a one-step gradient")
    else:
        found = (f"called this learner {calls} times; each call advances the traces by one step, so the "
                 "gradient would mix several steps per time slice")
    raise ValueError(
        f"`step_fn` {found}. At every time step `step_fn` must call the learner (`{what}` wrapping `{model}`) "
        f"exactly once, as `learner(x)`, and return a loss of its output, for example "
        "`step_fn=lambda x: loss_fn(learner(x))`."
    )


def etrace_evolve(learner, *sequences, step_fn: Callable | None = None, chunk_size: int | None = None,
                  return_outputs: bool = False):
    """Advance hidden states and traces over sequences without a loss.

    Parameters
    ----------
    learner : ETraceAlgorithm
        A compiled learner.
    *sequences
        Inputs with time on the leading axis; all share one length ``T``.
    step_fn : callable, optional
        ``step_fn(*slices)`` calls the learner once; by default the learner itself is called
        on the slices (wrapped in ``MultiStepData`` when windowed).
    chunk_size : int, optional
        Window length ``k`` (``T % k == 0``, a learner without ``vmap``); any ``vjp_method``
        is allowed since nothing is differentiated. ``None`` or 1: one step per call.
    return_outputs : bool
        Return the stacked per-step (or per-window, ``(T // k, k, ...)``) outputs.

    Returns
    -------
    The stacked outputs when ``return_outputs`` is true, else None.

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> import braintrace
    >>> learner = braintrace.compile(braintrace.nn.GRUCell(2, 4), 'es_d_rtrl', jnp.zeros(2))
    >>> learner.etrace_evolve(jnp.ones((5, 2)), return_outputs=True).shape
    (5, 4)
    >>> int(learner.running_index.value)
    5
    >>> learner.etrace_evolve(jnp.ones((6, 2)), chunk_size=3, return_outputs=True).shape
    (2, 3, 4)
    """
    learner._assert_compiled("etrace_evolve")
    _check_not_wrapped(sequences)
    length = _sequence_length(sequences)
    if step_fn is not None and not callable(step_fn):
        raise TypeError("`step_fn` must be a callable that calls the learner once, or None.")
    chunk = _chunk_size(learner, chunk_size, length, needs_multi_step=False)
    if chunk is None:
        call = step_fn if step_fn is not None else learner.update
        outputs = brainstate.transform.for_loop(lambda *xs: call(*xs), *sequences)
    else:
        call = step_fn if step_fn is not None else (
            lambda *xs: learner.update(*[MultiStepData(x) for x in xs]))
        outputs = brainstate.transform.for_loop(lambda *xs: call(*xs), *_to_windows(tuple(sequences), chunk))
    return outputs if return_outputs else None


def _check_not_wrapped(sequences) -> None:
    for i, seq in enumerate(sequences):
        if is_step_data(seq):
            raise TypeError(
                f"input sequence {i} is a {type(seq).__name__}; the drivers take bare time-major sequences. "
                "Wrap slices inside `step_fn` instead (e.g. `learner(braintrace.MultiStepData(xs))`)."
            )


def _chunk_size(learner, chunk_size, length: int, needs_multi_step: bool) -> int | None:
    """The window length, or None for one step per call (``chunk_size`` None or 1)."""
    if chunk_size is None:
        return None
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, numbers.Integral) or chunk_size < 1:
        raise ValueError(f"`chunk_size` must be a positive int or None; got {chunk_size!r}.")
    chunk = int(chunk_size)
    if chunk == 1:
        return None
    if length % chunk:
        raise ValueError(
            f"`chunk_size={chunk}` does not divide the sequence length T={length}; pick a chunk_size that "
            f"divides T (for example {math.gcd(length, chunk)}) or trim/pad the sequences to a multiple of {chunk}."
        )
    if learner.vmap:
        raise NotSupportedError(
            f"`chunk_size={chunk}`: multi-step windows are not supported on a learner compiled with vmap=True. "
            "Compile with vmap=False and a real batch axis (`braintrace.compile(..., batch_size=B)`)."
        )
    if needs_multi_step and learner.options.vjp_method != "multi-step":
        raise ValueError(
            f"`chunk_size={chunk}` differentiates through windows of {chunk} steps, which needs a multi-step "
            f"learner; the learner has vjp_method={learner.options.vjp_method!r}. {MULTI_STEP_HINT[0].upper()}"
            f"{MULTI_STEP_HINT[1:]}, or use chunk_size=None."
        )
    return chunk


def _to_windows(sequences: tuple, chunk: int):
    """Time-major ``(T, ...)`` leaves as ``(T // k, k, ...)`` windows."""
    return jax.tree.map(lambda a: jnp.reshape(a, (-1, chunk) + jnp.shape(a)[1:]), sequences)


def _window_loss(loss, mask, chunk: int, masked: bool):
    """The masked loss of one window from a ``(k,)`` vector (or a scalar without mask)."""
    if loss.shape == (chunk,):
        return jnp.sum(mask * loss)
    if loss.ndim == 0:
        if masked:
            raise ValueError(
                f"with `chunk_size={chunk}` and a `mask`, `step_fn` must return the ({chunk},) vector of "
                "per-step losses of its window (the mask weights each step); got a scalar."
            )
        return loss
    raise ValueError(
        f"with `chunk_size={chunk}`, `step_fn` must return a ({chunk},) vector of per-step losses (or a scalar "
        f"window loss); got an array of shape {loss.shape}."
    )
