# Copyright 2026 The braintrace authors. Licensed under the Apache License, Version 2.0.
"""Resolve a cell's ``activation`` argument (a name or a callable) to a function."""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

__all__ = ["ACTIVATIONS", "resolve_activation"]


def _identity(x):
    return x


def _tanhshrink(x):
    return x - jnp.tanh(x)


ACTIVATIONS: dict[str, Callable] = {
    "celu": jax.nn.celu,
    "elu": jax.nn.elu,
    "gelu": jax.nn.gelu,
    "hard_sigmoid": jax.nn.hard_sigmoid,
    "hard_silu": jax.nn.hard_silu,
    "hard_swish": jax.nn.hard_swish,
    "hard_tanh": jax.nn.hard_tanh,
    "identity": _identity,
    "leaky_relu": jax.nn.leaky_relu,
    "linear": _identity,
    "log_sigmoid": jax.nn.log_sigmoid,
    "mish": jax.nn.mish,
    "relu": jax.nn.relu,
    "relu6": jax.nn.relu6,
    "selu": jax.nn.selu,
    "sigmoid": jax.nn.sigmoid,
    "silu": jax.nn.silu,
    "soft_sign": jax.nn.soft_sign,
    "softplus": jax.nn.softplus,
    "softsign": jax.nn.soft_sign,
    "sparse_plus": jax.nn.sparse_plus,
    "swish": jax.nn.swish,
    "tanh": jnp.tanh,
    "tanhshrink": _tanhshrink,
}
"""Activation names accepted by the recurrent cells (the ``jax.nn`` functions of the same name)."""


def resolve_activation(activation: str | Callable, owner: str) -> Callable:
    """Return the element-wise function named by ``activation``, or ``activation`` itself.

    Parameters
    ----------
    activation : str or callable
        A name from :data:`ACTIVATIONS` (``'tanh'``, ``'relu'``, ...) or a callable.
    owner : str
        The layer the argument belongs to, named in the error message.

    Raises
    ------
    ValueError
        For an unknown name (the message lists the known names).
    TypeError
        For anything that is neither a string nor callable.

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> from braintrace.nn._activation import resolve_activation
    >>> resolve_activation('tanh', 'GRUCell') is jnp.tanh
    True
    """
    if isinstance(activation, str):
        try:
            return ACTIVATIONS[activation]
        except KeyError:
            raise ValueError(
                f"`{owner}`: unknown `activation` name {activation!r}; known names are "
                f"{', '.join(sorted(ACTIVATIONS))} (or pass a callable)."
            ) from None
    if not callable(activation):
        raise TypeError(
            f"`{owner}`: `activation` must be a name or a callable; got {type(activation).__name__}."
        )
    return activation
