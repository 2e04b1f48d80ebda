# Copyright 2026 The braintrace authors. Licensed under the Apache License, Version 2.0.
"""Convolution ETP op (channel-last, 1 to 3 spatial dimensions).

``x`` is ``(..., *spatial, C_in)``, the kernel ``(*kernel_spatial, C_in, C_out)`` and the
output ``(..., *spatial_out, C_out)``. The kernel is shared across positions while the
hidden Jacobian acts per position, so a kernel-shaped trace cannot be exact; the D-RTRL
trace keeps the output positions: ``(*V, P, S)`` with ``V = (..., *spatial_out, C_out)`` and
``P = C_in · prod(kernel_spatial)`` the receptive-field patch.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import jax.numpy as jnp
from jax import lax

from .. import _errors
from . import _units
from .primitive import register_primitive

__all__ = ["conv", "etp_conv_p"]

_SPATIAL_LETTERS = "DHW"


def _dimension_numbers(num_spatial: int):
    sp = _SPATIAL_LETTERS[-num_spatial:]
    return (f"N{sp}C", f"{sp}IO", f"N{sp}C")


def _flatten_batch(x, num_spatial):
    lead = x.shape[: x.ndim - num_spatial - 1]
    return x.reshape((-1,) + x.shape[x.ndim - num_spatial - 1:]), lead


def _apply(x, effective, *, num_spatial, window_strides, padding, lhs_dilation, rhs_dilation,
           has_bias, kernel_fn, bias_fn, kernel_spatial=None):
    xb, lead = _flatten_batch(x, num_spatial)
    y = lax.conv_general_dilated(
        xb, effective["kernel"], window_strides, padding, lhs_dilation, rhs_dilation,
        dimension_numbers=_dimension_numbers(num_spatial),
    )
    y = y.reshape(lead + y.shape[1:])
    if has_bias:
        y = y + effective["bias"]
    return y


def _effective(raw, *, has_bias, kernel_fn, bias_fn, **_):
    out = {"kernel": raw["kernel"] if kernel_fn is None else kernel_fn(raw["kernel"])}
    if has_bias:
        out["bias"] = raw["bias"] if bias_fn is None else bias_fn(raw["bias"])
    return out


def _trainable_inputs(*, has_bias, **_):
    return {"kernel": 1, "bias": 2} if has_bias else {"kernel": 1}


def _patches(x, kernel_spatial, *, num_spatial, window_strides, padding, lhs_dilation, rhs_dilation):
    """Receptive-field patches ``(..., *spatial_out, C_in * prod(kernel_spatial))``.

    The feature axis is ordered ``(C_in, *kernel_spatial)`` (channel-major).
    """
    xb, lead = _flatten_batch(x, num_spatial)
    p = lax.conv_general_dilated_patches(
        xb, tuple(kernel_spatial), window_strides, padding, lhs_dilation, rhs_dilation,
        dimension_numbers=_dimension_numbers(num_spatial),
    )
    return p.reshape(lead + p.shape[1:])


def _trace_increment(x, df, *, kernel_spatial, num_spatial, window_strides, padding,
                     lhs_dilation, rhs_dilation, has_bias, kernel_fn, bias_fn):
    patches = _patches(x, kernel_spatial, num_spatial=num_spatial, window_strides=window_strides,
                       padding=padding, lhs_dilation=lhs_dilation, rhs_dilation=rhs_dilation)
    out = {"kernel": patches[..., None, :, None] * df[..., :, None, :]}
    if has_bias:
        out["bias"] = df
    return out


def _trace_contract(trace, signal, effective, *, num_spatial, has_bias, **_):
    kernel = effective["kernel"]
    kernel_spatial, c_in, c_out = kernel.shape[:num_spatial], kernel.shape[-2], kernel.shape[-1]
    grad = jnp.einsum("...ops,...os->po", trace["kernel"], signal)  # (C_in*K, C_out)
    grad = grad.reshape((c_in, *kernel_spatial, c_out))
    out = {"kernel": jnp.moveaxis(grad, 0, num_spatial)}
    if has_bias:
        out["bias"] = jnp.einsum("...os,...os->o", trace["bias"], signal)
    return out


etp_conv_p = register_primitive(
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
            raise ValueError(f"`conv` padding must be 'SAME', 'VALID' or pairs; got {padding!r}.")
        return padding
    if isinstance(padding, int):
        return tuple((padding, padding) for _ in range(num_spatial))
    pads = tuple(tuple(int(v) for v in p) if isinstance(p, Sequence) else (int(p), int(p)) for p in padding)
    if len(pads) != num_spatial:
        raise ValueError(f"`conv` needs {num_spatial} padding pairs; got {padding!r}.")
    return pads


def _tuple(value, n, name):
    if value is None:
        return (1,) * n
    if isinstance(value, int):
        return (value,) * n
    value = tuple(int(v) for v in value)
    if len(value) != n:
        raise ValueError(f"`conv` {name} needs {n} entries; got {value}.")
    return value


def conv(
    x,
    kernel,
    bias=None,
    *,
    strides: int | Sequence[int] = 1,
    padding: str | int | Sequence = "SAME",
    lhs_dilation: int | Sequence[int] | None = None,
    rhs_dilation: int | Sequence[int] | None = None,
    feature_group_count: int = 1,
    kernel_fn: Callable | None = None,
    bias_fn: Callable | None = None,
):
    """Trainable channel-last convolution with 1, 2 or 3 spatial dimensions.

    Parameters
    ----------
    x : array_like
        Input ``(..., *spatial, C_in)``; leading axes (batch) are optional and any number.
    kernel : array_like
        Kernel ``(*kernel_spatial, C_in, C_out)``; its rank fixes the spatial dimension.
    bias : array_like, optional
        Bias ``(C_out,)``.
    strides, padding, lhs_dilation, rhs_dilation
        As in :func:`jax.lax.conv_general_dilated` (``padding`` may be ``'SAME'``,
        ``'VALID'``, an int or pairs).
    feature_group_count : int
        Must be 1: grouped convolutions are not supported online.
    kernel_fn, bias_fn : callable, optional
        Transforms applied inside the op (hashed by identity).

    Returns
    -------
    jax.Array
        ``(..., *spatial_out, C_out)``.

    Raises
    ------
    NotSupportedError
        For grouped convolutions.

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> import braintrace
    >>> braintrace.conv(jnp.ones((2, 8, 3)), jnp.ones((3, 3, 4)), padding='VALID').shape
    (2, 6, 4)
    """
    if feature_group_count != 1:
        raise _errors.NotSupportedError(
            f"`conv` got feature_group_count={feature_group_count}; grouped convolutions are "
            "not supported by the eligibility-trace rules. Use separate convolutions instead."
        )
    xm, xu = _units.split(x)
    km, ku = _units.split(kernel)
    unit = _units.combine_units(xu, ku)
    xm, km = jnp.asarray(xm), jnp.asarray(km)
    num_spatial = km.ndim - 2
    if num_spatial not in (1, 2, 3):
        raise ValueError(f"`conv` expects a kernel of rank 3 to 5 (*spatial, C_in, C_out); got {km.shape}.")
    if xm.ndim < num_spatial + 1 or xm.shape[-1] != km.shape[-2]:
        raise ValueError(
            f"`conv` expects x of shape (..., *spatial, {km.shape[-2]}) for kernel {km.shape}; "
            f"got {xm.shape}."
        )
    args = [xm, km]
    if bias is not None:
        bm = jnp.asarray(_units.bias_mantissa(bias, unit))
        if bm.shape != (km.shape[-1],):
            raise ValueError(f"`conv` expects a bias of shape ({km.shape[-1]},); got {bm.shape}.")
        args.append(bm)
    y = etp_conv_p.bind(
        *args,
        num_spatial=num_spatial,
        kernel_spatial=tuple(km.shape[:num_spatial]),
        window_strides=_tuple(strides, num_spatial, "strides"),
        padding=_normalize_padding(padding, num_spatial),
        lhs_dilation=_tuple(lhs_dilation, num_spatial, "lhs_dilation"),
        rhs_dilation=_tuple(rhs_dilation, num_spatial, "rhs_dilation"),
        has_bias=bias is not None,
        kernel_fn=kernel_fn,
        bias_fn=bias_fn,
    )
    return _units.attach(y, unit)
