# Copyright 2026 The braintrace authors. Licensed under the Apache License, Version 2.0.
"""Input wrappers that turn one learner call into a window of several time steps.

``learner(MultiStepData(xs))`` runs ``len(xs)`` steps in one call (time on the leading
axis of every leaf of ``xs``); ``SingleStepData(x)`` marks an input that is the same at
every step of such a window. Both are JAX pytrees, so they pass through ``jit``, ``scan``
and ``vmap`` unchanged.
"""

from __future__ import annotations

import jax

from .._array_repr import describe_tree

__all__ = ["SingleStepData", "MultiStepData", "is_step_data"]


class _StepData:
    """A pytree holding one input (any pytree) of a learner call."""

    __slots__ = ("data",)

    def __init__(self, data):
        if isinstance(data, _StepData):
            raise TypeError(
                f"{type(self).__name__} wraps the input itself; got an already wrapped "
                f"{type(data).__name__}. Wrap the bare array (or pytree) once."
            )
        self.data = data

    def tree_flatten(self):
        return (self.data,), None

    @classmethod
    def tree_unflatten(cls, aux_data, children):
        obj = object.__new__(cls)
        obj.data = children[0]
        return obj

    def __repr__(self) -> str:
        return f"{type(self).__name__}({describe_tree(self.data)})"


@jax.tree_util.register_pytree_node_class
class SingleStepData(_StepData):
    """An input that is the same at every step of a window.

    Parameters
    ----------
    data : pytree
        One step's input (the shape the learner was compiled with).

    Examples
    --------
    >>> import jax, jax.numpy as jnp
    >>> from braintrace.algorithms.inputs import SingleStepData
    >>> leaves, treedef = jax.tree.flatten(SingleStepData(jnp.ones(3)))
    >>> len(leaves), type(jax.tree.unflatten(treedef, leaves)).__name__
    (1, 'SingleStepData')
    """


@jax.tree_util.register_pytree_node_class
class MultiStepData(_StepData):
    """A time-major input: a learner call with it runs one step per leading index.

    Parameters
    ----------
    data : pytree
        Every leaf has the window length ``k`` as its leading axis, followed by one step's
        shape.

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> import braintrace
    >>> learner = braintrace.compile(braintrace.nn.GRUCell(2, 3), 'd_rtrl', jnp.zeros(2),
    ...                              vjp_method='multi-step')
    >>> learner(braintrace.MultiStepData(jnp.ones((4, 2)))).shape   # four steps in one call
    (4, 3)
    """


def is_step_data(value) -> bool:
    """True for a :class:`SingleStepData` or :class:`MultiStepData` wrapper."""
    return isinstance(value, _StepData)
