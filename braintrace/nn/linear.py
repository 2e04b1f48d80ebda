# Copyright 2026 The braintrace authors. Licensed under the Apache License, Version 2.0.
"""Dense layer whose product goes through the trainable :func:`braintrace.matmul` op."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import brainstate
import braintools
import brainunit as u
import jax
import jax.numpy as jnp

from ..ops import matmul

__all__ = ["Linear"]

type Initializer = Callable | jax.typing.ArrayLike
type Size = int | Sequence[int]


def feature_sizes(layer: str, in_size: Size, out_size: Size) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """``in_size`` and ``out_size`` as tuples (the last axis is the feature axis)."""
    sizes = []
    for arg, size in (("in_size", in_size), ("out_size", out_size)):
        size = (size,) if isinstance(size, int) else tuple(size)
        if not size or not all(isinstance(n, int) and n > 0 for n in size):
            raise ValueError(f"`{layer}`: `{arg}` must be a positive int or a tuple of them; got {size!r}.")
        sizes.append(size)
    if sizes[0][:-1] != sizes[1][:-1]:
        raise ValueError(
            f"`{layer}`: the leading axes of `in_size` {sizes[0]} and `out_size` {sizes[1]} must agree "
            "(only the last axis is the feature axis)."
        )
    return sizes[0], sizes[1]


def init_weight(layer: str, w_init: Initializer, shape: tuple[int, ...]):
    """The weight array (or brainunit quantity) drawn from ``w_init``, checked against ``shape``."""
    try:
        weight = braintools.init.param(w_init, shape, allow_none=False, allow_scalar=False)
    except ValueError as error:
        raise ValueError(f"`{layer}`: bad `w_init` for a weight of shape {shape}: {error}") from None
    if tuple(u.math.shape(weight)) != shape:
        raise ValueError(f"`{layer}`: `w_init` gave shape {u.math.shape(weight)}; expected {shape}.")
    return weight


def init_bias(layer: str, b_init: Initializer, n_out: int, weight):
    """The bias from ``b_init``; a unitless bias takes the unit of a unitful ``weight``.

    The output of ``x @ W`` has the weight's unit when ``x`` is unitless, so a unitless
    initialiser (the default ``ZeroInit()``) next to ``KaimingNormal(unit=u.mA)`` gives a
    bias in ``u.mA``.
    """
    try:
        bias = braintools.init.param(b_init, (n_out,), allow_none=False, allow_scalar=False)
    except ValueError as error:
        raise ValueError(f"`{layer}`: bad `b_init` for a bias of shape ({n_out},): {error}") from None
    if tuple(u.math.shape(bias)) != (n_out,):
        raise ValueError(f"`{layer}`: `b_init` gave shape {u.math.shape(bias)}; expected ({n_out},).")
    weight_unit = u.get_unit(weight)
    if not weight_unit.is_unitless and u.get_unit(bias).is_unitless:
        bias = u.Quantity(u.get_mantissa(bias), unit=weight_unit)
    return bias


def fixed_array(layer: str, arg: str, value, shape: tuple[int, ...]) -> jax.Array:
    """A constant array (mask or sign) broadcastable to ``shape``, broadcast to it."""
    array = jnp.asarray(value)
    try:
        return jnp.broadcast_to(array, shape)
    except ValueError:
        raise ValueError(
            f"`{layer}`: `{arg}` must have shape {shape} (or broadcast to it); got {array.shape}."
        ) from None


def check_input(layer: str, x, n_in: int) -> None:
    """Raise ``ValueError`` unless ``x``'s last axis has ``n_in`` features."""
    shape = u.math.shape(x)
    if len(shape) == 0 or shape[-1] != n_in:
        raise ValueError(
            f"`{layer}`: the input's last axis must have `in_size` = {n_in} features; "
            f"got an input of shape {tuple(shape)}."
        )


class MaskedWeight:
    """The transform hook ``w -> w * mask`` (one instance per layer: hooks are hashed by identity)."""

    def __init__(self, mask: jax.Array):
        self.mask = mask

    def __call__(self, weight):
        return weight * self.mask.astype(weight.dtype)


class Linear(brainstate.nn.Module):
    """Dense layer ``y = x @ (W * w_mask) + b`` computed by the ETP op :func:`braintrace.matmul`.

    The weight and bias live in one ``param_type`` state named ``weight`` whose value is
    the dict ``{'weight': (I, O), 'bias': (O,)}`` (no ``'bias'`` key when ``b_init`` is
    ``None``), so the compiler sees one trainable op per layer. The mask is applied inside
    the op (as its ``weight_fn``), so masked entries get exactly zero gradient, online as
    well as through BPTT.

    Parameters
    ----------
    in_size, out_size : int or tuple of int
        Input and output sizes; the last axis is the feature axis (``I`` and ``O``), leading
        axes must agree. Inputs may carry any extra leading axes.
    w_init : callable or array_like
        Weight initialiser (a ``braintools.init`` initialiser or an ``(I, O)`` array).
        Weights in brainunit units (``KaimingNormal(unit=u.mA)``) are supported.
    b_init : callable or array_like or None
        Bias initialiser; ``None`` means no bias. A unitless bias next to a unitful weight
        takes the weight's unit (the output unit for a unitless input).
    w_mask : array_like, optional
        Fixed 0/1 array broadcastable to ``(I, O)`` multiplied into the weight.
    name : str, optional
        Module name.
    param_type : type
        The state class of the parameters (default ``brainstate.ParamState``).

    Raises
    ------
    ValueError
        For inconsistent sizes, initialiser or mask shapes, and (at call time) an input whose
        last axis is not ``I``.

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
    >>> masked = braintrace.nn.Linear(3, 2, b_init=None, w_mask=jnp.eye(3, 2))
    >>> sorted(masked.weight.value)
    ['weight']
    """

    def __init__(
        self,
        in_size: Size,
        out_size: Size,
        w_init: Initializer = braintools.init.KaimingNormal(),
        b_init: Initializer | None = braintools.init.ZeroInit(),
        w_mask: jax.typing.ArrayLike | None = None,
        name: str | None = None,
        param_type: type = brainstate.ParamState,
    ):
        super().__init__(name=name)
        layer = type(self).__name__
        self.in_size, self.out_size = feature_sizes(layer, in_size, out_size)
        n_in, n_out = self.in_size[-1], self.out_size[-1]
        params = {"weight": init_weight(layer, w_init, (n_in, n_out))}
        if b_init is not None:
            params["bias"] = init_bias(layer, b_init, n_out, params["weight"])
        self.w_mask = None if w_mask is None else fixed_array(layer, "w_mask", w_mask, (n_in, n_out))
        self._weight_fn = None if w_mask is None else MaskedWeight(self.w_mask)
        self.weight = param_type(params)

    def update(self, x):
        """Return ``x @ (W * w_mask) + b`` for ``x`` of shape ``(..., I)``."""
        check_input(type(self).__name__, x, self.in_size[-1])
        params = self.weight.value
        return matmul(x, params["weight"], params.get("bias"), weight_fn=self._weight_fn)
