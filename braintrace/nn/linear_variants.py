# Copyright 2026 The braintrace authors. Licensed under the Apache License, Version 2.0.
"""Dense layers with a transformed weight: sign-constrained (Dale's law) and weight-standardised.

Both transforms run inside the ETP op, so the online gradient differentiates them exactly.
``SignedWLinear`` uses :func:`braintrace.matmul` with a ``weight_fn``. ``ScaledWSLinear``
has a trainable gain that enters the transform, so it uses its own dense primitive
``etp_ws_matmul`` whose effective weight is ``standardise(W, gain) * mask``.
"""

from __future__ import annotations

import brainstate
import braintools
import jax
import jax.numpy as jnp

from ..ops import _units, matmul
from ..ops.primitive import define_primitive
from .linear import (
    Initializer,
    MaskedWeight,
    Size,
    check_input,
    feature_sizes,
    fixed_array,
    init_bias,
    init_weight,
)

__all__ = ["ScaledWSLinear", "SignedWLinear", "etp_ws_matmul_p", "standardize_weight"]


class _SignedMagnitude:
    """The transform hook ``w -> |w| * sign`` (one instance per layer)."""

    def __init__(self, sign: jax.Array | None):
        self.sign = sign

    def __call__(self, weight):
        magnitude = jnp.abs(weight)
        return magnitude if self.sign is None else magnitude * self.sign.astype(weight.dtype)


class SignedWLinear(brainstate.nn.Module):
    """Dense layer with sign-constrained weights, ``y = x @ (|W| * w_sign)``.

    ``w_sign`` fixes the sign of every connection (for example +1 rows for excitatory and
    -1 rows for inhibitory inputs, Dale's law); the trainable ``W`` sets magnitudes. The
    transform is the op's ``weight_fn``, so online and BPTT gradients differentiate ``|·|``.
    There is no bias.

    Parameters
    ----------
    in_size, out_size : int or tuple of int
        Input and output sizes (the last axis is the feature axis).
    w_init : callable or array_like
        Initialiser of the raw weight ``W`` of shape ``(I, O)``.
    w_sign : array_like, optional
        Fixed ±1 array broadcastable to ``(I, O)``; ``None`` means all +1 (non-negative weights).
    name : str, optional
        Module name.
    param_type : type
        The state class of the weight (default ``brainstate.ParamState``).

    Attributes
    ----------
    weight : param_type
        The raw weight, an ``(I, O)`` array.

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> import braintrace.nn
    >>> sign = jnp.array([[1.0], [1.0], [-1.0]])
    >>> layer = braintrace.nn.SignedWLinear(3, 2, w_init=jnp.ones((3, 2)), w_sign=sign)
    >>> layer(jnp.ones(3))
    Array([1., 1.], dtype=float32)
    """

    def __init__(
        self,
        in_size: Size,
        out_size: Size,
        w_init: Initializer = braintools.init.KaimingNormal(),
        w_sign: jax.typing.ArrayLike | None = None,
        name: str | None = None,
        param_type: type = brainstate.ParamState,
    ):
        super().__init__(name=name)
        layer = type(self).__name__
        self.in_size, self.out_size = feature_sizes(layer, in_size, out_size)
        shape = (self.in_size[-1], self.out_size[-1])
        self.w_sign = None if w_sign is None else fixed_array(layer, "w_sign", w_sign, shape)
        if self.w_sign is not None and not bool(jnp.all(jnp.abs(self.w_sign) == 1)):
            raise ValueError(f"`{layer}`: `w_sign` must contain only +1 and -1 entries.")
        self._weight_fn = _SignedMagnitude(self.w_sign)
        self.weight = param_type(init_weight(layer, w_init, shape))

    def update(self, x):
        """Return ``x @ (|W| * w_sign)`` for ``x`` of shape ``(..., I)``."""
        check_input(type(self).__name__, x, self.in_size[-1])
        return matmul(x, self.weight.value, weight_fn=self._weight_fn)


def standardize_weight(weight, eps: float, gain=None):
    """``(W - mean) / sqrt(var * fan_in + eps) * gain``, statistics over the input axis.

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> from braintrace.nn.linear_variants import standardize_weight
    >>> w = standardize_weight(jnp.array([[1.0], [3.0]]), eps=0.0)
    >>> w.ravel()
    Array([-0.70710677,  0.70710677], dtype=float32)
    """
    fan_in = weight.shape[0]
    mean = jnp.mean(weight, axis=0, keepdims=True)
    var = jnp.var(weight, axis=0, keepdims=True)
    scale = jax.lax.rsqrt(var * fan_in + eps)
    if gain is not None:
        scale = scale * gain
    return (weight - mean) * scale


def _ws_keys(has_gain, has_bias):
    keys = ["weight"] + (["gain"] if has_gain else []) + (["bias"] if has_bias else [])
    return {key: i + 1 for i, key in enumerate(keys)}


def _ws_trainable_inputs(*, has_gain, has_bias, eps, mask_fn):
    return _ws_keys(has_gain, has_bias)


def _ws_effective(raw, *, has_gain, has_bias, eps, mask_fn):
    weight = standardize_weight(raw["weight"], eps, raw["gain"] if has_gain else None)
    out = dict(raw)
    out["weight"] = weight if mask_fn is None else mask_fn(weight)
    return out


