# Copyright 2026 The braintrace authors. Licensed under the Apache License, Version 2.0.
"""Where a :class:`CodingLayer` keeps its latest trace: a state of fixed structure.

``brainstate.transform.jit`` carries state values in and out of the compiled step and
recompiles when a state's pytree structure or leaf shapes change; an online learner feeds
a compiled jaxpr with the state's leaves and needs their number to stay fixed. So the slot
always holds a :class:`TraceSlot`:

- ``trace``: a :class:`CodingTrace`, from construction on (zeros of placeholder shapes
  until the first coded call; clearing the cache only lowers ``valid``);
- ``valid``: a boolean leaf, false while the cache is empty;
- ``active``: static (part of the tree structure), mirroring the layer's coding switch, so
  that flipping the switch makes ``brainstate.transform.jit`` retrace.

The number of leaves never changes. The shapes are fitted to the first coded call (and
refitted if the activation shape changes) by :meth:`TraceSlotState.fit` just before the
slot is written, so even a first call made under ``jit``, or inside an online learner's
compilation, compiles once.
"""

from __future__ import annotations

from typing import Any

import brainstate
import jax
import numpy as np

from .._errors import NotSupportedError
from ._refit import RefitMixin
from .coding_trace import CodingTrace
from .soft_code import SoftCode

__all__ = ["TraceSlot", "TraceSlotState", "placeholder_trace", "zeros_like"]


def zeros_like(tree: Any) -> Any:
    """NumPy zeros with the shapes and dtypes of the leaves of ``tree`` (arrays or abstract)."""
    return jax.tree.map(lambda leaf: np.zeros(leaf.shape, leaf.dtype), tree)


def placeholder_trace(num_codes: int, code_dim: int) -> CodingTrace:
    """A zero :class:`CodingTrace` of one position: ``reduced (code_dim,)``, ``probs (num_codes,)``."""
    scalar = np.zeros((), np.float32)
    index = np.zeros((), np.int32)
    code = SoftCode(np.zeros((num_codes,), np.float32), best_length=scalar, entropy=scalar,
                    best_indices=index, combined_surprise=scalar)
    return CodingTrace(np.zeros((code_dim,), np.float32), {}, nearest_center_distances=scalar,
                       chosen_center_indices=index, commitment_distances=scalar, soft_code=code)


@jax.tree_util.register_pytree_node_class
class TraceSlot:
    """``(trace, valid)`` leaves with the coding switch ``active`` as static data."""

    __slots__ = ("trace", "valid", "active")

    def __init__(self, trace: CodingTrace, valid: Any, active: bool) -> None:
        self.trace = trace
        self.valid = valid
        self.active = bool(active)

    def tree_flatten(self):
        return (self.trace, self.valid), self.active

    @classmethod
    def tree_unflatten(cls, active, children):
        return cls(children[0], children[1], active)

    def __repr__(self) -> str:
        return f"TraceSlot(trace={self.trace!r}, active={self.active})"


class TraceSlotState(RefitMixin, brainstate.ShortTermState):
    """A non-trainable state holding a :class:`TraceSlot`.

    Parameters
    ----------
    template : CodingTrace
        Gives the structure (and initial shapes) of the slot; its values are not kept.
    active : bool
        Initial state of the coding switch.
    """

    def __init__(self, template: CodingTrace, active: bool = True) -> None:
        super().__init__(TraceSlot(zeros_like(template), np.False_, active))

    def _write_value(self, v: Any) -> None:
        # Until its first fit the slot holds placeholder shapes; only a fitted slot may be
        # copied per lane (a vmap=True learner does that before the model ever runs).
        if "_superseded" not in vars(self) and isinstance(v, TraceSlot) and not self._same_shapes(v.trace):
            raise NotSupportedError(
                "This CodingLayer's trace shapes are set by its first coded call, and a vmap=True "
                "online learner copies every state per lane before the model ever runs. Call the "
                "model once (or `CodingLayer.fit_trace(example_output)`) before compiling the learner, "
                "or compile it in batched mode (without `vmap=True`)."
            )
        super()._write_value(v)

    def _same_shapes(self, trace: Any) -> bool:
        current = jax.tree.leaves(self._value.trace)
        leaves = jax.tree.leaves(trace)
        return len(current) == len(leaves) and all(
            np.shape(a) == np.shape(b) for a, b in zip(current, leaves, strict=True))

    def fits(self, trace: CodingTrace) -> bool:
        """Whether ``trace`` has the slot's structure, shapes and dtypes (no read is recorded)."""
        current_leaves, current_def = jax.tree.flatten(self._value.trace)
        leaves, treedef = jax.tree.flatten(trace)
        return current_def == treedef and all(
            a.shape == b.shape and a.dtype == b.dtype for a, b in zip(current_leaves, leaves, strict=True)
        )

    def fit(self, trace: CodingTrace) -> None:
        """Give the slot the structure and shapes of ``trace``, filled with zeros and not valid.

        Called just before the slot is written: the zeros then stand for the value the slot
        had before any enclosing trace began, so the traced step reads and writes a state of
        one shape. This is the one place that sets the value without recording it; a snapshot
        of the old value written back later (by a tracer restoring states) is ignored.
        """
        self.refit(TraceSlot(zeros_like(trace), np.False_, self._value.active))
