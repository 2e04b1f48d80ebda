# Copyright 2026 The braintrace authors. Licensed under the Apache License, Version 2.0.
"""``CodingTrace``: everything computed when one activation is coded.

It records the reduced activity, how it was reduced, the hard choice and its distances,
and the :class:`SoftCode`. It is a JAX pytree whose leaves are the arrays; the reduction
metadata is static (part of the tree structure), so it must hold plain Python values
(strings, numbers, tuples). Lists in the metadata come back as tuples after a trip through
``jit``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import jax

from .._array_repr import describe_value
from .soft_code import SoftCode, as_array

__all__ = ["CodingTrace"]

_ARRAY_FIELDS = ("reduced", "nearest_center_distances", "chosen_center_indices", "commitment_distances")


class _FrozenMapping(tuple):
    """Sorted ``(key, frozen value)`` items of a metadata mapping."""


class _FrozenSequence(tuple):
    """Frozen items of a metadata list or tuple."""


class _Unhashable(str):
    """The ``repr`` of a metadata value that cannot be hashed."""


def _freeze(value: Any) -> Any:
    """A hashable stand-in for a metadata value (JAX hashes and compares tree structures)."""
    if isinstance(value, Mapping):
        return _FrozenMapping(sorted((str(k), _freeze(v)) for k, v in value.items()))
    if isinstance(value, (list, tuple)):
        return _FrozenSequence(_freeze(v) for v in value)
    try:
        hash(value)
    except TypeError:
        return _Unhashable(repr(value))
    return value


def _thaw(value: Any) -> Any:
    if isinstance(value, _FrozenMapping):
        return {k: _thaw(v) for k, v in value}
    if isinstance(value, _FrozenSequence):
        return tuple(_thaw(v) for v in value)
    if isinstance(value, _Unhashable):
        return str(value)
    return value


@jax.tree_util.register_pytree_node_class
@dataclasses.dataclass(frozen=True, eq=False, repr=False)
class CodingTrace:
    """The coding statistics of one activation.

    Parameters
    ----------
    reduced : jax.Array
        The activity that was coded, shape ``(..., D)``.
    reduction_meta : Mapping
        How ``reduced`` was obtained, e.g. ``{"method": "identity"}``; plain Python values.
    nearest_center_distances : jax.Array
        Squared Euclidean distance to the chosen center (the seed's definition, the same
        value as ``commitment_distances``), shape ``(...)``.
    chosen_center_indices : jax.Array
        Index of the chosen (nearest) center, shape ``(...)``, integer dtype.
    commitment_distances : jax.Array
        Squared distance to the chosen center, shape ``(...)``.
    soft_code : SoftCode
        The soft assignment, ``probs`` of shape ``(..., K)``.

    Raises
    ------
    TypeError
        If ``soft_code`` is not a :class:`SoftCode` or ``reduction_meta`` not a mapping.
    ValueError
        If a per-position field does not have the leading shape of ``soft_code``.

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> from braintrace.coding import CodingTrace, soft_assign
    >>> x = jnp.zeros((5, 2))
    >>> code, inter = soft_assign(x, jnp.eye(2))
    >>> trace = CodingTrace(x, {"method": "identity"}, soft_code=code, **inter)
    >>> trace.chosen_center_indices.shape
    (5,)
    >>> trace  # doctest: +ELLIPSIS
    CodingTrace(reduced=Array(shape=(5, 2), dtype=float32), reduction_meta={'method': 'identity'},
                nearest_center_distances=Array(shape=(5,), dtype=float32), ...,
                soft_code=SoftCode(probs=Array(shape=(5, 2), dtype=float32), ...))
    """

    reduced: Any
    reduction_meta: Mapping[str, Any]
    nearest_center_distances: Any
    chosen_center_indices: Any
    commitment_distances: Any
    soft_code: SoftCode

    def __post_init__(self) -> None:
        if not isinstance(self.soft_code, SoftCode):
            raise TypeError(f"`soft_code` must be a SoftCode; got {type(self.soft_code).__name__}.")
        if not isinstance(self.reduction_meta, Mapping):
            raise TypeError(f"`reduction_meta` must be a mapping; got {type(self.reduction_meta).__name__}.")
        object.__setattr__(self, "reduction_meta", dict(self.reduction_meta))
        for name in _ARRAY_FIELDS:
            object.__setattr__(self, name, as_array(getattr(self, name)))
        leading = self.soft_code.leading_shape
        for name in ("nearest_center_distances", "chosen_center_indices", "commitment_distances"):
            shape = tuple(getattr(self, name).shape)
            if shape != leading:
                raise ValueError(
                    f"`{name}` must have the leading shape {leading} of `soft_code.probs`; got shape {shape}."
                )
        if tuple(self.reduced.shape[:-1]) != leading:
            raise ValueError(
                f"`reduced` must have shape {leading} + (D,) to match `soft_code.probs`; "
                f"got shape {tuple(self.reduced.shape)}."
            )

    def tree_flatten(self):
        children = tuple(getattr(self, name) for name in _ARRAY_FIELDS) + (self.soft_code,)
        return children, _freeze(self.reduction_meta)

    @classmethod
    def tree_unflatten(cls, aux_data, children):
        trace = object.__new__(cls)
        for name, value in zip(_ARRAY_FIELDS, children[:-1], strict=True):
            object.__setattr__(trace, name, value)
        object.__setattr__(trace, "soft_code", children[-1])
        object.__setattr__(trace, "reduction_meta", _thaw(aux_data))
        return trace

    def __repr__(self) -> str:
        fields = ", ".join(f"{f.name}={describe_value(getattr(self, f.name))}" for f in dataclasses.fields(self))
        return f"{type(self).__name__}({fields})"
