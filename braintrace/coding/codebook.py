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
chosen stays where it is.
"""

from __future__ import annotations

import math
from typing import Literal

import brainstate
import jax
import jax.numpy as jnp

from .soft_assign import squared_distances

__all__ = ["Codebook", "CodebookState"]

_INITS = ("uniform", "normal")
_UPDATES = ("none", "ema")


class CodebookState(brainstate.LongTermState):
    """A codebook quantity (centers, running cluster sizes): long-lived, never trained by gradient.

    Examples
    --------
    >>> import brainstate, jax.numpy as jnp
    >>> from braintrace.coding import CodebookState
    >>> state = CodebookState(jnp.zeros((4, 2)))
    >>> isinstance(state, brainstate.ParamState)
    False
    """


class Codebook(brainstate.nn.Module):
    """``K`` code centers of dimension ``code_dim`` with an optional online EMA update.

    Parameters
    ----------
    K : int
        Number of codes, ``>= 1``.
    code_dim : int
        Dimension ``D`` of each center, ``>= 1``.
    init : {'uniform', 'normal'}
        Initial centers: ``U(-1, 1)`` or ``N(0, 1)`` entries, scaled by ``1 / sqrt(code_dim)``.
    seed : int
        Seed of the initial centers.
    update : {'none', 'ema'}
        The rule applied by :meth:`update`: nothing, or one EMA k-means step.
    decay : float
        EMA decay ``γ`` in ``(0, 1)`` (used by ``update='ema'``).
    dtype : dtype
        Dtype of the centers.
    name : str, optional
        Module name.

    Raises
    ------
    ValueError
        For a non-positive ``K`` or ``code_dim``, an unknown ``init``/``update``, or a
        ``decay`` outside ``(0, 1)``.

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
    """

    def __init__(
        self,
        K: int,
        code_dim: int,
        *,
        init: Literal["uniform", "normal"] = "uniform",
        seed: int = 0,
        update: Literal["none", "ema"] = "none",
        decay: float = 0.99,
        dtype=jnp.float32,
        name: str | None = None,
    ) -> None:
        super().__init__(name=name)
        if int(K) != K or K < 1:
            raise ValueError(f"`K` must be a positive integer; got {K!r}.")
        if int(code_dim) != code_dim or code_dim < 1:
            raise ValueError(f"`code_dim` must be a positive integer; got {code_dim!r}.")
        if init not in _INITS:
            raise ValueError(f"`init` must be one of {_INITS}; got {init!r}.")
        if update not in _UPDATES:
            raise ValueError(f"`update` must be one of {_UPDATES}; got {update!r}.")
        if not 0.0 < float(decay) < 1.0:
            raise ValueError(f"`decay` must lie in (0, 1); got {decay!r}.")
        self.num_codes = int(K)
        self.code_dim = int(code_dim)
        self.init = init
        self.update_rule = update
        self.decay = float(decay)
        key = jax.random.PRNGKey(seed)
        shape = (self.num_codes, self.code_dim)
        if init == "uniform":
            raw = jax.random.uniform(key, shape, dtype, minval=-1.0, maxval=1.0)
        else:
            raw = jax.random.normal(key, shape, dtype)
        self.centers = CodebookState(raw / math.sqrt(self.code_dim))
        if update == "ema":
            self.cluster_sizes = CodebookState(jnp.ones((self.num_codes,), dtype))

    @property
    def K(self) -> int:
        """Number of codes."""
        return self.num_codes

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
        centers = self.centers.value
        if self.update_rule == "none":
            return centers
        x = jax.lax.stop_gradient(jnp.asarray(reduced)).astype(centers.dtype)
        if chosen_indices is None:
            chosen_indices = jnp.argmin(squared_distances(x, centers), axis=-1)
        x = x.reshape(-1, self.code_dim)
        one_hot = jax.nn.one_hot(jnp.reshape(chosen_indices, (-1,)), self.num_codes, dtype=centers.dtype)
        counts = jnp.sum(one_hot, axis=0)
        sums = jnp.matmul(one_hot.T, x, precision=jax.lax.Precision.HIGHEST)
        sizes = self.cluster_sizes.value
        new_sizes = self.decay * sizes + (1.0 - self.decay) * counts
        safe_sizes = jnp.where(new_sizes > 0, new_sizes, 1.0)
        step = (1.0 - self.decay) * (sums - counts[:, None] * centers) / safe_sizes[:, None]
        new_centers = centers + jnp.where(counts[:, None] > 0, step, 0.0)
        self.cluster_sizes.value = new_sizes
        self.centers.value = new_centers
        return new_centers
