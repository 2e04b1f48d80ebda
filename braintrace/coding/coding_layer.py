# Copyright 2026 The braintrace authors. Licensed under the Apache License, Version 2.0.
"""``CodingLayer``: watch how a module's output visits a codebook, without changing it.

The wrapper runs the wrapped module, returns its output object untouched, and, while
coding is active, codes ``jax.lax.stop_gradient(output)`` with :func:`coding_statistics`.
The resulting :class:`CodingTrace` is written into a :class:`TraceSlotState` (a
non-trainable ``brainstate`` state), which is how it leaves a ``brainstate.transform.jit``
step or an online learner's step. Everything on the coding path is fail-open: a reducer
that raises, a shape that does not fit the codebook, a trace that cannot be stored (e.g.
under a raw ``jax.jit``) or a hook that raises is counted and warned about once, and the
forward goes on.
"""

from __future__ import annotations

import contextlib
import dataclasses
import warnings
from collections.abc import Callable, Iterator
from typing import Any, Literal

import brainstate
import jax
import numpy as np

from .codebook import Codebook
from .coding_statistics import coding_statistics
from .coding_trace import CodingTrace
from .reducers import (
    RandomProjection,
    Reducer,
    chain_reducers,
    fail_open_reducer,
    resolve_reducer,
)
from .soft_assign import SoftAssignment
from .trace_slot import TraceSlot, TraceSlotState, placeholder_trace, zeros_like

__all__ = ["CodingLayer"]


type DiagnosticsHook = Callable[[CodingTrace], Any]


def _is_traced(tree: Any) -> bool:
    return any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree.leaves(tree))


def _mean(values: Any) -> float | None:
    array = np.asarray(values)
    return None if array.size == 0 else float(array.mean())


