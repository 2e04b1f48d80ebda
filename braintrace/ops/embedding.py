# Copyright 2026 The braintrace authors. Licensed under the Apache License, Version 2.0.
"""Embedding ETP op: ``y[..., :] = weight_fn(table)[indices[...]]``.

``indices`` is an integer array of any shape (a scalar token, ``(B,)``, ``(B, L)``, ...); the
table is ``(V, D)`` and ``y`` is ``(*indices.shape, D)``. Indices outside ``[0, V)``
(negative ones included) give NaN rows and no gradient, so a bad token id cannot pass
silently.

Traces. With hidden positions ``(*lead, D)`` the D-RTRL trace of the table is
``(*lead, D, V, S)``: for output unit ``d`` the column ``table[:, d]`` that feeds it, and
the increment is the one-hot of the index. It grows with the vocabulary. The ES-D-RTRL input
trace filters the one-hot ``(*lead, V)`` (in the table dtype), and ``apply`` accepts that
float representation in place of the indices (``y = one_hot @ table``).
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from . import _units
from .primitive import define_primitive

__all__ = ["embedding", "etp_embedding_p"]


def _one_hot(indices, num_embeddings, dtype):
    return jax.nn.one_hot(indices, num_embeddings, dtype=dtype)


def _apply(x, effective, *, num_embeddings, dtype, weight_fn):
    table = effective["weight"]
    if not jnp.issubdtype(x.dtype, jnp.integer):
        # the filtered one-hot representation (ES-D-RTRL input trace)
        return jnp.matmul(x.astype(table.dtype), table)
    # out-of-range ids (negative included) select no row: NaN output, zero gradient
    safe = jnp.where(x < 0, num_embeddings, x)
    return jnp.take(table, safe, axis=0, mode="fill", fill_value=jnp.nan)


def _effective(raw, *, num_embeddings, dtype, weight_fn):
    return {"weight": raw["weight"] if weight_fn is None else weight_fn(raw["weight"])}


def _x_repr(x, *, num_embeddings, dtype, weight_fn):
    if not jnp.issubdtype(x.dtype, jnp.integer):
        return x
    return _one_hot(x, num_embeddings, dtype)


def _trace_increment(x, df, *, num_embeddings, dtype, weight_fn):
    onehot = _x_repr(x, num_embeddings=num_embeddings, dtype=df.dtype, weight_fn=weight_fn)
    # one-hot (..., V) -> (..., 1, V, 1); df (..., D, S) -> (..., D, 1, S)
    return {"weight": onehot[..., None, :, None].astype(df.dtype) * df[..., :, None, :]}


def _trace_contract(trace, signal, effective, *, num_embeddings, dtype, weight_fn):
    return {"weight": jnp.einsum("...dvs,...ds->vd", trace["weight"], signal)}


etp_embedding_p = define_primitive(
    "etp_embedding",
    _apply,
    trainable_inputs={"weight": 1},
    x_index=0,
    effective=_effective,
    param_trace_increment=_trace_increment,
    param_trace_contract=_trace_contract,
    io_input=_x_repr,
)


def embedding(indices, weight, weight_fn: Callable | None = None):
    """Trainable table lookup ``y = weight_fn(weight)[indices]``.

    Parameters
    ----------
    indices : array_like of int
        Token ids of any shape (a scalar, ``(B,)``, ``(B, L)``, ...). Ids outside
        ``[0, num_embeddings)`` produce NaN rows.
    weight : array_like
        The table ``(num_embeddings, embedding_size)`` (a ``ParamState`` value).
    weight_fn : callable, optional
        A differentiable transform of the table applied inside the op (hashed by identity),
        e.g. zeroing the gradient of a padding row.

    Returns
    -------
    jax.Array or brainunit.Quantity
        Shape ``(*indices.shape, embedding_size)``, in the unit of the table.

    Raises
    ------
    TypeError
        When ``indices`` is not an integer array.
    ValueError
        When the table is not 2-D.

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> import braintrace
    >>> table = jnp.arange(6.0).reshape(3, 2)
    >>> braintrace.embedding(jnp.array([2, 0]), table)
    Array([[4., 5.],
           [0., 1.]], dtype=float32)
    """
    wm, wu = _units.split(weight)
    wm = jnp.asarray(wm)
    idx = jnp.asarray(indices)
    if not jnp.issubdtype(idx.dtype, jnp.integer):
        raise TypeError(f"`embedding` expects integer indices; got dtype {idx.dtype} with shape {idx.shape}.")
    if wm.ndim != 2:
        raise ValueError(
            f"`embedding` expects a 2-D table (num_embeddings, embedding_size); got shape {wm.shape}."
        )
    y = etp_embedding_p.bind(idx, wm, num_embeddings=int(wm.shape[0]), dtype=np.dtype(wm.dtype),
                             weight_fn=weight_fn)
    return _units.attach(y, wu)
