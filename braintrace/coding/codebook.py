# Copyright 2026 The braintrace authors. Licensed under the Apache License, Version 2.0.
"""``Codebook``: ``K`` centers in a ``D``-dimensional code space, held outside any gradient.

The centers live in a :class:`CodebookState`, a ``brainstate.LongTermState`` that is not a
``ParamState``: ``module.states(brainstate.ParamState)`` never lists it, so gradient
transforms and online learners leave it alone. With ``update='ema'`` each call to
:meth:`Codebook.update` takes one step of online k-means with exponential moving
averages, inside whatever ``jit`` or loop the caller runs. For every code ``k`` with
``n_k`` points of the batch assigned to it and their sum ``s_k``:

- ``N_k ← γ N_k + (1 - γ) n_k`` (the running cluster size, initially 1), and
- ``c_k ← (γ N_k^old c_k + (1 - γ) s_k) / N_k``,

so a center moves toward the mean of the points assigned to it, and a center that is not
chosen stays where it is. Such a *dead* code never moves again, which caps the utilization.
With ``restart_after=n`` (off by default) a code left unchosen by ``n`` consecutive updates
is due for a restart. Each update re-seeds one due code, the longest idle (the lowest index
on ties), at the point of the current batch farthest from its chosen center (the point the
codebook represents worst), and resets its cluster size to 1; the other due codes wait for
the next updates.
This changes the codebook only: the model's values and gradients stay untouched.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import brainstate
import jax
import jax.numpy as jnp
import numpy as np

from .._errors import NotSupportedError
from ._refit import RefitMixin
from .soft_assign import squared_distances

__all__ = ["Codebook", "CodebookState"]

_INITS = ("uniform", "normal")
_UPDATES = ("none", "ema")


class CodebookState(RefitMixin, brainstate.LongTermState):
    """A codebook quantity (centers, running cluster sizes): long-lived, never trained by gradient.

    The states of an EMA codebook keep their shape (:attr:`fixed_shape`): a value of
    another shape raises, in particular the per-lane copies a ``vmap=True`` online learner
    would make of it (which would fit one codebook per lane). So do the centers of a
    codebook whose dimension is not known yet (shape ``(K, 0)``).

    Examples
    --------
    >>> import brainstate, jax.numpy as jnp
    >>> from braintrace.coding import CodebookState
    >>> state = CodebookState(jnp.zeros((4, 2)))
    >>> isinstance(state, brainstate.ParamState)
    False
    """

    #: The shape every value must have (``None``: any shape).
    fixed_shape: tuple[int, ...] | None = None
    #: Whether the state belongs to an EMA codebook (its shape then never changes).
    ema: bool = False

    def refit(self, value: Any) -> None:
        """Replace the value without recording it (see :mod:`braintrace.coding._refit`)."""
        vars(self)["fixed_shape"] = tuple(np.shape(value)) if self.ema else None
        super().refit(value)

    def _write_value(self, v: Any) -> None:
        shape = self.fixed_shape
        if shape is not None and v is not vars(self).get("_superseded") and tuple(jnp.shape(v)) != shape:
            found = tuple(jnp.shape(v))
            if 0 in shape and not (self.ema and found[1:] == shape):
                raise NotSupportedError(
                    f"This codebook's code dimension is not known yet (it is inferred from the first "
                    f"coded output), so its centers of shape {shape} cannot take a value of shape "
                    f"{found}. A vmap=True online learner copies every state per lane before the model "
                    "ever runs: call the model once (or `CodingLayer.fit_trace(example_output)`) before "
                    "compiling the learner, or compile it in batched mode (without `vmap=True`)."
                )
            if self.ema and len(found) == len(shape) + 1 and found[1:] == shape:
                raise NotSupportedError(
                    f"An EMA codebook state of shape {shape} was given a value of shape {found}, i.e. "
                    f"one copy per lane ({found[0]} lanes): a vmap=True online learner gives every "
                    "non-parameter state a lane axis, which would fit one codebook per lane, to that "
                    "lane's points only. Compile the learner in batched mode instead "
                    "(`braintrace.compile(model, ..., batch_size=B)` without `vmap=True`), where one "
                    "codebook sees the whole batch, or use update='none' (a fixed codebook, the same "
                    "in every lane)."
                )
            raise ValueError(f"An EMA codebook state has shape {shape}; got a value of shape {found}.")
        super()._write_value(v)


def _check_positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or int(value) != value or value < 1:
        raise ValueError(f"`{name}` must be a positive integer; got {value!r}.")
    return int(value)


class Codebook(brainstate.nn.Module):
    """``K`` code centers of dimension ``code_dim`` with an optional online EMA update.

    Parameters
    ----------
    K : int
        Number of codes, ``>= 1``.
    code_dim : int or None
        Dimension ``D`` of each center, ``>= 1``. ``None`` defers it to the first
        :meth:`build` (or :meth:`update`, from the last axis of its points); the centers are
        then drawn from the same ``seed`` as they would have been at construction.
    init : {'uniform', 'normal'}
        Initial centers: ``U(-1, 1)`` or ``N(0, 1)`` entries, scaled by ``1 / sqrt(code_dim)``.
    seed : int
        Seed of the initial centers.
    update : {'none', 'ema'}
        The rule applied by :meth:`update`: nothing, or one EMA k-means step.
    decay : float
        EMA decay ``γ`` in ``(0, 1)`` (used by ``update='ema'``).
    restart_after : int, optional
        Re-seed a code that no point chose in this many consecutive updates (needs
        ``update='ema'``; off by default). See the module notes.
    dtype : dtype
        Dtype of the centers.
    name : str, optional
        Module name.

    Raises
    ------
    ValueError
        For a non-positive ``K``, ``code_dim`` or ``restart_after``, an unknown
        ``init``/``update``, a ``decay`` outside ``(0, 1)``, or ``restart_after`` without
        ``update='ema'``.

    Examples
    --------
    >>> import brainstate, jax.numpy as jnp
    >>> from braintrace.coding import Codebook
    >>> book = Codebook(4, 2, update="ema", decay=0.5)
    >>> book.centers.value.shape, book.states(brainstate.ParamState)
    ((4, 2), {})
    >>> x = jnp.full((8, 2), 3.0)
    >>> before = book.centers.value
    >>> after = book.update(x)        # the center nearest to x moves toward it
    >>> bool(jnp.min(jnp.sum((after - 3.0) ** 2, -1)) < jnp.min(jnp.sum((before - 3.0) ** 2, -1)))
    True

    Dead codes come back with ``restart_after``:

    >>> book = Codebook(3, 1, update="ema", restart_after=2)
    >>> book.centers.value = jnp.array([[0.0], [1.0], [2.0]])
    >>> points = jnp.array([[0.1], [5.0]])      # both nearest to code 0 or 2; code 1 is idle
    >>> _ = book.update(points)
    >>> book.unused_steps.value
    Array([0, 1, 0], dtype=int32)
    >>> book.update(points)[1]                   # idle twice: re-seeded at the worst-coded point
    Array([5.], dtype=float32)
    """

    def __init__(
        self,
        K: int,
        code_dim: int | None,
        *,
        init: Literal["uniform", "normal"] = "uniform",
        seed: int = 0,
        update: Literal["none", "ema"] = "none",
        decay: float = 0.99,
        restart_after: int | None = None,
        dtype=jnp.float32,
        name: str | None = None,
    ) -> None:
        super().__init__(name=name)
        self.num_codes = _check_positive_int("K", K)
        if code_dim is not None:
            code_dim = _check_positive_int("code_dim", code_dim)
        if init not in _INITS:
            raise ValueError(f"`init` must be one of {_INITS}; got {init!r}.")
        if update not in _UPDATES:
            raise ValueError(f"`update` must be one of {_UPDATES}; got {update!r}.")
        if not 0.0 < float(decay) < 1.0:
            raise ValueError(f"`decay` must lie in (0, 1); got {decay!r}.")
        if restart_after is not None:
            restart_after = _check_positive_int("restart_after", restart_after)
            if update != "ema":
                raise ValueError(
                    f"`restart_after` re-seeds codes of an EMA codebook; it needs update='ema' (got update={update!r})."
                )
        self.init = init
        self.seed = int(seed)
        self.dtype = dtype
        self.update_rule = update
        self.decay = float(decay)
        self.restart_after = restart_after
        self.code_dim = None
        self.centers = self._state(np.zeros((self.num_codes, 0), dtype))
        if code_dim is not None:
            self.build(code_dim)
        if update == "ema":
            self.cluster_sizes = self._state(jnp.ones((self.num_codes,), dtype))
        if restart_after is not None:
            self.unused_steps = self._state(jnp.zeros((self.num_codes,), jnp.int32))

    def _state(self, value) -> CodebookState:
        state = CodebookState(value)
        vars(state)["ema"] = self.update_rule == "ema"
        if state.ema or 0 in np.shape(value):  # a built fixed codebook may be copied: it stays the same
            vars(state)["fixed_shape"] = tuple(np.shape(value))
        return state

    @property
    def K(self) -> int:
        """Number of codes."""
        return self.num_codes

    @property
    def is_built(self) -> bool:
        """Whether the code dimension is known and the centers exist."""
        return self.code_dim is not None

    def build(self, code_dim: int) -> None:
        """Fix the code dimension and draw the initial centers (once; also inside a trace).

        Raises
        ------
        ValueError
            If the codebook already has another ``code_dim``.

        Examples
        --------
        >>> from braintrace.coding import Codebook
        >>> book = Codebook(8, None)
        >>> book.is_built, book.centers.value.shape
        (False, (8, 0))
        >>> book.build(3)
        >>> book.centers.value.shape
        (8, 3)
        """
        code_dim = _check_positive_int("code_dim", code_dim)
        if self.code_dim is not None:
            if code_dim != self.code_dim:
                raise ValueError(
                    f"This codebook codes {self.code_dim} features; got points with {code_dim} features."
                )
            return
        shape = (self.num_codes, code_dim)
        with jax.ensure_compile_time_eval():  # concrete even while a step is being traced
            key = jax.random.PRNGKey(self.seed)
            if self.init == "uniform":
                raw = jax.random.uniform(key, shape, self.dtype, minval=-1.0, maxval=1.0)
            else:
                raw = jax.random.normal(key, shape, self.dtype)
            centers = raw / math.sqrt(code_dim)
        self.centers.refit(centers)
        self.code_dim = code_dim

    def update(self, reduced: jax.Array, chosen_indices: jax.Array | None = None) -> jax.Array:
        """Apply the update rule to a batch of reduced activity and return the centers.

        Parameters
        ----------
        reduced : jax.Array
            Activity of shape ``(..., code_dim)``; gradients are stopped.
        chosen_indices : jax.Array, optional
            The code chosen for each position, shape ``reduced.shape[:-1]``; computed as
            the nearest center when omitted.

        Returns
        -------
        jax.Array
            The centers after the update, shape ``(K, code_dim)`` (unchanged for
            ``update='none'``).
        """
        if not self.is_built:
            self.build(jnp.shape(reduced)[-1])
        centers = self.centers.value
        if self.update_rule == "none":
            return centers
        x = jax.lax.stop_gradient(jnp.asarray(reduced)).astype(centers.dtype)
        if chosen_indices is None:
            chosen_indices = jnp.argmin(squared_distances(x, centers), axis=-1)
        x = x.reshape(-1, self.code_dim)
        chosen = jnp.reshape(chosen_indices, (-1,))
        one_hot = jax.nn.one_hot(chosen, self.num_codes, dtype=centers.dtype)
        counts = jnp.sum(one_hot, axis=0)
        sums = jnp.matmul(one_hot.T, x, precision=jax.lax.Precision.HIGHEST)
        sizes = self.cluster_sizes.value
        new_sizes = self.decay * sizes + (1.0 - self.decay) * counts
        safe_sizes = jnp.where(new_sizes > 0, new_sizes, 1.0)
        step = (1.0 - self.decay) * (sums - counts[:, None] * centers) / safe_sizes[:, None]
        new_centers = centers + jnp.where(counts[:, None] > 0, step, 0.0)
        if self.restart_after is not None:
            new_centers, new_sizes = self._restart(x, chosen, counts, centers, new_centers, new_sizes)
        self.cluster_sizes.value = new_sizes
        self.centers.value = new_centers
        return new_centers

    def _restart(self, x, chosen, counts, centers, new_centers, new_sizes):
        """Re-seed the longest idle due code at the batch's point farthest from its center."""
        idle = jnp.where(counts > 0, 0, self.unused_steps.value + 1)
        if x.shape[0] == 0:
            self.unused_steps.value = idle
            return new_centers, new_sizes
        due = idle >= self.restart_after
        # argmax, not a sort: the first (lowest-index) of the longest idle codes.
        take = due & jax.nn.one_hot(jnp.argmax(jnp.where(due, idle, -1)), self.num_codes, dtype=bool)
        diff = x - centers[chosen]
        point = x[jnp.argmax(jnp.sum(diff * diff, axis=-1))]
        self.unused_steps.value = jnp.where(take, 0, idle)
        return (jnp.where(take[:, None], point, new_centers),
                jnp.where(take, jnp.ones_like(new_sizes), new_sizes))
