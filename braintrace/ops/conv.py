# Copyright 2026 The braintrace authors. Licensed under the Apache License, Version 2.0.
"""Convolution ETP op with 1 to 3 spatial dimensions, in any ``lax`` layout.

The layout follows :func:`jax.lax.conv_general_dilated`: ``dimension_numbers=None`` means
``NC(spatial)`` inputs, ``OI(spatial)`` kernels and ``NC(spatial)`` outputs; any ``lax``
dimension-numbers spec (strings such as ``('NHWC', 'HWIO', 'NHWC')`` or a
``ConvDimensionNumbers``) is accepted. The kernel is shared across positions while the hidden
Jacobian acts per position, so a kernel-shaped trace cannot be exact; the D-RTRL trace keeps
the output positions: ``(*V, P, S)`` with ``V`` the output shape (batch, spatial and channel
axes in the output layout) and ``P = (C_in / groups) · prod(kernel_spatial)`` the
receptive-field patch of one output channel. Grouped convolutions (``feature_group_count``)
are exact: each output channel's patch is the slice of input channels of its group.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from .. import _errors
from . import _units
from .primitive import define_primitive

__all__ = ["conv", "etp_conv_p", "channel_last_dimension_numbers"]

_SPATIAL_LETTERS = "DHW"


def channel_last_dimension_numbers(num_spatial: int) -> tuple[str, str, str]:
    """``lax`` dimension numbers of a channel-last convolution, e.g. ``('NHWC', 'HWIO', 'NHWC')``.

    Examples
    --------
    >>> from braintrace.ops.conv import channel_last_dimension_numbers
    >>> channel_last_dimension_numbers(2)
    ('NHWC', 'HWIO', 'NHWC')
    """
    sp = _SPATIAL_LETTERS[-num_spatial:]
    return (f"N{sp}C", f"{sp}IO", f"N{sp}C")


def _without_batch(axis: int, batch_axis: int, unbatched: bool) -> int:
    """Position of a core axis once the batch axis is dropped (unbatched samples)."""
    return axis - 1 if unbatched and batch_axis < axis else axis


def _out_feature_axis(dimension_numbers, unbatched, num_spatial) -> int:
    """Negative index (from the end) of the output-channel axis of ``y``."""
    out = dimension_numbers.out_spec
    core_rank = num_spatial + 2 - int(unbatched)
    return _without_batch(out[1], out[0], unbatched) - core_rank


def _per_sample(fn, x, *, dimension_numbers, unbatched, num_spatial):
    """Apply a batched ``lax`` conv-like ``fn`` to ``x`` with extra leading axes / no batch axis."""
    dn = dimension_numbers

    def core(xc):
        if unbatched:
            return jnp.squeeze(fn(jnp.expand_dims(xc, dn.lhs_spec[0])), dn.out_spec[0])
        return fn(xc)

    for _ in range(x.ndim - (num_spatial + 2 - int(unbatched))):
        core = jax.vmap(core)
    return core(x)


def _apply(x, effective, *, dimension_numbers, unbatched, num_spatial, kernel_shape, window_strides, padding,
           lhs_dilation, rhs_dilation, feature_group_count, has_bias, kernel_fn, bias_fn):
    kernel = effective["kernel"]

    def fn(xc):
        return lax.conv_general_dilated(
            xc, kernel, window_strides, padding, lhs_dilation, rhs_dilation,
            dimension_numbers=dimension_numbers, feature_group_count=feature_group_count,
        )

    y = _per_sample(fn, x, dimension_numbers=dimension_numbers, unbatched=unbatched, num_spatial=num_spatial)
    if has_bias:
        axis = _out_feature_axis(dimension_numbers, unbatched, num_spatial)
        y = y + effective["bias"].reshape((-1,) + (1,) * (-axis - 1))
    return y


def _effective(raw, *, has_bias, kernel_fn, bias_fn, **_):
    out = {"kernel": raw["kernel"] if kernel_fn is None else kernel_fn(raw["kernel"])}
    if has_bias:
        out["bias"] = raw["bias"] if bias_fn is None else bias_fn(raw["bias"])
    return out


def _trainable_inputs(*, has_bias, **_):
    return {"kernel": 1, "bias": 2} if has_bias else {"kernel": 1}


def _filter_shape(dimension_numbers, kernel_shape):
    return tuple(kernel_shape[d] for d in dimension_numbers.rhs_spec[2:])


def _patches(x, *, dimension_numbers, unbatched, num_spatial, kernel_shape, window_strides, padding,
             lhs_dilation, rhs_dilation, feature_group_count):
    """Per-output-channel patches shaped like ``y`` plus a trailing patch axis ``P``.

    The output-channel axis of ``y`` has size 1 (ungrouped: every channel sees the same
    patch) or ``C_out`` (grouped). ``P`` is ordered ``(C_in / groups, *kernel_spatial)``.
    """
    filter_shape = _filter_shape(dimension_numbers, kernel_shape)

    def fn(xc):
        return lax.conv_general_dilated_patches(
            xc, filter_shape, window_strides, padding, lhs_dilation, rhs_dilation,
            dimension_numbers=dimension_numbers,
        )

    p = _per_sample(fn, x, dimension_numbers=dimension_numbers, unbatched=unbatched, num_spatial=num_spatial)
    axis = _out_feature_axis(dimension_numbers, unbatched, num_spatial)
    p = jnp.moveaxis(p, axis, -1)  # (..., C_in * K), channel-major
    if feature_group_count == 1:
        return jnp.expand_dims(p, axis - 1)
    groups = feature_group_count
    c_out = kernel_shape[dimension_numbers.rhs_spec[0]]
    p = p.reshape(p.shape[:-1] + (groups, p.shape[-1] // groups))
    p = jnp.take(p, np.arange(c_out) // (c_out // groups), axis=-2)  # (..., C_out, P)
    return jnp.moveaxis(p, -2, axis - 1)


def _trace_increment(x, df, **params):
    patches = _patches(x, **{k: v for k, v in params.items() if k not in ("has_bias", "kernel_fn", "bias_fn")})
    out = {"kernel": patches[..., None] * df[..., None, :]}
    if params["has_bias"]:
        out["bias"] = df
    return out


def _trace_contract(trace, signal, effective, *, dimension_numbers, unbatched, num_spatial, kernel_shape,
                    feature_group_count, has_bias, **_):
    rank = signal.ndim - 1
    axis = rank + _out_feature_axis(dimension_numbers, unbatched, num_spatial)
    s = jnp.moveaxis(signal, axis, 0)
    t = jnp.moveaxis(trace["kernel"], axis, 0)
    grad = jnp.einsum("o...ps,o...s->op", t, s)  # (C_out, P)
    rhs = dimension_numbers.rhs_spec
    canonical = (kernel_shape[rhs[0]], kernel_shape[rhs[1]]) + _filter_shape(dimension_numbers, kernel_shape)
    out = {"kernel": jnp.transpose(grad.reshape(canonical), tuple(np.argsort(rhs)))}
    if has_bias:
        out["bias"] = jnp.einsum("o...s,o...s->o", jnp.moveaxis(trace["bias"], axis, 0), s)
    return out


etp_conv_p = define_primitive(
    "etp_conv",
    _apply,
    trainable_inputs=_trainable_inputs,
    x_index=0,
    effective=_effective,
    param_trace_increment=_trace_increment,
    param_trace_contract=_trace_contract,
)


def _normalize_padding(padding, num_spatial):
    if isinstance(padding, str):
        padding = padding.upper()
        if padding not in ("SAME", "VALID", "SAME_LOWER"):
            raise ValueError(f"`conv` padding must be 'SAME', 'SAME_LOWER', 'VALID', an int or pairs; got {padding!r}.")
        return padding
    if isinstance(padding, int):
        return tuple((padding, padding) for _ in range(num_spatial))
    pads = tuple(tuple(int(v) for v in p) if isinstance(p, Sequence) else (int(p), int(p)) for p in padding)
    if len(pads) != num_spatial or any(len(p) != 2 for p in pads):
        raise ValueError(f"`conv` needs {num_spatial} (low, high) padding pairs; got padding={padding!r}.")
    return pads


def _tuple(value, n, name):
    if value is None:
        return (1,) * n
    if isinstance(value, int):
        return (value,) * n
    value = tuple(int(v) for v in value)
    if len(value) == 1:
        return value * n
    if len(value) != n:
        raise ValueError(f"`conv` {name} needs 1 or {n} entries for {n} spatial dimensions; got {value}.")
    return value


def _dimension_numbers(dimension_numbers, num_spatial, kernel_shape):
    if dimension_numbers is None:
        spec = tuple(range(num_spatial + 2))
        return lax.ConvDimensionNumbers(spec, spec, spec)
    try:
        return lax.conv_dimension_numbers((1,) * (num_spatial + 2), kernel_shape, dimension_numbers)
    except (TypeError, ValueError, AssertionError) as err:
        raise ValueError(
            f"`conv` got dimension_numbers={dimension_numbers!r}, which does not describe a "
            f"{num_spatial}-D convolution with a kernel of shape {kernel_shape}: {err}"
        ) from None


def conv(
    x,
    kernel,
    bias=None,
    strides: int | Sequence[int] = (1,),
    padding: str | int | Sequence = "SAME",
    lhs_dilation: int | Sequence[int] | None = None,
    rhs_dilation: int | Sequence[int] | None = None,
    feature_group_count: int = 1,
    batch_group_count: int = 1,
    dimension_numbers=None,
    kernel_fn: Callable | None = None,
    bias_fn: Callable | None = None,
):
    """Trainable convolution with 1, 2 or 3 spatial dimensions, as ``lax.conv_general_dilated``.

    Parameters
    ----------
    x : array_like
        Input in the layout of ``dimension_numbers`` (default ``(N, C_in, *spatial)``). An
        input with one axis fewer is a single sample without the batch axis; extra leading
        axes are mapped over (as ``jax.vmap`` would). brainunit quantities are supported.
    kernel : array_like
        Kernel in the kernel layout (default ``(C_out, C_in / groups, *kernel_spatial)``); its
        rank fixes the number of spatial dimensions.
    bias : array_like, optional
        Bias ``(C_out,)``, added along the output-channel axis, in the unit of the output.
    strides, padding, lhs_dilation, rhs_dilation
        As in :func:`jax.lax.conv_general_dilated`. ``padding`` may be ``'SAME'``,
        ``'SAME_LOWER'``, ``'VALID'``, an int or ``(low, high)`` pairs; a one-entry
        ``strides``/dilation applies to every spatial dimension.
    feature_group_count : int
        Number of channel groups (grouped and depthwise convolutions); exact online.
    batch_group_count : int
        Must be 1 (``lax``'s batch grouping is used by gradients, not by models).
    dimension_numbers : None, tuple of str or jax.lax.ConvDimensionNumbers
        The ``(lhs, rhs, out)`` layout, as in ``lax``. ``None`` means ``NC...``/``OI...``/``NC...``.
    kernel_fn, bias_fn : callable, optional
        Differentiable transforms applied inside the op (hashed by identity), e.g. a fixed mask.

    Returns
    -------
    jax.Array or brainunit.Quantity
        The output in the output layout of ``dimension_numbers``.

    Raises
    ------
    ValueError
        For shapes, paddings or dimension numbers that do not fit together.
    NotSupportedError
        For ``batch_group_count != 1``.

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> import braintrace
    >>> braintrace.conv(jnp.ones((2, 3, 8)), jnp.ones((4, 3, 3)), padding='VALID').shape
    (2, 4, 6)
    >>> dn = ('NWC', 'WIO', 'NWC')  # channel-last
    >>> braintrace.conv(jnp.ones((2, 8, 3)), jnp.ones((3, 3, 4)), padding='VALID', dimension_numbers=dn).shape
    (2, 6, 4)
    """
    if batch_group_count != 1:
        raise _errors.NotSupportedError(
            f"`conv` got batch_group_count={batch_group_count}; batch-grouped convolutions are not "
            "supported by the eligibility-trace rules. Use batch_group_count=1."
        )
    xm, xu = _units.split(x)
    km, ku = _units.split(kernel)
    unit = _units.combine_units(xu, ku)
    xm, km = jnp.asarray(xm), jnp.asarray(km)
    num_spatial = km.ndim - 2
    if num_spatial not in (1, 2, 3):
        raise ValueError(
            f"`conv` expects a kernel of rank 3 to 5 (two channel axes and 1-3 spatial axes); got shape {km.shape}."
        )
    dn = _dimension_numbers(dimension_numbers, num_spatial, km.shape)
    if xm.ndim < num_spatial + 1:
        raise ValueError(
            f"`conv` expects x with at least {num_spatial + 1} axes for kernel {km.shape}; got shape {xm.shape}."
        )
    unbatched = xm.ndim == num_spatial + 1
    groups = int(feature_group_count)
    c_in, c_out = km.shape[dn.rhs_spec[1]], km.shape[dn.rhs_spec[0]]
    if groups < 1 or c_out % groups:
        raise ValueError(
            f"`conv` feature_group_count={feature_group_count} must be >= 1 and divide the kernel's "
            f"{c_out} output channels (kernel shape {km.shape})."
        )
    lead = xm.ndim - (num_spatial + 2 - int(unbatched))
    x_feature = lead + _without_batch(dn.lhs_spec[1], dn.lhs_spec[0], unbatched)
    if xm.shape[x_feature] != c_in * groups:
        raise ValueError(
            f"`conv` expects x with {c_in * groups} input channels on axis {x_feature} "
            f"(kernel {km.shape}, feature_group_count={groups}); got x of shape {xm.shape}."
        )
    lhs_dilation = _tuple(lhs_dilation, num_spatial, "lhs_dilation")
    padding = _normalize_padding(padding, num_spatial)
    if isinstance(padding, str) and any(d != 1 for d in lhs_dilation):
        raise ValueError(
            f"`conv` cannot use string padding {padding!r} with lhs_dilation={lhs_dilation} (lax has no such "
            "mode); give explicit (low, high) padding pairs."
        )
    args = [xm, km]
    if bias is not None:
        bm = jnp.asarray(_units.bias_mantissa(bias, unit))
        if bm.shape != (c_out,):
            raise ValueError(f"`conv` expects a bias of shape ({c_out},); got {bm.shape}.")
        args.append(bm)
    y = etp_conv_p.bind(
        *args,
        dimension_numbers=dn,
        unbatched=bool(unbatched),
        num_spatial=num_spatial,
        kernel_shape=tuple(km.shape),
        window_strides=_tuple(strides, num_spatial, "strides"),
        padding=padding,
        lhs_dilation=lhs_dilation,
        rhs_dilation=_tuple(rhs_dilation, num_spatial, "rhs_dilation"),
        feature_group_count=groups,
        has_bias=bias is not None,
        kernel_fn=kernel_fn,
        bias_fn=bias_fn,
    )
    return _units.attach(y, unit)
