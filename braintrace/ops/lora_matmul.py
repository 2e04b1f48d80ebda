# Copyright 2026 The braintrace authors. Licensed under the Apache License, Version 2.0.
"""Low-rank (LoRA) ETP op: ``y = alpha · x @ b_fn(B) @ a_fn(A) + bias_fn(bias)``.

``x`` has shape ``(..., I)``, ``B`` ``(I, r)``, ``A`` ``(r, O)``, ``bias`` ``(O,)``. The
trainable inputs are ``lora_b``, ``lora_a`` (and ``bias``).

A trace shaped like ``B`` cannot be exact: the hidden Jacobian ``D`` acts on the output
axis, which ``B`` does not have. The op therefore traces the *effective* weight
``W = alpha · b_fn(B) @ a_fn(A)`` (``effective`` returns ``{'weight': W[, 'bias']}``), with the
dense layout ``(*V, I, S)``, and the gradients of ``B`` and ``A`` are one exact VJP of
``(B, A) ↦ W`` at solve time (:meth:`ETPRule.raw_gradients`). This is exact for D-RTRL
whenever the dense op would be, for both factors. Trace memory is that of a dense
``I → O`` op.
"""

from __future__ import annotations

from collections.abc import Callable

import jax.numpy as jnp

from . import _units
from .primitive import define_primitive

__all__ = ["lora_matmul", "etp_lora_matmul_p"]


def _apply(x, effective, *, alpha, has_bias, b_fn, a_fn, bias_fn):
    y = jnp.matmul(x, effective["weight"])
    if has_bias:
        y = y + effective["bias"]
    return y


def _effective(raw, *, alpha, has_bias, b_fn, a_fn, bias_fn):
    b = raw["lora_b"] if b_fn is None else b_fn(raw["lora_b"])
    a = raw["lora_a"] if a_fn is None else a_fn(raw["lora_a"])
    out = {"weight": alpha * jnp.matmul(b, a)}
    if has_bias:
        out["bias"] = raw["bias"] if bias_fn is None else bias_fn(raw["bias"])
    return out


def _trainable_inputs(*, alpha, has_bias, b_fn, a_fn, bias_fn):
    keys = {"lora_b": 1, "lora_a": 2}
    if has_bias:
        keys["bias"] = 3
    return keys


def _trace_increment(x, df, *, alpha, has_bias, b_fn, a_fn, bias_fn):
    # the dense-op increment on the effective weight: (*V, I, S) with V = (..., O)
    out = {"weight": x[..., None, :, None] * df[..., :, None, :]}
    if has_bias:
        out["bias"] = df
    return out


def _trace_contract(trace, signal, effective, *, alpha, has_bias, b_fn, a_fn, bias_fn):
    out = {"weight": jnp.einsum("...ois,...os->io", trace["weight"], signal)}
    if has_bias:
        out["bias"] = jnp.einsum("...os,...os->o", trace["bias"], signal)
    return out


etp_lora_matmul_p = define_primitive(
    "etp_lora_matmul",
    _apply,
    trainable_inputs=_trainable_inputs,
    x_index=0,
    effective=_effective,
    param_trace_increment=_trace_increment,
    param_trace_contract=_trace_contract,
)


def _alpha_value(alpha) -> float:
    try:
        return float(alpha)
    except Exception:  # a traced or non-scalar alpha
        raise TypeError(
            f"`lora_matmul` expects `alpha` to be a concrete Python scalar (it is a static parameter); "
            f"got {type(alpha).__name__}."
        ) from None


def lora_matmul(x, B, A, alpha=1.0, bias=None, b_fn: Callable | None = None, a_fn: Callable | None = None,
                bias_fn: Callable | None = None):
    """Trainable low-rank product ``alpha · x @ b_fn(B) @ a_fn(A) + bias_fn(bias)``.

    Parameters
    ----------
    x : array_like
        Input of shape ``(I,)`` or ``(B, I)`` (more leading axes are accepted too).
        brainunit quantities are supported (the output unit is ``unit(x)·unit(B)·unit(A)``).
    B : array_like
        Down-projection of shape ``(I, r)`` (trainable key ``lora_b``).
    A : array_like
        Up-projection of shape ``(r, O)`` (trainable key ``lora_a``).
    alpha : float
        Static scale of the low-rank update.
    bias : array_like, optional
        Bias of shape ``(O,)``, in the unit of the output.
    b_fn, a_fn, bias_fn : callable, optional
        Differentiable transforms applied inside the op (hashed by identity).

    Returns
    -------
    jax.Array or brainunit.Quantity
        Shape ``(..., O)``.

    Raises
    ------
    ValueError
        If ``B``/``A`` are not 2-D, their rank axes differ, ``x`` does not end in ``I``, or
        ``bias`` is not ``(O,)``.
    TypeError
        If ``alpha`` is not a concrete scalar.

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> import braintrace
    >>> braintrace.lora_matmul(jnp.ones(3), jnp.ones((3, 2)), jnp.ones((2, 4)), alpha=0.5)
    Array([3., 3., 3., 3.], dtype=float32)
    """
    alpha = _alpha_value(alpha)
    xm, xu = _units.split(x)
    bm, bu = _units.split(B)
    am, au = _units.split(A)
    unit = _units.combine_units(xu, bu, au)
    xm, bm, am = jnp.asarray(xm), jnp.asarray(bm), jnp.asarray(am)
    if bm.ndim != 2:
        raise ValueError(f"`lora_matmul` expects `B` of shape (I, r); got shape {bm.shape}.")
    if am.ndim != 2:
        raise ValueError(f"`lora_matmul` expects `A` of shape (r, O); got shape {am.shape}.")
    if am.shape[0] != bm.shape[1]:
        raise ValueError(
            f"`lora_matmul` expects the rank axes of `B` {bm.shape} and `A` {am.shape} to match "
            f"(B is (I, r), A is (r, O))."
        )
    if xm.ndim < 1 or xm.shape[-1] != bm.shape[0]:
        raise ValueError(
            f"`lora_matmul` expects `x` with trailing axis {bm.shape[0]} to match `B` {bm.shape}; "
            f"got x of shape {xm.shape}."
        )
    args = [xm, bm, am]
    if bias is not None:
        cm = jnp.asarray(_units.bias_mantissa(bias, unit))
        if cm.shape != (am.shape[1],):
            raise ValueError(f"`lora_matmul` expects `bias` of shape ({am.shape[1]},); got {cm.shape}.")
        args.append(cm)
    y = etp_lora_matmul_p.bind(*args, alpha=alpha, has_bias=bias is not None, b_fn=b_fn, a_fn=a_fn,
                               bias_fn=bias_fn)
    return _units.attach(y, unit)
