# Copyright 2026 The braintrace authors. Licensed under the Apache License, Version 2.0.
"""Dense ETP op: ``y = x @ weight_fn(W) + bias_fn(b)``.

``x`` has shape ``(..., I)`` (any number of leading axes), ``W`` ``(I, O)``, ``b`` ``(O,)``.
The D-RTRL trace of ``W`` is ``(*V, I, S)`` with ``V = (..., O)``: for output unit ``o``,
the column ``W[:, o]`` that feeds it.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Callable

import jax
import jax.numpy as jnp

from . import _units
from .primitive import define_primitive

__all__ = ["matmul", "etp_matmul_p"]


def _apply(x, effective, *, has_bias, weight_fn, bias_fn):
    y = jnp.matmul(x, effective["weight"])
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
    out = {"weight": x[..., None, :, None] * df[..., :, None, :]}
    if has_bias:
        out["bias"] = df
    return out


# Whether the leading (batch) axes of the traces are sharded across devices: then the
# per-position loop of `_contract_leading_by_scan` would gather the trace onto every device,
# so the single einsum (a local reduction plus one all-reduce) is used instead.
_BATCH_SHARDED = contextvars.ContextVar("braintrace_batch_sharded_traces", default=False)


@contextlib.contextmanager
def batch_sharded_traces(sharded: bool = True):
    """While tracing inside this context, contract trace batch axes as sharded ones."""
    token = _BATCH_SHARDED.set(bool(sharded))
    try:
        yield
    finally:
        _BATCH_SHARDED.reset(token)


def _trace_contract(trace, signal, effective, *, has_bias, weight_fn, bias_fn):
    weight = trace["weight"]
    if weight.ndim > 3 and _BATCH_SHARDED.get():
        contracted = _contract_leading_by_einsum(weight, signal)
    elif weight.ndim > 3:  # leading (batch) axes to sum over
        contracted = jax.lax.platform_dependent(weight, signal, cpu=_contract_leading_by_scan,
                                                default=_contract_leading_by_einsum)
    else:
        contracted = jnp.einsum("ois,os->io", weight, signal)
    out = {"weight": contracted}
    if has_bias:
        out["bias"] = jnp.einsum("...os,...os->o", trace["bias"], signal)
    return out


def _contract_leading_by_einsum(weight, signal):
    return jnp.einsum("...ois,...os->io", weight, signal)


def _contract_leading_by_scan(weight, signal):
    """``Σ_lead Σ_s ε[..., o, i, s] L[..., o, s]`` as a loop over the leading positions.

    As one einsum, ``o`` is a batch axis that is not major, so XLA:CPU copies the whole
    ``(..., O, I, S)`` trace into ``(O, ..., I·S)`` order every step and runs ``O`` tiny
    matrix-vector products; a reduction over the leading axes is emitted as a strided
    loop. Summing one contiguous ``(O, I, S)`` slice at a time reads the trace once, and
    the ``(O, I)`` accumulator stays in cache (the D-RTRL solve ran 2-3x faster, issue 14).
    """
    o, i, s = weight.shape[-3:]
    slices = (weight.reshape(-1, o, i, s), signal.reshape(-1, o, s))

    def add_one(total, pair):
        trace_slice, signal_slice = pair
        if s > 8:
            return total + jnp.einsum("ois,os->oi", trace_slice, signal_slice), None
        # A few states: explicit multiply-adds (as an einsum, `o` becomes a batch axis of
        # O tiny dot products).
        for state in range(s):
            total = total + trace_slice[:, :, state] * signal_slice[:, None, state]
        return total, None

    total, _ = jax.lax.scan(add_one, jnp.zeros((o, i), jnp.result_type(weight, signal)), slices)
    return total.T


etp_matmul_p = define_primitive(
    "etp_matmul",
    _apply,
    trainable_inputs=_trainable_inputs,
    x_index=0,
    effective=_effective,
    param_trace_increment=_trace_increment,
    param_trace_contract=_trace_contract,
)


def matmul(x, weight, bias=None, *, weight_fn: Callable | None = None, bias_fn: Callable | None = None):
    """Trainable dense product ``x @ weight_fn(weight) + bias_fn(bias)``.

    Pass ``ParamState`` values as ``weight``/``bias``; the compiler traces them back to
    their states. Transform hooks run inside the op, so their derivative is part of the
    online gradient (an outside ``mask * W`` would not be differentiated). Hooks are hashed
    by identity: define them once, not as a fresh lambda per call.

    Parameters
    ----------
    x : array_like
        Input of shape ``(..., I)``. brainunit quantities are supported.
    weight : array_like
        Weight of shape ``(I, O)``.
    bias : array_like, optional
        Bias of shape ``(O,)``, in the unit of the output.
    weight_fn, bias_fn : callable, optional
        Differentiable transforms applied to the raw parameters inside the op.

    Returns
    -------
    jax.Array or brainunit.Quantity
        Shape ``(..., O)``.

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> import braintrace
    >>> braintrace.matmul(jnp.ones(3), jnp.ones((3, 2)), jnp.ones(2))
    Array([4., 4.], dtype=float32)
    """
    xm, xu = _units.split(x)
    wm, wu = _units.split(weight)
    unit = _units.combine_units(xu, wu)
    xm, wm = jnp.asarray(xm), jnp.asarray(wm)
    if wm.ndim != 2:
        raise ValueError(f"`matmul` expects a 2-D weight (I, O); got shape {wm.shape}.")
    if xm.ndim < 1 or xm.shape[-1] != wm.shape[0]:
        raise ValueError(
            f"`matmul` expects x with trailing axis {wm.shape[0]} to match weight {wm.shape}; "
            f"got x of shape {xm.shape}."
        )
    args = [xm, wm]
    if bias is not None:
        bm = jnp.asarray(_units.bias_mantissa(bias, unit))
        if bm.shape != (wm.shape[1],):
            raise ValueError(f"`matmul` expects a bias of shape ({wm.shape[1]},); got {bm.shape}.")
        args.append(bm)
    y = etp_matmul_p.bind(*args, has_bias=bias is not None, weight_fn=weight_fn, bias_fn=bias_fn)
    return _units.attach(y, unit)
