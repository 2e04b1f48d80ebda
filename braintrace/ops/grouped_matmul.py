# Copyright 2026 The braintrace authors. Licensed under the Apache License, Version 2.0.
"""Grouped dense ETP op: ``y[..., g, n] = Σ_k x[..., g, k] W[g, k, n] + b[g, n]``.

``x`` is ``(..., G, K)`` (any number of leading axes), ``W`` ``(G, K, N)`` and ``b`` ``(G, N)``:
``G`` independent dense products, one per group. The D-RTRL trace of ``W`` is ``(*V, K, S)``
with ``V = (..., G, N)``: for output ``(g, n)``, the column ``W[g, :, n]`` that feeds it.
"""

from __future__ import annotations

from collections.abc import Callable

import jax.numpy as jnp

from . import _units
from .primitive import define_primitive

__all__ = ["grouped_matmul", "etp_grouped_matmul_p"]


def _apply(x, effective, *, has_bias, weight_fn, bias_fn):
    y = jnp.einsum("...gk,gkn->...gn", x, effective["weight"])
    if has_bias:
        y = y + effective["bias"]
    return y


def _effective(raw, *, has_bias, weight_fn, bias_fn):
    out = {"weight": raw["weight"] if weight_fn is None else weight_fn(raw["weight"])}
    if has_bias:
        out["bias"] = raw["bias"] if bias_fn is None else bias_fn(raw["bias"])
    return out


def _trainable_inputs(*, has_bias, weight_fn, bias_fn):
    return {"weight": 1, "bias": 2} if has_bias else {"weight": 1}


def _trace_increment(x, df, *, has_bias, weight_fn, bias_fn):
    # x (..., G, K) -> (..., G, 1, K, 1); df (..., G, N, S) -> (..., G, N, 1, S)
    out = {"weight": x[..., :, None, :, None] * df[..., :, :, None, :]}
    if has_bias:
        out["bias"] = df
    return out


def _trace_contract(trace, signal, effective, *, has_bias, weight_fn, bias_fn):
    out = {"weight": jnp.einsum("...gnks,...gns->gkn", trace["weight"], signal)}
    if has_bias:
        out["bias"] = jnp.einsum("...gns,...gns->gn", trace["bias"], signal)
    return out


etp_grouped_matmul_p = define_primitive(
    "etp_grouped_matmul",
    _apply,
    trainable_inputs=_trainable_inputs,
    x_index=0,
    effective=_effective,
    param_trace_increment=_trace_increment,
    param_trace_contract=_trace_contract,
)


def grouped_matmul(x, weight, bias=None, weight_fn: Callable | None = None, bias_fn: Callable | None = None):
    """Trainable grouped dense product ``y[..., g, :] = x[..., g, :] @ W[g] + b[g]``.

    ``G`` independent dense layers evaluated as one op (one trace per group, no mixing
    between groups). Transform hooks run inside the op and are hashed by identity.

    Parameters
    ----------
    x : array_like
        Input ``(G, K)`` or ``(..., G, K)`` (leading batch axes are optional). brainunit
        quantities are supported.
    weight : array_like
        Weight ``(G, K, N)``.
    bias : array_like, optional
        Bias ``(G, N)``, in the unit of the output.
    weight_fn, bias_fn : callable, optional
        Differentiable transforms applied to the raw parameters inside the op.

    Returns
    -------
    jax.Array or brainunit.Quantity
        Shape ``(..., G, N)``.

    Raises
    ------
    ValueError
        When the shapes of ``x``, ``weight`` and ``bias`` do not fit together.

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> import braintrace
    >>> w = jnp.stack([jnp.ones((3, 2)), 2 * jnp.ones((3, 2))])  # two groups
    >>> braintrace.grouped_matmul(jnp.ones((2, 3)), w)
    Array([[3., 3.],
           [6., 6.]], dtype=float32)
    >>> braintrace.grouped_matmul(jnp.ones((5, 2, 3)), w, jnp.zeros((2, 2))).shape
    (5, 2, 2)
    """
    xm, xu = _units.split(x)
    wm, wu = _units.split(weight)
    unit = _units.combine_units(xu, wu)
    xm, wm = jnp.asarray(xm), jnp.asarray(wm)
    if wm.ndim != 3:
        raise ValueError(f"`grouped_matmul` expects a 3-D weight (G, K, N); got shape {wm.shape}.")
    if xm.ndim < 2 or xm.shape[-2:] != wm.shape[:2]:
        raise ValueError(
            f"`grouped_matmul` expects x of shape (..., {wm.shape[0]}, {wm.shape[1]}) to match weight "
            f"(G, K, N) = {wm.shape}; got x of shape {xm.shape}."
        )
    args = [xm, wm]
    if bias is not None:
        bm = jnp.asarray(_units.bias_mantissa(bias, unit))
        if bm.shape != (wm.shape[0], wm.shape[2]):
            raise ValueError(
                f"`grouped_matmul` expects a bias of shape (G, N) = ({wm.shape[0]}, {wm.shape[2]}); got {bm.shape}."
            )
        args.append(bm)
    y = etp_grouped_matmul_p.bind(*args, has_bias=bias is not None, weight_fn=weight_fn, bias_fn=bias_fn)
    return _units.attach(y, unit)
