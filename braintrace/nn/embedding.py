# Copyright 2026 The braintrace authors. Licensed under the Apache License, Version 2.0.
"""Embedding layer: a table lookup through the trainable :func:`braintrace.embedding` op."""

from __future__ import annotations

from collections.abc import Callable

import brainstate
import braintools
import brainunit as u
import jax
import jax.numpy as jnp

from .. import _errors
from ..ops.embedding import embedding

__all__ = ["Embedding"]


class _TableTransform:
    """The op's ``weight_fn`` for ``padding_idx`` and ``max_norm`` (one instance per layer).

    * The padding row keeps its value but gets no gradient (PyTorch's ``padding_idx``).
    * With ``max_norm``, rows whose ``norm_type``-norm exceeds it are scaled down to it. The
      scale is a constant for the gradient, as in PyTorch, where the renormalisation rewrites
      the weight before the lookup and is not differentiated.
    """

    def __init__(self, padding_idx: int | None, max_norm: float | None, norm_type: float):
        self.padding_idx = padding_idx
        self.max_norm = max_norm
        self.norm_type = norm_type

    def __call__(self, table):
        if self.max_norm is not None:
            norms = jnp.sum(jnp.abs(table) ** self.norm_type, axis=-1, keepdims=True) ** (1.0 / self.norm_type)
            scale = jnp.where(norms > self.max_norm, self.max_norm / (norms + 1e-7), 1.0)
            table = table + jax.lax.stop_gradient(table * scale - table)
        if self.padding_idx is not None:
            row = jnp.arange(table.shape[0])[:, None] == self.padding_idx
            table = jnp.where(row, jax.lax.stop_gradient(table), table)
        return table


class Embedding(brainstate.nn.Module):
    """A lookup table ``y = table[indices]`` trained online through :func:`braintrace.embedding`.

    The table ``(num_embeddings, embedding_size)`` is a ``param_type`` state named ``weight``.
    Its D-RTRL trace is ``(*lead, embedding_size, num_embeddings, S)`` (it grows with the
    vocabulary), exact for element-wise recurrences on the output; ES-D-RTRL filters the
    one-hot of the indices.

    Parameters
    ----------
    num_embeddings : int
        Vocabulary size ``V``.
    embedding_size : int
        Row size ``D``.
    embedding_init : callable or array_like
        Table initialiser at ``(V, D)`` (default ``braintools.init.LecunUniform()``) or a
        ``(V, D)`` array.
    padding_idx : int, optional
        A row that is zero at initialisation and gets no gradient (negative values count
        from the end), as in PyTorch.
    max_norm : float, optional
        Looked-up rows whose ``norm_type``-norm exceeds ``max_norm`` are scaled to it (the
        scale is not differentiated, as in PyTorch; the stored table is not rewritten).
    norm_type : float
        The ``p`` of the norm used with ``max_norm`` (default 2).
    scale_grad_by_freq : bool
        Must be False: scaling by in-batch token frequency has no per-step trace form.
    freeze : bool
        The table is a fixed ``brainstate.State`` (not trainable, no ETP op).
    name : str, optional
        Module name.
    param_type : type
        The state class of a trainable table (default ``brainstate.ParamState``).

    Raises
    ------
    ValueError
        For non-positive sizes, a table of the wrong shape, an out-of-range ``padding_idx``
        or a non-positive ``max_norm``/``norm_type``.
    NotSupportedError
        For ``scale_grad_by_freq=True``.
    TypeError
        (At call time) for non-integer indices.

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> import braintrace
    >>> emb = braintrace.nn.Embedding(10, 3, padding_idx=0)
    >>> emb(jnp.array([0, 4, 9])).shape
    (3, 3)
    >>> float(jnp.abs(emb(jnp.array(0))).sum())
    0.0
    """

    def __init__(
        self,
        num_embeddings: int,
        embedding_size: int,
        embedding_init: Callable | jax.typing.ArrayLike = braintools.init.LecunUniform(),
        padding_idx: int | None = None,
        max_norm: float | None = None,
        norm_type: float = 2.0,
        scale_grad_by_freq: bool = False,
        freeze: bool = False,
        name: str | None = None,
        param_type: type = brainstate.ParamState,
    ):
        super().__init__(name=name)
        layer = type(self).__name__
        for arg, value in (("num_embeddings", num_embeddings), ("embedding_size", embedding_size)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"`{layer}`: `{arg}` must be a positive int; got {value!r}.")
        if scale_grad_by_freq:
            raise _errors.NotSupportedError(
                f"`{layer}`: scale_grad_by_freq=True scales gradients by the token frequency of a whole "
                "mini-batch, which has no per-step eligibility-trace form. Use scale_grad_by_freq=False."
            )
        if padding_idx is not None:
            if not -num_embeddings <= padding_idx < num_embeddings:
                raise ValueError(
                    f"`{layer}`: `padding_idx` = {padding_idx} must lie in [-{num_embeddings}, {num_embeddings})."
                )
            padding_idx = int(padding_idx) % num_embeddings
        if max_norm is not None and not max_norm > 0:
            raise ValueError(f"`{layer}`: `max_norm` must be positive; got {max_norm!r}.")
        if not norm_type > 0:
            raise ValueError(f"`{layer}`: `norm_type` must be positive; got {norm_type!r}.")
        self.num_embeddings = num_embeddings
        self.embedding_size = embedding_size
        self.padding_idx = padding_idx
        self.max_norm = max_norm
        self.norm_type = float(norm_type)
        self.freeze = bool(freeze)
        self.in_size = ()
        self.out_size = (embedding_size,)
        shape = (num_embeddings, embedding_size)
        try:
            table = braintools.init.param(embedding_init, shape, allow_none=False, allow_scalar=False)
        except ValueError as err:
            raise ValueError(f"`{layer}`: `embedding_init` does not give a table of shape {shape}: {err}") from None
        if tuple(u.math.shape(table)) != shape:
            raise ValueError(f"`{layer}`: `embedding_init` gave shape {u.math.shape(table)}; expected {shape}.")
        if padding_idx is not None:
            zeroed = jnp.asarray(u.get_mantissa(table)).at[padding_idx].set(0)
            table = zeroed if u.get_unit(table).is_unitless else u.Quantity(zeroed, unit=u.get_unit(table))
        needs_fn = padding_idx is not None or max_norm is not None
        self._weight_fn = _TableTransform(padding_idx, max_norm, self.norm_type) if needs_fn else None
        self.weight = brainstate.State(table) if freeze else param_type(table)

    def update(self, indices):
        """Rows of the table for integer ``indices`` of any shape: ``(*indices.shape, D)``."""
        table = self.weight.value
        if self.freeze:
            table = jax.lax.stop_gradient(table)
            if self._weight_fn is not None:
                table = self._weight_fn(table)
            return _lookup(indices, table)
        return embedding(indices, table, weight_fn=self._weight_fn)


def _lookup(indices, table):
    """The plain-JAX lookup with the op's semantics (NaN rows for out-of-range ids)."""
    idx = jnp.asarray(indices)
    if not jnp.issubdtype(idx.dtype, jnp.integer):
        raise TypeError(f"`Embedding` expects integer indices; got dtype {idx.dtype} with shape {idx.shape}.")
    n = u.math.shape(table)[0]
    mantissa = jnp.take(u.get_mantissa(table), jnp.where(idx < 0, n, idx), axis=0, mode="fill",
                        fill_value=jnp.nan)
    unit = u.get_unit(table)
    return mantissa if unit.is_unitless else u.Quantity(mantissa, unit=unit)
