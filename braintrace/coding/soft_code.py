# Copyright 2026 The braintrace authors. Licensed under the Apache License, Version 2.0.
"""``SoftCode``: a soft assignment of activity to the ``K`` codes of a codebook.

``probs`` has shape ``(..., K)``: any leading shape (a batch, time and batch, spatial
positions) followed by the code axis. The optional per-position statistics all have the
leading shape ``probs.shape[:-1]``. The container is a JAX pytree, so it passes through
``jit``, ``vmap`` and ``lax.scan``; construction checks shapes and dtypes only, never
values, so it also works on tracers.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp

from .._array_repr import describe_value

__all__ = ["SoftCode", "as_array"]

_OPTIONAL_FIELDS = ("best_length", "entropy", "best_indices", "combined_surprise")


def as_array(value: Any) -> Any:
    """``value`` itself if it is a JAX array, tracer or shape struct, else ``jnp.asarray(value)``."""
    if isinstance(value, (jax.Array, jax.ShapeDtypeStruct)):
        return value
    return jnp.asarray(value)


@jax.tree_util.register_pytree_node_class
@dataclasses.dataclass(frozen=True, eq=False, repr=False)
class SoftCode:
    """Probabilities over ``K`` codes, with optional per-position statistics.

    Parameters
    ----------
    probs : jax.Array
        Shape ``(..., K)`` with ``K >= 1``; the probability of each code.
    best_length : jax.Array, optional
        Shape ``probs.shape[:-1]``; the code length ``-log p`` of the best code.
    entropy : jax.Array, optional
        Shape ``probs.shape[:-1]``; the entropy of the assignment.
    best_indices : jax.Array, optional
        Shape ``probs.shape[:-1]``, integer dtype; the index of the best code.
    combined_surprise : jax.Array, optional
        Shape ``probs.shape[:-1]``; a weighted sum of surprise terms.

    Raises
    ------
    ValueError
        If ``probs`` is 0-d or has an empty code axis, or an optional field does not have
        the leading shape of ``probs``.
    TypeError
        If ``best_indices`` does not have an integer dtype.

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> from braintrace.coding import SoftCode
    >>> code = SoftCode(jnp.full((2, 3, 4), 0.25), entropy=jnp.zeros((2, 3)))
    >>> code.leading_shape, code.code_dim
    ((2, 3), 4)
    >>> code
    SoftCode(probs=Array(shape=(2, 3, 4), dtype=float32), best_length=None,
             entropy=Array(shape=(2, 3), dtype=float32), best_indices=None, combined_surprise=None)
    """

    probs: Any
    best_length: Any = None
    entropy: Any = None
    best_indices: Any = None
    combined_surprise: Any = None

    def __post_init__(self) -> None:
        probs = as_array(self.probs)
        if probs.ndim < 1:
            raise ValueError(
                "`probs` must have shape (..., K) with at least one axis; got a 0-d array. "
                "Add a code axis, e.g. `probs[None]`."
            )
        if probs.shape[-1] < 1:
            raise ValueError(f"`probs` must have at least one code on its last axis; got shape {probs.shape}.")
        object.__setattr__(self, "probs", probs)
        leading = tuple(probs.shape[:-1])
        for name in _OPTIONAL_FIELDS:
            value = getattr(self, name)
            if value is None:
                continue
            value = as_array(value)
            if tuple(value.shape) != leading:
                raise ValueError(
                    f"`{name}` must have the leading shape of `probs` {leading} "
                    f"(probs has shape {tuple(probs.shape)}); got shape {tuple(value.shape)}."
                )
            object.__setattr__(self, name, value)
        if self.best_indices is not None and not jnp.issubdtype(self.best_indices.dtype, jnp.integer):
            raise TypeError(
                f"`best_indices` must have an integer dtype; got {self.best_indices.dtype}. "
                "Use `jnp.argmax(probs, -1)` or cast with `.astype(jnp.int32)`."
            )

    @property
    def leading_shape(self) -> tuple[int, ...]:
        """The shape before the code axis, ``probs.shape[:-1]``."""
        return tuple(self.probs.shape[:-1])

    @property
    def code_dim(self) -> int:
        """The number of codes ``K``."""
        return int(self.probs.shape[-1])

    def tree_flatten(self):
        return (self.probs, *(getattr(self, name) for name in _OPTIONAL_FIELDS)), None

    @classmethod
    def tree_unflatten(cls, aux_data, children):
        # JAX rebuilds pytrees with placeholder leaves (``object()``, ``None``, abstract
        # values); validation belongs to user construction only.
        code = object.__new__(cls)
        for field, value in zip(("probs", *_OPTIONAL_FIELDS), children, strict=True):
            object.__setattr__(code, field, value)
        return code

    def __repr__(self) -> str:
        fields = ", ".join(f"{f.name}={describe_value(getattr(self, f.name))}" for f in dataclasses.fields(self))
        return f"{type(self).__name__}({fields})"