def _ws_apply(x, effective, *, has_gain, has_bias, eps, mask_fn):
    # ``effective['gain']`` is already folded into ``effective['weight']``.
    y = jnp.matmul(x, effective["weight"])
    return y + effective["bias"] if has_bias else y


def _ws_trace_increment(x, df, *, has_gain, has_bias, eps, mask_fn):
    out = {"weight": x[..., None, :, None] * df[..., :, None, :]}
    if has_bias:
        out["bias"] = df
    return out


def _ws_trace_contract(trace, signal, effective, *, has_gain, has_bias, eps, mask_fn):
    out = {"weight": jnp.einsum("...ois,...os->io", trace["weight"], signal)}
    if has_bias:
        out["bias"] = jnp.einsum("...os,...os->o", trace["bias"], signal)
    if has_gain:
        # The gain acts only through the effective weight; its gradient comes from the VJP
        # of the transform (``ETPRule.raw_gradients``).
        out["gain"] = jnp.zeros_like(effective["gain"])
    return out


etp_ws_matmul_p = define_primitive(
    "etp_ws_matmul",
    _ws_apply,
    trainable_inputs=_ws_trainable_inputs,
    x_index=0,
    effective=_ws_effective,
    param_trace_increment=_ws_trace_increment,
    param_trace_contract=_ws_trace_contract,
)


class ScaledWSLinear(brainstate.nn.Module):
    """Dense layer with weight standardisation, ``y = x @ (Ŵ * w_mask) + b``.

    ``Ŵ = (W - mean) / sqrt(var * fan_in + eps) * gain``, with mean and variance over the
    input axis (per output unit) and a trainable per-output ``gain`` when ``ws_gain``
    (Qiao et al. 2019; Brock et al. 2021). The standardisation runs inside the ETP op
    ``etp_ws_matmul``, so the online gradient of ``W`` and ``gain`` is exact wherever the
    plain dense op's is.

    Parameters
    ----------
    in_size, out_size : int or tuple of int
        Input and output sizes (the last axis is the feature axis).
    w_init : callable or array_like
        Initialiser of the raw weight ``(I, O)``.
    b_init : callable or array_like or None
        Bias initialiser; ``None`` means no bias.
    w_mask : array_like, optional
        Fixed 0/1 array broadcastable to ``(I, O)``, applied after standardisation.
    ws_gain : bool
        Whether the layer has a trainable gain (shape ``(1, O)``, starts at one).
    eps : float
        Added to ``var * fan_in`` before the square root.
    name : str, optional
        Module name.
    param_type : type
        The state class of the parameters (default ``brainstate.ParamState``).

    Attributes
    ----------
    weight : param_type
        The dict ``{'weight': (I, O), 'gain': (1, O), 'bias': (O,)}`` (keys present as
        configured).

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> import braintrace.nn
    >>> layer = braintrace.nn.ScaledWSLinear(4, 3)
    >>> sorted(layer.weight.value)
    ['bias', 'gain', 'weight']
    >>> layer(jnp.ones((2, 4))).shape
    (2, 3)
    """

    def __init__(
        self,
        in_size: Size,
        out_size: Size,
        w_init: Initializer = braintools.init.KaimingNormal(),
        b_init: Initializer | None = braintools.init.ZeroInit(),
        w_mask: jax.typing.ArrayLike | None = None,
        ws_gain: bool = True,
        eps: float = 1e-4,
        name: str | None = None,
        param_type: type = brainstate.ParamState,
    ):
        super().__init__(name=name)
        layer = type(self).__name__
        self.in_size, self.out_size = feature_sizes(layer, in_size, out_size)
        n_in, n_out = self.in_size[-1], self.out_size[-1]
        if eps < 0:
            raise ValueError(f"`{layer}`: `eps` must be non-negative; got {eps}.")
        self.eps = float(eps)
        weight = init_weight(layer, w_init, (n_in, n_out))
        if _units.split(weight)[1] is not None:
            raise ValueError(f"`{layer}`: standardised weights are dimensionless; give `w_init` without a unit.")
        params = {"weight": weight}
        if ws_gain:
            params["gain"] = jnp.ones((1, n_out), dtype=jnp.asarray(weight).dtype)
        if b_init is not None:
            params["bias"] = init_bias(layer, b_init, n_out, weight)
        self.w_mask = None if w_mask is None else fixed_array(layer, "w_mask", w_mask, (n_in, n_out))
        self._mask_fn = None if w_mask is None else MaskedWeight(self.w_mask)
        self.weight = param_type(params)

    def update(self, x):
        """Return ``x @ (Ŵ * w_mask) + b`` for ``x`` of shape ``(..., I)``."""
        check_input(type(self).__name__, x, self.in_size[-1])
        params = self.weight.value
        xm, x_unit = _units.split(x)
        args = [jnp.asarray(xm), params["weight"]]
        if "gain" in params:
            args.append(params["gain"])
        bias = params.get("bias")
        if bias is not None:
            args.append(jnp.asarray(_units.bias_mantissa(bias, x_unit)))
        y = etp_ws_matmul_p.bind(*args, has_gain="gain" in params, has_bias=bias is not None,
                                 eps=self.eps, mask_fn=self._mask_fn)
        return _units.attach(y, x_unit)
