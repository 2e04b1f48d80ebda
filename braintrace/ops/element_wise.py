# Copyright 2026 The braintrace authors. Licensed under the Apache License, Version 2.0.
"""Element-wise ETP op: ``y = weight_fn(w)``, a marker for parameters used element-wise.

Time constants, thresholds and per-neuron gains enter the dynamics element-wise. Marking
them with :func:`element_wise` makes them trainable online: the trace has the hidden
group's shape ``(*V, S)``, and axes the parameter lacks (for example a batch axis) are
summed when the gradient is formed.
"""

from __future__ import annotations

from collections.abc import Callable

import jax.numpy as jnp

from . import _units
from .primitive import define_primitive

__all__ = ["element_wise", "etp_element_wise_p", "sum_to_shape"]


def sum_to_shape(value, shape):
    """Sum ``value`` over the axes that broadcasting ``shape`` to ``value.shape`` added.

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> from braintrace.ops import sum_to_shape
    >>> sum_to_shape(jnp.ones((2, 3, 4)), (1, 4))
    Array([[6., 6., 6., 6.]], dtype=float32)
    """
    shape = tuple(shape)
    lead = value.ndim - len(shape)
    if lead < 0:
        raise ValueError(f"cannot reduce an array of shape {value.shape} to {shape}.")
    value = jnp.sum(value, axis=tuple(range(lead))) if lead else value
    axes = tuple(i for i, n in enumerate(shape) if n == 1 and value.shape[i] != 1)
    if axes:
        value = jnp.sum(value, axis=axes, keepdims=True)
    return value


def _apply(x, effective, *, weight_fn):
    return effective["weight"]


def _effective(raw, *, weight_fn):
    return {"weight": raw["weight"] if weight_fn is None else weight_fn(raw["weight"])}


def _trace_increment(x, df, *, weight_fn):
    return {"weight": df}


def _trace_contract(trace, signal, effective, *, weight_fn):
    grad = jnp.sum(trace["weight"] * signal, axis=-1)
    return {"weight": sum_to_shape(grad, jnp.shape(effective["weight"]))}


etp_element_wise_p = define_primitive(
    "etp_element_wise",
    _apply,
    trainable_inputs={"weight": 0},
    x_index=None,
    effective=_effective,
    param_trace_increment=_trace_increment,
    param_trace_contract=_trace_contract,
    gradient_enabled=True,
)


def element_wise(weight, *, weight_fn: Callable | None = None):
    """Mark a parameter used element-wise in the dynamics: returns ``weight_fn(weight)``.

    Parameters
    ----------
    weight : array_like
        The parameter value (pass ``param_state.value``).
    weight_fn : callable, optional
        A differentiable element-wise transform (for example ``jnp.exp`` for a
        log-parameterised time constant), hashed by identity.

    Returns
    -------
    jax.Array or brainunit.Quantity
        ``weight_fn(weight)`` (units are kept when no ``weight_fn`` is given).

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> import braintrace
    >>> braintrace.element_wise(jnp.zeros(3), weight_fn=jnp.exp)
    Array([1., 1., 1.], dtype=float32)
    """
    wm, wu = _units.split(weight)
    y = etp_element_wise_p.bind(jnp.asarray(wm), weight_fn=weight_fn)
    return _units.attach(y, wu if weight_fn is None else None)
