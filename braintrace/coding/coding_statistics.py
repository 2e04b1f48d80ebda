# Copyright 2026 The braintrace authors. Licensed under the Apache License, Version 2.0.
"""``coding_statistics``: the pure function behind every coding observer.

Given the values of a hidden quantity and a codebook's centers, it reduces the values,
softly assigns them to the centers and packs the result into a :class:`CodingTrace`.
Gradients are stopped at its inputs, so calling it inside a training step never changes
what is learned. :class:`CodingLayer` calls it on a wrapped module's output; a monitor
of an online learner can call it once per hidden group.
"""

from __future__ import annotations

from typing import Any

import jax

from .coding_trace import CodingTrace
from .reducers import Reducer, resolve_reducer
from .soft_assign import soft_assign

__all__ = ["coding_statistics"]


def coding_statistics(
    hidden_values: Any,
    codebook_centers: jax.Array,
    *,
    reducer: str | Reducer | None = None,
    temperature: float = 1.0,
    eps: float = 1e-12,
    beta_length: float = 1.0,
    beta_entropy: float = 1.0,
    beta_distance: float = 0.0,
) -> CodingTrace:
    """Code ``hidden_values`` against ``codebook_centers`` without touching gradients.

    Parameters
    ----------
    hidden_values : jax.Array or pytree
        The observed values; with the default reducer an array ``(..., D)``.
    codebook_centers : jax.Array
        Centers of shape ``(K, D)``, e.g. ``codebook.centers.value``.
    reducer : str or callable, optional
        ``None``/``'identity'``, ``'spatial_mean'`` or a callable ``x -> (reduced, meta)``;
        see :mod:`braintrace.coding.reducers`.
    temperature, eps, beta_length, beta_entropy, beta_distance : float
        As in :func:`soft_assign`.

    Returns
    -------
    CodingTrace
        The reduced values, the reducer's metadata, the hard choice and the soft code.

    Raises
    ------
    ValueError
        If the reduced values do not have ``D`` features, or a setting is invalid.

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> from braintrace.coding import Codebook, coding_statistics
    >>> book = Codebook(8, 3)
    >>> trace = coding_statistics(jnp.ones((4, 3)), book.centers.value, temperature=0.5)
    >>> trace.soft_code.probs.shape, trace.reduction_meta
    ((4, 8), {'method': 'identity'})
    """
    values = jax.tree.map(jax.lax.stop_gradient, hidden_values)
    centers = jax.lax.stop_gradient(codebook_centers)
    reduced, meta = resolve_reducer(reducer)(values)
    code, intermediates = soft_assign(
        reduced,
        centers,
        temperature=temperature,
        eps=eps,
        beta_length=beta_length,
        beta_entropy=beta_entropy,
        beta_distance=beta_distance,
    )
    return CodingTrace(reduced, meta, soft_code=code, **intermediates)