class CodingLayer(brainstate.nn.Module):
    """Wrap a module and record coding statistics of its output as a side output.

    ``layer(*args)`` returns exactly what the wrapped module returns (the same object,
    bit for bit, with the same gradients). While coding is active, the output, with its
    gradient stopped, is reduced to ``(..., D)``, softly assigned to a :class:`Codebook` of
    ``K`` centers, and the :class:`CodingTrace` is kept in a non-trainable state, readable
    as :attr:`last_trace`.

    Parameters
    ----------
    layer : callable
        The module to observe (a layer, a cell, a whole model).
    K : int
        Number of codes.
    coding_dim : int, optional
        Dimension ``D`` of the code space. By default ``layer.out_size[-1]`` (the features
        or channels of a ``brainstate`` module) when the module has an ``out_size``, and
        otherwise the last axis of the first coded (reduced) output: the codebook is then
        built on the first call, eagerly, under ``brainstate.transform.jit`` or while an
        online learner compiles its step. When the reduced output has more features than
        ``coding_dim``, a fixed :class:`RandomProjection` (seeded with ``seed``) maps it
        down.
    reducer : {None, 'identity', 'spatial_mean'} or callable
        The view that gets coded. ``None`` codes a ``(..., D)`` output as it is, every
        leading position a sample. Convolution outputs are not guessed from their rank:
        pass ``'spatial_mean'`` to average a channel-last ``(B, *spatial, C)`` output over
        its spatial axes. A callable ``x -> (reduced, meta_dict)`` is used as given (also
        for outputs that are pytrees). A reducer that raises is bypassed for that call: the
        output is coded as it is and ``reduction_meta`` records ``method='bypass'``.
    temperature, eps : float
        Soft-assignment settings (see :func:`soft_assign`); :attr:`assignment` holds them.
    update : {'none', 'ema'}
        The codebook's update rule, applied inside the step after each coded call.
    decay : float
        EMA decay of the codebook update.
    restart_after : int, optional
        With ``update='ema'``: re-seed a code that no coded point chose in this many
        consecutive calls at a point of the current call (see :class:`Codebook`). Off by
        default; like the rest it changes the codebook only, never the output or gradients.
    init : {'uniform', 'normal'}
        Codebook initialisation.
    seed : int
        Seed of the codebook and of the projection.
    hooks_under_jit : bool
        Also run diagnostics hooks from inside traced calls, through
        ``jax.debug.callback`` (off by default: hooks run after eager calls only).
    name : str, optional
        Module name.

    Raises
    ------
    TypeError
        If ``layer`` is not callable or ``reducer`` is neither a name nor callable.
    ValueError
        If ``coding_dim`` is not a positive integer, or a codebook or assignment setting is
        invalid.

    Notes
    -----
    *Switches under jit.* The switch (:meth:`enable_coding`, :meth:`disable_coding`,
    :meth:`bypass`) is read while tracing, so inside a compiled step it is static. It is
    mirrored in the structure of the trace state, so ``brainstate.transform.jit`` notices a
    flip and retraces on the next call. An online learner compiles the step once: the
    switch is then fixed at compile time, and toggling needs a recompile.

    *Storage.* The trace state holds a :class:`CodingTrace` of fixed structure from
    construction on. Its shapes are set by :meth:`init_state` (through
    ``brainstate.nn.init_all_states``, when the wrapped module has an ``out_size``), by
    :meth:`fit_trace`, or else by the first coded call, also when that call is traced by
    ``brainstate.transform.jit`` or by an online learner's compilation (the state then
    takes its shapes as if it had had them before the trace began). A later change of the
    activation shape reshapes it (a jitted step then retraces; an online learner must be
    recompiled anyway). Clearing the cache (:meth:`clear_last_trace`,
    :meth:`disable_coding`, a bypassed call) only marks it empty. A raw
    ``jax.jit``/``jax.vmap`` cannot carry states: the trace is then not stored (counted in
    :attr:`coding_error_count`); use the ``brainstate.transform`` versions.

    *Lanes (``vmap=True`` learners).* Such a learner gives every non-parameter state a
    lane axis and runs the lanes independently, so an EMA codebook would become one
    codebook per lane, each fitted to one lane's points: statistics that the batched
    learner (``vmap=False``) would not give. A fixed codebook (``update='none'``, the
    default) is the same in every lane, i.e. shared, and the trace gains the lane axis:
    the statistics equal those of the batched learner. An EMA codebook refuses the lane
    axis with :class:`braintrace.NotSupportedError`, which says to compile in batched mode.

    *Errors.* ``coding_error_count`` and ``hook_error_count`` are Python counters: under
    ``jit`` a coding error is counted when the step is traced, a hook error (with
    ``hooks_under_jit``) each time the hook runs.

    *Statistics.* :meth:`utilization` and the ``mean_*`` methods read the cached trace on
    the host, so call them outside traced code.

    Examples
    --------
    >>> import brainstate, jax.numpy as jnp
    >>> from braintrace.coding import CodingLayer
    >>> class Linear(brainstate.nn.Module):
    ...     def __init__(self, n_in, n_out):
    ...         super().__init__()
    ...         self.out_size = (n_out,)
    ...         self.w = brainstate.ParamState(jnp.ones((n_in, n_out)) / n_in)
    ...     def update(self, x):
    ...         return x @ self.w.value
    >>> layer = CodingLayer(Linear(3, 4), K=8)
    >>> y = layer(jnp.ones((5, 3)))
    >>> layer.last_trace.soft_code.probs.shape
    (5, 8)
    >>> 0.0 < layer.utilization() <= 1.0
    True
    >>> with layer.bypass():
    ...     y = layer(jnp.ones((5, 3)))
    >>> layer.last_trace is None
    True
    """

    def __init__(
        self,
        layer: Callable[..., Any],
        *,
        K: int = 16,
        coding_dim: int | None = None,
        reducer: str | Reducer | None = None,
        temperature: float = 1.0,
        eps: float = 1e-12,
        update: Literal["none", "ema"] = "none",
        decay: float = 0.99,
        restart_after: int | None = None,
        init: Literal["uniform", "normal"] = "uniform",
        seed: int = 0,
        hooks_under_jit: bool = False,
        name: str | None = None,
    ) -> None:
        super().__init__(name=name)
        if not callable(layer):
            raise TypeError(f"`layer` must be a callable module; got {type(layer).__name__}.")
        self.layer = layer
        reduce = resolve_reducer(reducer)
        if coding_dim is None:
            out_size = layer.out_size if isinstance(layer, brainstate.nn.Module) else None
            dim = int(out_size[-1]) if out_size else None  # None: from the first coded output
        else:
            if isinstance(coding_dim, bool) or int(coding_dim) != coding_dim or coding_dim < 1:
                raise ValueError(f"`coding_dim` must be a positive integer; got {coding_dim!r}.")
            dim = int(coding_dim)
            reduce = chain_reducers(reduce, RandomProjection(dim, seed=seed))
        if isinstance(layer, brainstate.nn.Module):
            if layer.in_size is not None:
                self.in_size = layer.in_size
            if layer.out_size is not None:
                self.out_size = layer.out_size
        self.reducer = fail_open_reducer(reduce)
        self.codebook = Codebook(K, dim, init=init, seed=seed, update=update, decay=decay,
                                 restart_after=restart_after)
        self.assignment = SoftAssignment(temperature=temperature, eps=eps)
        self.hooks_under_jit = bool(hooks_under_jit)
        self.trace_slot = TraceSlotState(placeholder_trace(K, dim or 1), active=True)
        self.coding_error_count = 0
        self.last_coding_error: str | None = None
        self.hook_error_count = 0
        self.last_hook_error: str | None = None
        self._coding_enabled = True
        self._bypass_depth = 0
        self._hooks: tuple[DiagnosticsHook, ...] = ()
        self._warned: frozenset[str] = frozenset()

    # ------------------------------------------------------------------ forward
    def update(self, *args, **kwargs) -> Any:
        """Run the wrapped module; code its output when coding is active; return the output."""
        output = self.layer(*args, **kwargs)
        active = self.is_coding_active
        trace = self._code(output) if active else None
        self._store(trace, active)
        return output

    @property
    def coding_dim(self) -> int | None:
        """The code dimension ``D``; ``None`` until the first coded call when it is inferred."""
        return self.codebook.code_dim

    def _build_codebook(self, output: Any) -> None:
        """Fix ``D`` from the reduced view of the first coded output (shapes only)."""
        if not self.codebook.is_built:
            reduced = jax.eval_shape(lambda out: self.reducer(out)[0], output)
            if not hasattr(reduced, "shape") or len(reduced.shape) < 1:
                raise ValueError(
                    f"Cannot infer the coding dimension of `{type(self.layer).__name__}`: its "
                    f"reduced output is {reduced!r}, not an array `(..., D)`. Pass a `reducer=` "
                    "that returns one, or `coding_dim=`."
                )
            self.codebook.build(reduced.shape[-1])

    def _code(self, output: Any) -> CodingTrace | None:
        try:
            self._build_codebook(output)
            trace = coding_statistics(
                output, self.codebook.centers.value, reducer=self.reducer, **dataclasses.asdict(self.assignment)
            )
            self.codebook.update(trace.reduced, trace.chosen_center_indices)
        except Exception as exc:  # fail-open: the observed model must never break
            self._record_coding_error(exc)
            return None
        return trace

    def _store(self, trace: CodingTrace | None, active: bool) -> None:
        if trace is None:
            slot = self.trace_slot.value
            self.trace_slot.value = TraceSlot(slot.trace, np.False_, active)
            return
        if not self.trace_slot.fits(trace):
            self.trace_slot.fit(trace)
        try:
            self.trace_slot.value = TraceSlot(trace, np.True_, active)
        except brainstate.TraceContextError as exc:
            self._record_coding_error(exc)
            return
        self._notify_hooks(trace)

    def _record_coding_error(self, exc: Exception) -> None:
        self.coding_error_count += 1
        self.last_coding_error = f"{type(exc).__name__}: {exc}"
        self._warn_once(
            "coding",
            f"{type(self).__name__}: coding skipped ({self.last_coding_error}). The wrapped "
            "output is unaffected; further errors are counted in `coding_error_count`.",
        )

    def _warn_once(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned = self._warned | {key}
            warnings.warn(message, RuntimeWarning, stacklevel=4)

    # ------------------------------------------------------------------ switches
    @property
    def coding_enabled(self) -> bool:
        """Whether coding is enabled (ignoring any active :meth:`bypass`)."""
        return self._coding_enabled

    @property
    def is_coding_active(self) -> bool:
        """Whether the next call codes its output: enabled and not bypassed."""
        return self._coding_enabled and self._bypass_depth == 0

    def enable_coding(self) -> None:
        """Code the outputs of later calls (a jitted step retraces on its next call)."""
        self._coding_enabled = True
        self._sync_switch()

    def disable_coding(self) -> None:
        """Stop coding and clear the cached trace (a jitted step retraces on its next call)."""
        self._coding_enabled = False
        self.clear_last_trace()

    @contextlib.contextmanager
    def bypass(self) -> Iterator[None]:
        """Skip coding inside the ``with`` block; blocks nest.

        Examples
        --------
        >>> import brainstate, jax.numpy as jnp
        >>> from braintrace.coding import CodingLayer
        >>> layer = CodingLayer(brainstate.nn.Identity(), K=4, coding_dim=2)
        >>> with layer.bypass():
        ...     with layer.bypass():
        ...         pass
        ...     layer.is_coding_active
        False
        >>> layer.is_coding_active
        True
        """
        self._bypass_depth += 1
        self._sync_switch()
        try:
            yield
        finally:
            self._bypass_depth -= 1
            self._sync_switch()

    def _sync_switch(self) -> None:
        slot = self.trace_slot.value
        if slot.active != self.is_coding_active:
            self.trace_slot.value = TraceSlot(slot.trace, slot.valid, self.is_coding_active)

    # ------------------------------------------------------------------ cache
    @property
    def last_trace(self) -> CodingTrace | None:
        """The trace of the latest coded call, or ``None`` when the cache is empty.

        Inside a traced function, after a traced call, this is the traced trace.
        """
        slot = self.trace_slot.value
        if isinstance(slot.valid, jax.core.Tracer):
            return slot.trace
        # `valid` has a lane axis after a vmap=True learner ran: one flag per lane.
        return slot.trace if bool(np.all(slot.valid)) else None

    def clear_last_trace(self) -> None:
        """Empty the cache (the state keeps its structure)."""
        slot = self.trace_slot.value
        self.trace_slot.value = TraceSlot(slot.trace, np.False_, self.is_coding_active)

    def fit_trace(self, example_output: Any) -> bool:
        """Shape the trace state for outputs like ``example_output``, without running anything.

        ``example_output`` is an output of the wrapped module, or its abstract version
        (``jax.ShapeDtypeStruct``). The coding path is evaluated with ``jax.eval_shape`` and
        the trace state takes the resulting shapes, with an empty cache. A jitted step then
        compiles once, and an online learner (which compiles the step once and may run it
        inside ``scan``) sees a trace state whose shapes never change. :meth:`init_state`
        calls this when the wrapped module has an ``out_size``. Call it outside traced code.

        Returns
        -------
        bool
            Whether the state was shaped (``False`` when coding such an output fails; the
            first coded call then shapes it).

        Examples
        --------
        >>> import brainstate, jax, jax.numpy as jnp
        >>> from braintrace.coding import CodingLayer
        >>> layer = CodingLayer(brainstate.nn.Identity(), K=4, coding_dim=3)
        >>> layer.fit_trace(jax.ShapeDtypeStruct((10, 3), jnp.float32))
        True
        >>> layer.trace_slot.value.trace.soft_code.probs.shape, layer.last_trace
        ((10, 4), None)
        """
        def code(output):
            return coding_statistics(output, self.codebook.centers.value, reducer=self.reducer,
                                     **dataclasses.asdict(self.assignment))

        try:
            self._build_codebook(example_output)
            template = jax.eval_shape(code, example_output)
        except Exception:  # fail-open, as for a coded call
            return False
        self.trace_slot.refit(TraceSlot(zeros_like(template), np.False_, self.trace_slot.value.active))
        return True

    def init_state(self, batch_size: int | None = None, **kwargs) -> None:
        """Shape the trace state for outputs ``(batch_size, *out_size)`` (see :meth:`fit_trace`).

        Called by ``brainstate.nn.init_all_states``; does nothing when the wrapped module has
        no ``out_size``. The wrapped module's own ``init_state`` is called by
        ``init_all_states`` too, not by this method.
        """
        if self.out_size is None:
            return  # shaped by the first coded call
        shape = tuple(self.out_size) if batch_size is None else (int(batch_size), *self.out_size)
        self.fit_trace(jax.ShapeDtypeStruct(shape, brainstate.environ.dftype()))

    def reset_state(self, *args, **kwargs) -> None:
        """Clear the cached trace (called by ``brainstate.nn.reset_all_states``)."""
        self.clear_last_trace()

    # ------------------------------------------------------------------ hooks
    def add_diagnostics_hook(self, hook: DiagnosticsHook) -> None:
        """Call ``hook(trace)`` on the host after each coded call.

        Hooks run after eager calls, and after traced calls too when the layer was built
        with ``hooks_under_jit=True``. A hook that raises is skipped: the error is counted
        in :attr:`hook_error_count` and warned about once.

        Examples
        --------
        >>> import brainstate, jax.numpy as jnp
        >>> from braintrace.coding import CodingLayer
        >>> layer = CodingLayer(brainstate.nn.Identity(), K=4, coding_dim=2)
        >>> seen = []
        >>> layer.add_diagnostics_hook(lambda trace: seen.append(trace.soft_code.probs.shape))
        >>> _ = layer(jnp.ones((3, 2)))
        >>> seen
        [(3, 4)]
        """
        if not callable(hook):
            raise TypeError(f"A diagnostics hook must be callable; got {type(hook).__name__}.")
        self._hooks = self._hooks + (hook,)

    def remove_diagnostics_hook(self, hook: DiagnosticsHook) -> None:
        """Remove ``hook`` (every registration of it); unknown hooks are ignored."""
        self._hooks = tuple(h for h in self._hooks if h is not hook)

    def _notify_hooks(self, trace: CodingTrace) -> None:
        if not self._hooks:
            return
        if not _is_traced(trace):
            self._run_hooks(trace)
        elif self.hooks_under_jit:
            leaves, treedef = jax.tree.flatten(trace)
            jax.debug.callback(lambda *values: self._run_hooks(jax.tree.unflatten(treedef, values)), *leaves)

    def _run_hooks(self, trace: CodingTrace) -> None:
        for hook in self._hooks:
            try:
                hook(trace)
            except Exception as exc:  # a diagnostics hook must never break the forward
                self.hook_error_count += 1
                self.last_hook_error = f"{type(exc).__name__}: {exc}"
                self._warn_once(
                    "hook",
                    f"{type(self).__name__}: diagnostics hook {hook!r} raised "
                    f"({self.last_hook_error}); further hook errors are counted in `hook_error_count`.",
                )

    # ------------------------------------------------------------------ statistics
    def utilization(self) -> float | None:
        """Distinct chosen codes of the latest trace divided by ``K``; ``None`` without a trace."""
        trace = self.last_trace
        if trace is None:
            return None
        chosen = np.asarray(trace.chosen_center_indices)
        return float(np.unique(chosen).size) / self.codebook.K if chosen.size else None

    def mean_entropy(self) -> float | None:
        """Mean assignment entropy (nats) of the latest trace; ``None`` without a trace."""
        trace = self.last_trace
        return None if trace is None else _mean(trace.soft_code.entropy)

    def mean_code_length(self) -> float | None:
        """Mean best-code length ``-log p_best`` of the latest trace; ``None`` without a trace."""
        trace = self.last_trace
        return None if trace is None else _mean(trace.soft_code.best_length)

    def mean_commitment_distance(self) -> float | None:
        """Mean squared distance to the chosen center in the latest trace; ``None`` without one."""
        trace = self.last_trace
        return None if trace is None else _mean(trace.commitment_distances)
