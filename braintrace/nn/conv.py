# Copyright 2026 The braintrace authors. Licensed under the Apache License, Version 2.0.
"""Convolution layers whose convolution goes through the trainable :func:`braintrace.conv` op."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import brainstate
import braintools
import brainunit as u
import jax

from ..ops.conv import channel_last_dimension_numbers, conv
from .linear import MaskedWeight, fixed_array, init_bias, init_weight

__all__ = ["Conv1d", "Conv2d", "Conv3d"]

_SPATIAL_LETTERS = "DHW"


def _replicate(layer: str, arg: str, value, n: int) -> tuple[int, ...]:
    if isinstance(value, int):
        return (value,) * n
    value = tuple(value)
    if len(value) == 1:
        value = value * n
    if len(value) != n or not all(isinstance(v, int) and v > 0 for v in value):
        raise ValueError(f"`{layer}`: `{arg}` must be a positive int or {n} of them; got {value!r}.")
    return value


def _padding(layer: str, padding, n: int):
    if isinstance(padding, str):
        if padding.upper() not in ("SAME", "VALID", "SAME_LOWER"):
            raise ValueError(f"`{layer}`: `padding` must be 'SAME', 'VALID', an int or (low, high) pairs; "
                             f"got {padding!r}.")
        return padding.upper()
    if isinstance(padding, int):
        return ((padding, padding),) * n
    padding = tuple(padding)
    if n == 1 and len(padding) == 2 and all(isinstance(p, int) for p in padding):
        return (padding,)
    pads = tuple((p, p) if isinstance(p, int) else tuple(p) for p in padding)
    if len(pads) == 1:
        pads = pads * n
    if len(pads) != n or not all(len(p) == 2 for p in pads):
        raise ValueError(f"`{layer}`: `padding` needs {n} (low, high) pairs; got {padding!r}.")
    return pads


class _Conv(brainstate.nn.Module):
    """Shared implementation of :class:`Conv1d`, :class:`Conv2d` and :class:`Conv3d`."""

    num_spatial_dims: int

    def __init__(
        self,
        in_size: Sequence[int],
        out_channels: int,
        kernel_size: int | Sequence[int],
        stride: int | Sequence[int] = 1,
        padding: str | int | Sequence = "SAME",
        lhs_dilation: int | Sequence[int] = 1,
        rhs_dilation: int | Sequence[int] = 1,
        groups: int = 1,
        w_init: Callable | jax.typing.ArrayLike = braintools.init.XavierNormal(),
        b_init: Callable | jax.typing.ArrayLike | None = None,
        w_mask: jax.typing.ArrayLike | None = None,
        channel_first: bool = False,
        name: str | None = None,
        param_type: type = brainstate.ParamState,
    ):
        super().__init__(name=name)
        layer = type(self).__name__
        ns = self.num_spatial_dims
        in_size = (in_size,) if isinstance(in_size, int) else tuple(in_size)
        if len(in_size) != ns + 1 or not all(isinstance(n, int) and n > 0 for n in in_size):
            raise ValueError(
                f"`{layer}`: `in_size` must be the per-sample shape ({ns} spatial sizes and the channel "
                f"count, channel {'first' if channel_first else 'last'}); got {in_size!r}."
            )
        self.in_size = in_size
        self.channel_first = bool(channel_first)
        self.in_channels = in_size[0] if channel_first else in_size[-1]
        self.out_channels = int(out_channels)
        self.groups = int(groups)
        if self.groups < 1 or self.in_channels % self.groups or self.out_channels % self.groups:
            raise ValueError(
                f"`{layer}`: `groups` = {groups} must divide the {self.in_channels} input and "
                f"{self.out_channels} output channels."
            )
        self.kernel_size = _replicate(layer, "kernel_size", kernel_size, ns)
        self.stride = _replicate(layer, "stride", stride, ns)
        self.lhs_dilation = _replicate(layer, "lhs_dilation", lhs_dilation, ns)
        self.rhs_dilation = _replicate(layer, "rhs_dilation", rhs_dilation, ns)
        self.padding = _padding(layer, padding, ns)
        if channel_first:
            sp = _SPATIAL_LETTERS[-ns:]
            self.dimension_numbers = (f"NC{sp}", f"{sp}IO", f"NC{sp}")
        else:
            self.dimension_numbers = channel_last_dimension_numbers(ns)
        self.kernel_shape = self.kernel_size + (self.in_channels // self.groups, self.out_channels)

        params = {"weight": init_weight(layer, w_init, self.kernel_shape)}
        if b_init is not None:
            params["bias"] = init_bias(layer, b_init, self.out_channels, params["weight"])
        self.w_mask = None if w_mask is None else fixed_array(layer, "w_mask", w_mask, self.kernel_shape)
        self._kernel_fn = None if w_mask is None else MaskedWeight(self.w_mask)
        self.weight = param_type(params)
        sample = jax.ShapeDtypeStruct(in_size, u.math.asarray(u.get_mantissa(params["weight"])).dtype)
        mantissas = jax.tree.map(u.get_mantissa, params, is_leaf=lambda v: isinstance(v, u.Quantity))
        self.out_size = tuple(jax.eval_shape(lambda x: self._conv(x, mantissas), sample).shape)

    def _conv(self, x, params):
        return conv(
            x, params["weight"], params.get("bias"), strides=self.stride, padding=self.padding,
            lhs_dilation=self.lhs_dilation, rhs_dilation=self.rhs_dilation, feature_group_count=self.groups,
            dimension_numbers=self.dimension_numbers, kernel_fn=self._kernel_fn,
        )

    def update(self, x):
        """Convolve ``x`` of shape ``in_size`` or ``(..., *in_size)`` (leading batch axes)."""
        shape = tuple(u.math.shape(x))
        if shape[len(shape) - len(self.in_size):] != self.in_size or len(shape) < len(self.in_size):
            raise ValueError(
                f"`{type(self).__name__}`: expected an input of shape {self.in_size} or "
                f"(batch, *{self.in_size}); got {shape}."
            )
        return self._conv(x, self.weight.value)


_DOC = """{ns}-D convolution layer computed by the ETP op :func:`braintrace.conv`.

    The kernel ``{kernel}`` (``(*kernel_size, in_channels // groups, out_channels)``) and the
    optional bias ``(out_channels,)`` live in one ``param_type`` state named ``weight`` whose
    value is ``{{'weight': kernel[, 'bias': bias]}}``. Layers are channel-last by default. The
    D-RTRL trace keeps the output positions, so the online gradient is exact for element-wise
    recurrences on the output (see :mod:`braintrace.ops.conv`). Grouped convolutions are exact.

    Parameters
    ----------
    in_size : tuple of int
        Per-sample input shape: ``{last}`` (channel-last) or ``{first}`` with
        ``channel_first=True``.
    out_channels : int
        Number of output channels.
    kernel_size, stride, lhs_dilation, rhs_dilation : int or tuple of int
        Per spatial dimension (an int applies to all).
    padding : str, int or sequence
        ``'SAME'``, ``'VALID'``, an int, or ``(low, high)`` pairs.
    groups : int
        Number of channel groups (``feature_group_count``); must divide both channel counts.
    w_init : callable or array_like
        Kernel initialiser (default ``braintools.init.XavierNormal()``); units are supported.
    b_init : callable or array_like or None
        Bias initialiser; ``None`` (default) means no bias.
    w_mask : array_like, optional
        Fixed 0/1 array (kernel shape, or broadcastable to it) multiplied into the kernel inside
        the op, so masked entries get exactly zero gradient.
    channel_first : bool
        Inputs and outputs are ``(N, C, *spatial)`` instead of ``(N, *spatial, C)``.
    name : str, optional
        Module name.
    param_type : type
        The state class of the parameters (default ``brainstate.ParamState``).

    Attributes
    ----------
    out_size : tuple of int
        Per-sample output shape.

    Raises
    ------
    ValueError
        For bad sizes, groups, paddings or mask shapes, and (at call time) an input whose
        trailing axes are not ``in_size``.

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> import braintrace
    >>> layer = braintrace.nn.{name}({in_example}, out_channels=4, kernel_size=3)
    >>> layer.out_size
    {out_example}
    >>> layer(jnp.ones((2,) + layer.in_size)).shape
    {batched_example}
    """


class Conv1d(_Conv):
    num_spatial_dims = 1
    __doc__ = _DOC.format(ns=1, kernel="(K, C_in // groups, C_out)", last="(L, C)", first="(C, L)",
                          name="Conv1d", in_example="(16, 3)", out_example="(16, 4)", batched_example="(2, 16, 4)")


class Conv2d(_Conv):
    num_spatial_dims = 2
    __doc__ = _DOC.format(ns=2, kernel="(KH, KW, C_in // groups, C_out)", last="(H, W, C)", first="(C, H, W)",
                          name="Conv2d", in_example="(8, 8, 3)", out_example="(8, 8, 4)",
                          batched_example="(2, 8, 8, 4)")


class Conv3d(_Conv):
    num_spatial_dims = 3
    __doc__ = _DOC.format(ns=3, kernel="(KD, KH, KW, C_in // groups, C_out)", last="(D, H, W, C)",
                          first="(C, D, H, W)", name="Conv3d", in_example="(4, 6, 6, 2)",
                          out_example="(4, 6, 6, 4)", batched_example="(2, 4, 6, 6, 4)")
