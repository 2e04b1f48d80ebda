# Copyright 2026 The braintrace authors. Licensed under the Apache License, Version 2.0.
"""Reducers: the view of an activation that gets coded.

A reducer is any callable ``x -> (reduced, meta)``: ``reduced`` has shape ``(..., D)`` and
``meta`` is a dict of plain Python values naming what was done (``{"method": ...}``). The
built-in ones are

- :func:`identity_reducer`: code ``(..., D)`` activity as it is (every leading position is
  a separate sample);
- :func:`spatial_mean_reducer`: global average pooling of a channel-last convolution output
  ``(B, *spatial, C) -> (B, C)``;
- :class:`RandomProjection`: a fixed Gaussian projection ``(..., D) -> (..., d)``, a
  constant of the traced step (no state);

combined with :func:`chain_reducers`. :func:`fail_open_reducer` makes a reducer that never
raises: on an error it returns the activation unchanged and says so in its metadata.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "RandomProjection",
    "Reducer",
    "chain_reducers",
    "fail_open_reducer",
    "identity_reducer",
    "resolve_reducer",
    "spatial_mean_reducer",
]

type Reducer = Callable[[Any], tuple[jax.Array, dict[str, Any]]]

_NAMED_REDUCERS = ("identity", "spatial_mean")


def identity_reducer(x: jax.Array) -> tuple[jax.Array, dict[str, Any]]:
    """Return ``x`` unchanged.

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> from braintrace.coding import identity_reducer
    >>> identity_reducer(jnp.ones((2, 3)))[1]
    {'method': 'identity'}
    """
    return x, {"method": "identity"}


def spatial_mean_reducer(x: jax.Array) -> tuple[jax.Array, dict[str, Any]]:
    """Average a channel-last ``(B, *spatial, C)`` activation over its spatial axes.

    Every axis between the first (batch) and the last (channels) is averaged, so a
    ``(B, C)`` activation passes through unchanged. An unbatched ``(H, W, C)`` activation
    would be read as ``B = H``: add the batch axis first.

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> from braintrace.coding import spatial_mean_reducer
    >>> pooled, meta = spatial_mean_reducer(jnp.ones((8, 5, 5, 16)))
    >>> pooled.shape, meta
    ((8, 16), {'method': 'spatial_mean', 'axes': (1, 2)})
    """
    x = jnp.asarray(x)
    axes = tuple(range(1, x.ndim - 1))
    return jnp.mean(x, axis=axes), {"method": "spatial_mean", "axes": axes}


class RandomProjection:
    """A fixed random projection of the last axis to ``out_dim`` features.

    The ``(D, out_dim)`` matrix has ``N(0, 1 / out_dim)`` entries drawn from ``seed``, so
    squared norms are preserved on average. It is built on first use for each input
    dimension ``D`` and enters the traced step as a constant. An input that already has
    ``out_dim`` features passes through unchanged.

    Parameters
    ----------
    out_dim : int
        Number of output features, ``>= 1``.
    seed : int
        Seed of the matrix.

    Raises
    ------
    ValueError
        At construction for ``out_dim < 1``; when called on fewer than ``out_dim`` features.

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> from braintrace.coding import RandomProjection
    >>> project = RandomProjection(4, seed=1)
    >>> reduced, meta = project(jnp.ones((3, 10)))
    >>> reduced.shape, meta
    ((3, 4), {'method': 'random_projection', 'in_dim': 10, 'out_dim': 4})
    """

    def __init__(self, out_dim: int, *, seed: int = 0) -> None:
        if int(out_dim) != out_dim or out_dim < 1:
            raise ValueError(f"`out_dim` must be a positive integer; got {out_dim!r}.")
        self.out_dim = int(out_dim)
        self.seed = int(seed)
        self._matrices: dict[int, np.ndarray] = {}

    def __repr__(self) -> str:
        return f"RandomProjection(out_dim={self.out_dim}, seed={self.seed})"

    def matrix(self, in_dim: int) -> np.ndarray:
        """The ``(in_dim, out_dim)`` projection matrix (float32)."""
        if in_dim not in self._matrices:
            rng = np.random.default_rng([self.seed, in_dim])
            values = rng.standard_normal((in_dim, self.out_dim)) / math.sqrt(self.out_dim)
            self._matrices[in_dim] = values.astype(np.float32)
        return self._matrices[in_dim]

    def __call__(self, x: jax.Array) -> tuple[jax.Array, dict[str, Any]]:
        x = jnp.asarray(x)
        in_dim = x.shape[-1] if x.ndim else 0
        if in_dim == self.out_dim:
            return x, {"method": "identity"}
        if in_dim < self.out_dim:
            raise ValueError(
                f"RandomProjection reduces the last axis to {self.out_dim} features, but the "
                f"activation has shape {x.shape}. Use a `coding_dim` no larger than {in_dim}."
            )
        matrix = jnp.asarray(self.matrix(in_dim), dtype=jnp.result_type(x.dtype, jnp.float32))
        reduced = jnp.matmul(x, matrix, precision=jax.lax.Precision.HIGHEST)
        return reduced, {"method": "random_projection", "in_dim": in_dim, "out_dim": self.out_dim}


class _ChainedReducer:
    """Reducers applied in order (built by :func:`chain_reducers`)."""

    def __init__(self, reducers: tuple[Reducer, ...]) -> None:
        self.reducers = reducers

    def __call__(self, x):
        methods, meta = [], {}
        for reducer in self.reducers:
            x, step_meta = reducer(x)
            step_meta = dict(step_meta)
            methods.append(str(step_meta.pop("method", "custom")))
            meta.update(step_meta)
        methods = [m for m in methods if m != "identity"] or ["identity"]
        return x, {"method": "+".join(methods), **meta}

    def __repr__(self) -> str:
        return f"chain_reducers({', '.join(_reducer_name(r) for r in self.reducers)})"


class _FailOpenReducer:
    """A reducer that never raises (built by :func:`fail_open_reducer`)."""

    def __init__(self, reducer: Reducer) -> None:
        self.reducer = reducer

    def __call__(self, x):
        try:
            result = self.reducer(x)
            if not (isinstance(result, tuple) and len(result) == 2 and isinstance(result[1], Mapping)):
                raise TypeError(f"a reducer must return `(reduced, meta_dict)`; got {type(result).__name__}")
            return result[0], dict(result[1])
        except Exception as exc:  # fail-open: the observed model must never break
            return x, {"method": "bypass", "reason": "reduction_error", "error": f"{type(exc).__name__}: {exc}"}

    def __repr__(self) -> str:
        return f"fail_open_reducer({_reducer_name(self.reducer)})"


def _reducer_name(reducer: Reducer) -> str:
    if isinstance(reducer, (_ChainedReducer, _FailOpenReducer, RandomProjection)):
        return repr(reducer)
    return getattr(reducer, "__qualname__", repr(reducer))


def chain_reducers(*reducers: Reducer) -> Reducer:
    """Apply reducers in order; non-identity methods are joined with ``+``, other metadata merged.

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> from braintrace.coding import RandomProjection, chain_reducers, spatial_mean_reducer
    >>> reduce = chain_reducers(spatial_mean_reducer, RandomProjection(4))
    >>> reduce
    chain_reducers(spatial_mean_reducer, RandomProjection(out_dim=4, seed=0))
    >>> reduced, meta = reduce(jnp.ones((2, 6, 6, 8)))
    >>> reduced.shape, meta["method"]
    ((2, 4), 'spatial_mean+random_projection')
    """
    if not reducers:
        return identity_reducer
    return _ChainedReducer(tuple(reducers))


def fail_open_reducer(reducer: Reducer) -> Reducer:
    """Wrap ``reducer`` so that it never raises.

    If ``reducer`` raises or does not return ``(array, mapping)``, the wrapper returns the
    activation unchanged with metadata ``{"method": "bypass", "reason": "reduction_error",
    "error": "<type>: <message>"}``.

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> from braintrace.coding import fail_open_reducer
    >>> def broken(x):
    ...     raise RuntimeError("no")
    >>> x, meta = fail_open_reducer(broken)(jnp.ones(3))
    >>> meta
    {'method': 'bypass', 'reason': 'reduction_error', 'error': 'RuntimeError: no'}
    """
    return _FailOpenReducer(reducer)


def resolve_reducer(reducer: str | Reducer | None) -> Reducer:
    """The reducer named by ``None``/``'identity'``/``'spatial_mean'``, or ``reducer`` itself.

    Raises
    ------
    ValueError
        For an unknown name.
    TypeError
        For anything that is neither a name nor callable.

    Examples
    --------
    >>> from braintrace.coding import resolve_reducer, spatial_mean_reducer
    >>> resolve_reducer("spatial_mean") is spatial_mean_reducer
    True
    """
    if reducer is None or reducer == "identity":
        return identity_reducer
    if reducer == "spatial_mean":
        return spatial_mean_reducer
    if isinstance(reducer, str):
        raise ValueError(f"Unknown reducer {reducer!r}; use one of {_NAMED_REDUCERS} or a callable.")
    if not callable(reducer):
        raise TypeError(
            f"`reducer` must be None, one of {_NAMED_REDUCERS}, or a callable "
            f"`x -> (reduced, meta_dict)`; got {type(reducer).__name__}."
        )
    return reducer
