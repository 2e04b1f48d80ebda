# Copyright 2026 The braintrace authors. Licensed under the Apache License, Version 2.0.
"""Low-rank adapter layer whose product goes through :func:`braintrace.lora_matmul`."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import brainstate
import braintools
import brainunit as u
import jax
import jax.numpy as jnp

from ..ops.lora_matmul import lora_matmul

__all__ = ["LoRA"]


def _positive_int(layer: str, arg: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"`{layer}`: `{arg}` must be a positive int; got {value!r}.")
    return value


class LoRA(brainstate.nn.Module):
    """Low-rank adapter ``y = x @ B @ A`` (plus ``base_module(x)`` when given).

    The factors live in one ``param_type`` state named ``weight`` whose value is
    ``{'lora_b': B (in_features, r), 'lora_a': A (r, out_features)}``. The product is the
    ETP op :func:`braintrace.lora_matmul`, whose online gradients of both factors are exact
    wherever those of a dense layer are.

    Initialisation follows the usual LoRA convention (Hu et al., 2021): the down-projection
    ``B`` is drawn from ``kernel_init`` and the up-projection ``A`` is zero, so the adapter
    starts as the zero map (``base_module`` alone) and learning starts through ``A``, whose
    gradient ``Bᵀxᵀg`` is non-zero.

    Parameters
    ----------
    in_features, lora_rank, out_features : int
        ``I``, the rank ``r`` and ``O``.
    base_module : callable, optional
        A module (e.g. a frozen ``Linear``) whose output on the same input is added.
    kernel_init : callable or array_like
        Initialiser of ``B`` (default ``braintools.init.LecunNormal()``).
    param_type : type
        The state class of the parameters (default ``brainstate.ParamState``).
    in_size : int or tuple of int, optional
        Input size; its last axis must be ``in_features``. Default ``(in_features,)``.

    Raises
    ------
    ValueError
        For non-positive sizes, an ``in_size`` that does not end in ``in_features``, a
        ``kernel_init`` of the wrong shape, or (at call time) an input whose last axis is
        not ``in_features``.

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> import braintrace
    >>> lora = braintrace.nn.LoRA(4, 2, 3)
    >>> sorted(lora.weight.value), lora.weight.value['lora_b'].shape
    (['lora_a', 'lora_b'], (4, 2))
    >>> lora(jnp.ones((5, 4))).shape
    (5, 3)
    """

    def __init__(
        self,
        in_features: int,
        lora_rank: int,
        out_features: int,
        base_module: Callable | None = None,
        kernel_init: Callable | jax.typing.ArrayLike = braintools.init.LecunNormal(),
        param_type: type = brainstate.ParamState,
        in_size: int | Sequence[int] | None = None,
    ):
        super().__init__()
        layer = type(self).__name__
        self.in_features = _positive_int(layer, "in_features", in_features)
        self.lora_rank = _positive_int(layer, "lora_rank", lora_rank)
        self.out_features = _positive_int(layer, "out_features", out_features)
        if in_size is None:
            in_size = (in_features,)
        in_size = (in_size,) if isinstance(in_size, int) else tuple(in_size)
        if not in_size or in_size[-1] != in_features:
            raise ValueError(
                f"`{layer}`: the last axis of `in_size` must be `in_features` = {in_features}; got in_size={in_size}."
            )
        self.in_size = in_size
        self.out_size = in_size[:-1] + (out_features,)
        if base_module is not None and not callable(base_module):
            raise ValueError(f"`{layer}`: `base_module` must be a module or callable; got {type(base_module).__name__}.")
        self.base_module = base_module
        try:
            b = braintools.init.param(kernel_init, (in_features, lora_rank), allow_none=False, allow_scalar=False)
        except ValueError as err:
            raise ValueError(
                f"`{layer}`: `kernel_init` must give shape ({in_features}, {lora_rank}): {err}"
            ) from None
        if tuple(u.math.shape(b)) != (in_features, lora_rank):
            raise ValueError(
                f"`{layer}`: `kernel_init` gave shape {tuple(u.math.shape(b))}; expected ({in_features}, {lora_rank})."
            )
        a = jnp.zeros((lora_rank, out_features), jnp.result_type(u.get_mantissa(b)))
        self.weight = param_type({"lora_b": b, "lora_a": a})

    def update(self, x):
        """Return ``x @ B @ A`` (``+ base_module(x)``) for ``x`` of shape ``(..., in_features)``."""
        shape = tuple(u.math.shape(x))
        if len(shape) == 0 or shape[-1] != self.in_features:
            raise ValueError(
                f"`{type(self).__name__}`: the input's last axis must have `in_features` = {self.in_features} "
                f"features; got an input of shape {shape}."
            )
        params = self.weight.value
        y = lora_matmul(x, params["lora_b"], params["lora_a"])
        if self.base_module is not None:
            y = y + self.base_module(x)
        return y
