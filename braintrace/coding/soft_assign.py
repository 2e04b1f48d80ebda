# Copyright 2026 The braintrace authors. Licensed under the Apache License, Version 2.0.
"""Soft assignment of reduced activity to codebook centers.

For activity ``x`` of shape ``(..., D)`` and centers ``c`` of shape ``(K, D)``:

- ``d_k = ||x - c_k||²`` (squared Euclidean distance, computed from differences, so it is
  exact near a center and never negative);
- ``p = softmax(-d / max(temperature, eps))``;
- the best code is ``argmin_k d_k`` (the first one on ties);
- ``best_length = -log(p_best + eps)`` and ``entropy = -Σ_k p_k log(p_k + eps)`` (nats);
- ``combined_surprise = β_L · best_length + β_H · entropy + β_D · log1p(d_best)``;
- ``nearest_center_distances`` and ``commitment_distances`` are both ``d_best``, the
  *squared* distance to the chosen center, as the seed (nervecode) defines them.

Statistics are computed in at least ``float32``. Nothing here stops gradients; callers
that observe a model (``CodingLayer``, ``coding_statistics``) pass stop-gradient values.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import jax.numpy as jnp

from .soft_code import SoftCode

__all__ = ["SoftAssignment", "soft_assign", "squared_distances"]


def _check_positive_finite(name: str, value: Any) -> None:
    if isinstance(value, jax.core.Tracer):
        return  # only its shape is known while tracing
    number = float(value)
    if not math.isfinite(number) or number <= 0.0:
        raise ValueError(f"`{name}` must be a finite number > 0; got {value!r}.")


def _check_finite(name: str, value: Any) -> None:
    if isinstance(value, jax.core.Tracer):
        return
    if not math.isfinite(float(value)):
        raise ValueError(f"`{name}` must be a finite number; got {value!r}.")


def squared_distances(reduced: jax.Array, centers: jax.Array) -> jax.Array:
    """Squared Euclidean distances ``(..., K)`` from ``reduced (..., D)`` to ``centers (K, D)``.

    Raises
    ------
    ValueError
        If ``centers`` is not 2-D, ``reduced`` is 0-d, or their last axes differ.

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> from braintrace.coding import squared_distances
    >>> squared_distances(jnp.array([1.0, 0.0]), jnp.array([[0.0, 0.0], [1.0, 2.0]]))
    Array([1., 4.], dtype=float32)
    """
    reduced = jnp.asarray(reduced)
    centers = jnp.asarray(centers)
    if centers.ndim != 2:
        raise ValueError(f"`centers` must have shape (K, D); got shape {centers.shape}.")
    if reduced.ndim < 1:
        raise ValueError("`reduced` must have shape (..., D) with at least one axis; got a 0-d array.")
    if reduced.shape[-1] != centers.shape[-1]:
        raise ValueError(
            f"The last axis of `reduced` {reduced.shape} must match the code dimension of "
            f"`centers` {centers.shape} (D = {centers.shape[-1]}). Reduce or project the "
            "activity to D features first."
        )
    dtype = jnp.result_type(reduced.dtype, centers.dtype, jnp.float32)
    diff = reduced.astype(dtype)[..., None, :] - centers.astype(dtype)
    return jnp.sum(diff * diff, axis=-1)


def soft_assign(
    reduced: jax.Array,
    centers: jax.Array,
    *,
    temperature: float = 1.0,
    eps: float = 1e-12,
    beta_length: float = 1.0,
    beta_entropy: float = 1.0,
    beta_distance: float = 0.0,
) -> tuple[SoftCode, dict[str, jax.Array]]:
    """Softly assign ``reduced (..., D)`` to ``centers (K, D)``.

    Parameters
    ----------
    reduced : jax.Array
        Activity with any leading shape and ``D`` features on the last axis.
    centers : jax.Array
        Codebook centers, shape ``(K, D)``.
    temperature : float
        Softmax temperature (higher is softer); must be finite and > 0.
    eps : float
        Floor of the temperature and offset inside the logarithms; finite and > 0.
    beta_length, beta_entropy, beta_distance : float
        Weights of the code length, the entropy and ``log1p`` of the nearest squared
        distance in ``combined_surprise``.

    Returns
    -------
    soft_code : SoftCode
        ``probs (..., K)`` with ``best_length``, ``entropy``, ``best_indices`` and
        ``combined_surprise`` of shape ``(...)``.
    intermediates : dict
        ``nearest_center_distances`` and ``commitment_distances`` (both the *squared*
        Euclidean distance ``d_best`` to the best center, as in the seed's definition; take
        ``jnp.sqrt`` for the Euclidean distance) and ``chosen_center_indices`` (the best
        index), each of shape ``(...)``.

    Raises
    ------
    ValueError
        If ``centers`` is not 2-D, the feature axes differ, or ``temperature``/``eps`` is
        not a finite positive number.

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> from braintrace.coding import soft_assign
    >>> centers = jnp.array([[0.0, 0.0], [3.0, 4.0]])
    >>> code, inter = soft_assign(jnp.array([[0.0, 2.0], [3.0, 3.0]]), centers)
    >>> code.best_indices
    Array([0, 1], dtype=int32)
    >>> inter["commitment_distances"], inter["nearest_center_distances"]
    (Array([4., 1.], dtype=float32), Array([4., 1.], dtype=float32))
    >>> code.probs.sum(-1)
    Array([1., 1.], dtype=float32)
    """
    _check_positive_finite("temperature", temperature)
    _check_positive_finite("eps", eps)
    for name, beta in (("beta_length", beta_length), ("beta_entropy", beta_entropy),
                       ("beta_distance", beta_distance)):
        _check_finite(name, beta)
    distances = squared_distances(reduced, centers)
    tau = jnp.maximum(jnp.asarray(temperature, distances.dtype), jnp.asarray(eps, distances.dtype))
    probs = jax.nn.softmax(-distances / tau, axis=-1)
    best = jnp.argmin(distances, axis=-1)
    nearest = jnp.take_along_axis(distances, best[..., None], axis=-1)[..., 0]
    p_best = jnp.take_along_axis(probs, best[..., None], axis=-1)[..., 0]
    best_length = -jnp.log(p_best + eps)
    entropy = -jnp.sum(probs * jnp.log(probs + eps), axis=-1)
    combined = beta_length * best_length + beta_entropy * entropy + beta_distance * jnp.log1p(nearest)
    code = SoftCode(probs, best_length=best_length, entropy=entropy, best_indices=best,
                    combined_surprise=combined)
    intermediates = {
        "nearest_center_distances": nearest,
        "chosen_center_indices": best,
        "commitment_distances": nearest,
    }
    return code, intermediates


@dataclasses.dataclass(frozen=True)
class SoftAssignment:
    """The settings of :func:`soft_assign`, checked once and applied by calling.

    Parameters
    ----------
    temperature, eps, beta_length, beta_entropy, beta_distance : float
        As in :func:`soft_assign`.

    Raises
    ------
    ValueError
        If ``temperature`` or ``eps`` is not a finite positive number, or a ``beta`` is not
        finite.

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> from braintrace.coding import SoftAssignment
    >>> assign = SoftAssignment(temperature=0.5, beta_distance=1.0)
    >>> code, inter = assign(jnp.zeros((4, 3)), jnp.eye(3))
    >>> code.probs.shape, inter["chosen_center_indices"].shape
    ((4, 3), (4,))
    """

    temperature: float = 1.0
    eps: float = 1e-12
    beta_length: float = 1.0
    beta_entropy: float = 1.0
    beta_distance: float = 0.0

    def __post_init__(self) -> None:
        _check_positive_finite("temperature", self.temperature)
        _check_positive_finite("eps", self.eps)
        _check_finite("beta_length", self.beta_length)
        _check_finite("beta_entropy", self.beta_entropy)
        _check_finite("beta_distance", self.beta_distance)

    def __call__(self, reduced: jax.Array, centers: jax.Array) -> tuple[SoftCode, dict[str, jax.Array]]:
        """Apply :func:`soft_assign` with these settings."""
        return soft_assign(reduced, centers, **dataclasses.asdict(self))
