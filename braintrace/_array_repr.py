# Copyright 2026 The braintrace authors. Licensed under the Apache License, Version 2.0.
"""Short, value-free text for arrays inside container ``repr``s.

Result containers (coding statistics, per-step algorithm quantities) hold large arrays (and, under ``jit``, tracers). Their
``repr`` shows each array as ``Array(shape=..., dtype=...)`` and never its values, so
logs stay readable and printing never forces a device transfer.
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np

__all__ = ["describe_value", "describe_tree"]

_ARRAY_TYPES = (jax.Array, jax.ShapeDtypeStruct, np.ndarray, np.generic)


def describe_value(value: Any) -> str:
    """``Array(shape=(2, 3), dtype=float32)`` for an array or tracer, ``repr`` otherwise."""
    if isinstance(value, _ARRAY_TYPES):
        return f"Array(shape={tuple(value.shape)}, dtype={value.dtype})"
    return repr(value)


def describe_tree(tree: Any) -> str:
    """A pytree with every array replaced by its shape and dtype."""
    described = jax.tree.map(lambda leaf: _Described(describe_value(leaf)), tree)
    return repr(described)


class _Described:
    __slots__ = ("text",)

    def __init__(self, text: str):
        self.text = text

    def __repr__(self) -> str:
        return self.text
