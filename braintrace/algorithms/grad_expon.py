# Copyright 2026 The braintrace authors. Licensed under the Apache License, Version 2.0.
"""GradExpon: an exponentially decaying accumulator of gradients, ``ḡ ← α ḡ + g``."""

from __future__ import annotations

import math
import numbers

import jax
import jax.numpy as jnp

__all__ = ["GradExpon"]


def _decay_of(tau_or_decay) -> float:
    if isinstance(tau_or_decay, bool) or not isinstance(tau_or_decay, numbers.Real):
        raise ValueError(f"`tau_or_decay` must be a decay in [0, 1) or a time constant >= 1 (in steps); got "
                         f"{tau_or_decay!r}.")
    value = float(tau_or_decay)
    if 0.0 <= value < 1.0:
        return value
    if value >= 1.0:
        return math.exp(-1.0 / value)
    raise ValueError(f"`tau_or_decay` must be a decay in [0, 1) or a time constant >= 1 (in steps); got {value!r}.")


def _zeros_like_shape(grad_shape):
    if isinstance(grad_shape, (tuple, list)) and all(isinstance(n, numbers.Integral) for n in grad_shape):
        return jnp.zeros(tuple(int(n) for n in grad_shape), jnp.float32)
    return jax.tree.map(lambda a: jnp.zeros(jnp.shape(a), jnp.result_type(a)), grad_shape)


class GradExpon:
    """Low-pass filter of a gradient stream: ``ḡ_t = α ḡ_{t-1} + g_t``.

    Online rules give one noisy gradient per step; this keeps their exponentially weighted
    sum (the effective window is ``1 / (1 - α)`` steps).

    Parameters
    ----------
    grad_shape : tuple of int or pytree of arrays
        The shape of one gradient, or a pytree shaped like the gradients (e.g. the dict an
        ``etrace_grad`` returns).
    tau_or_decay : float
        The decay ``α`` in [0, 1), or a time constant ``τ >= 1`` in steps, giving
        ``α = exp(-1/τ)``.

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> from braintrace.algorithms.grad_expon import GradExpon
    >>> f = GradExpon((2,), 0.5)
    >>> f.update(jnp.ones(2))
    Array([1., 1.], dtype=float32)
    >>> f.update(jnp.ones(2))
    Array([1.5, 1.5], dtype=float32)
    >>> round(GradExpon((2,), 10.0).decay, 4)
    0.9048
    """

    def __init__(self, grad_shape, tau_or_decay):
        self.decay = _decay_of(tau_or_decay)
        self._zeros = _zeros_like_shape(grad_shape)
        self.value = self._zeros

    def update(self, grad):
        """Add ``grad`` to the decayed accumulator and return the new value."""
        if jax.tree.structure(grad) != jax.tree.structure(self.value):
            raise ValueError(f"the gradient has tree structure {jax.tree.structure(grad)}; this GradExpon holds "
                             f"{jax.tree.structure(self.value)}.")
        self.value = jax.tree.map(lambda v, g: (self.decay * v + g).astype(v.dtype), self.value, grad)
        return self.value

    def reset(self) -> None:
        """Zero the accumulator."""
        self.value = self._zeros

    def __repr__(self) -> str:
        return f"GradExpon(decay={self.decay})"
