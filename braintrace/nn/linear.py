# Copyright 2026 The braintrace authors. Licensed under the Apache License, Version 2.0.
"""Dense layer whose product goes through the trainable :func:`braintrace.matmul` op."""

from __future__ import annotations

from collections.abc import Callable

import brainstate
import jax
from brainstate.nn import init

from ..ops import matmul

__all__ = ["Linear"]


class Linear(brainstate.nn.Module):
    """Dense layer ``y = x @ W + b`` computed by the ETP op :func:`braintrace.matmul`.

    The weight and bias live in one ``ParamState`` named ``weight`` whose value is the dict
    ``{'weight': (in_size, out_size), 'bias': (out_size,)}`` (no ``'bias'`` key when
    ``bias=False``), so the compiler sees one trainable op per layer.

    Parameters
    ----------
    in_size : int
        Number of input features ``I``.
    out_size : int
        Number of output features ``O``.
    w_init : callable or array_like
        Weight initialiser (a ``brainstate.nn.init`` initialiser or an ``(I, O)`` array).
        Defaults to ``KaimingNormal()``.
    b_init : callable or array_like
        Bias initialiser, used when ``bias`` is true. Defaults to ``ZeroInit()``.
    bias : bool
        Whether the layer has a bias (default True).
    name : str, optional
        Module name.

    Examples
    --------
    >>> import brainstate
    >>> import jax.numpy as jnp
    >>> import braintrace.nn
    >>> layer = braintrace.nn.Linear(3, 2)
    >>> sorted(layer.weight.value)
    ['bias', 'weight']
    >>> layer(jnp.ones((5, 3))).shape
    (5, 2)
    """

    def __init__(
        self,
        in_size: int,
        out_size: int,
        w_init: Callable | jax.typing.ArrayLike = init.KaimingNormal(),
        b_init: Callable | jax.typing.ArrayLike = init.ZeroInit(),
        *,
        bias: bool = True,
        name: str | None = None,
    ):
        super().__init__(name=name)
        self.in_size = in_size
        self.out_size = out_size
        n_in, n_out = self.in_size[-1], self.out_size[-1]
        params = {"weight": init.param(w_init, (n_in, n_out), allow_none=False, allow_scalar=False)}
        if bias:
            params["bias"] = init.param(b_init, (n_out,), allow_none=False, allow_scalar=False)
        self.weight = brainstate.ParamState(params)

    def update(self, x):
        """Return ``x @ W + b`` for ``x`` of shape ``(..., in_size)``."""
        params = self.weight.value
        return matmul(x, params["weight"], params.get("bias"))
