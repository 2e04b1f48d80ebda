# Copyright 2026 The braintrace authors. Licensed under the Apache License, Version 2.0.
"""Sparse ETP op: ``y = x @ M(weight_fn(w)) + bias_fn(b)`` with a fixed sparsity pattern.

Only the ``nnz`` stored values ``w`` (shape ``(nnz,)``) are trainable; the pattern (row and
column of every stored value) is static. Stored value ``n`` links input ``rows[n]`` to
output ``cols[n]``, so ``y[..., cols[n]] += x[..., rows[n]] * w[n]`` (duplicates add up, as
in the dense matrix of the structure).

The D-RTRL trace of ``w`` is ``(*lead, nnz, S)``, not the dense ``(*lead, O, I, S)``: value
``n`` only ever feeds output ``cols[n]``, so its trace row is that position's ``(*V, *C, S)``
slice with everything else zero, stored compactly. The op therefore brings its own trace
rules: the increment ``x[rows[n]] · df[cols[n]]``, the contraction ``Σ trace[n]·L[cols[n]]``
and the roll (``param_trace_roll``), which applies ``D`` gathered at each value's column.
"""

from __future__ import annotations

from collections.abc import Callable

import brainunit as u
import jax
import jax.numpy as jnp
import numpy as np

from . import _units
from .primitive import define_primitive

__all__ = ["sparse_matmul", "etp_sparse_matmul_p", "SparseStructure"]


class SparseStructure:
    """The static pattern of a sparse ``(I, O)`` matrix: row and column of each stored value.

    Hashable (by content) so that it can travel in an equation's static params. Build it
    with :meth:`of` from a ``brainunit.sparse`` ``CSR``/``CSC``/``COO`` or a brainevent
    ``CSR``/``CSC``.

    Parameters
    ----------
    rows, cols : array_like of int
        Input row and output column of every stored value, in storage order.
    shape : tuple of int
        ``(I, O)``.

    Examples
    --------
    >>> import brainunit as u, jax.numpy as jnp
    >>> from braintrace.ops import SparseStructure
    >>> m = u.sparse.CSR.fromdense(jnp.array([[0., 1.], [2., 3.]]))
    >>> s = SparseStructure.of(m)
    >>> s.shape, s.nnz, s.rows.tolist(), s.cols.tolist()
    ((2, 2), 3, [0, 1, 1], [1, 0, 1])
    """

    __slots__ = ("rows", "cols", "shape", "_hash")

    def __init__(self, rows, cols, shape):
        self.rows = np.asarray(rows, dtype=np.int32)
        self.cols = np.asarray(cols, dtype=np.int32)
        self.shape = tuple(int(n) for n in shape)
        if self.rows.ndim != 1 or self.rows.shape != self.cols.shape or len(self.shape) != 2:
            raise ValueError(
                f"a sparse structure needs 1-D rows and cols of equal length and a 2-D shape; got rows "
                f"{self.rows.shape}, cols {self.cols.shape}, shape {self.shape}."
            )
        if self.nnz and (self.rows.min() < 0 or self.rows.max() >= self.shape[0]
                         or self.cols.min() < 0 or self.cols.max() >= self.shape[1]):
            raise ValueError(f"sparse structure indices fall outside its shape {self.shape}.")
        self.rows.setflags(write=False)
        self.cols.setflags(write=False)
        self._hash = hash((self.shape, self.rows.tobytes(), self.cols.tobytes()))

    @property
    def nnz(self) -> int:
        """Number of stored values."""
        return int(self.rows.shape[0])

    @classmethod
    def of(cls, sparse_mat) -> SparseStructure:
        """The structure of a sparse matrix (``TypeError`` for unsupported types)."""
        if isinstance(sparse_mat, SparseStructure):
            return sparse_mat
        kind = _format_of(sparse_mat)
        if kind is None:
            raise TypeError(
                "`sparse_matmul` expects `sparse_mat` to be a brainunit.sparse CSR/CSC/COO or a brainevent "
                f"CSR/CSC matrix (its pattern is used, its values are not); got {type(sparse_mat).__name__}."
            )
        shape = tuple(sparse_mat.shape)
        if len(shape) != 2:
            raise ValueError(f"`sparse_mat` must be 2-D (I, O); got shape {shape}.")
        try:
            if kind == "coo":
                rows, cols = np.asarray(sparse_mat.row), np.asarray(sparse_mat.col)
            else:
                indices, indptr = np.asarray(sparse_mat.indices), np.asarray(sparse_mat.indptr)
                outer = np.repeat(np.arange(indptr.shape[0] - 1), np.diff(indptr))
                rows, cols = (outer, indices) if kind == "csr" else (indices, outer)
        except jax.errors.TracerArrayConversionError:
            raise ValueError(
                "the indices of `sparse_mat` are traced values; the sparsity pattern is static, so build the "
                "matrix outside `jit`/`grad` (only its values may be traced, and they are passed as `weight`)."
            ) from None
        return cls(rows, cols, shape)

    def todense(self, values) -> jax.Array:
        """The dense ``(I, O)`` matrix with ``values`` at the stored positions (summed)."""
        return jnp.zeros(self.shape, jnp.result_type(values)).at[self.rows, self.cols].add(values)

    def __eq__(self, other) -> bool:
        if not isinstance(other, SparseStructure):
            return NotImplemented
        return (self._hash == other._hash and self.shape == other.shape
                and np.array_equal(self.rows, other.rows) and np.array_equal(self.cols, other.cols))

    def __hash__(self) -> int:
        return self._hash

    def __repr__(self) -> str:
        return f"SparseStructure(shape={self.shape}, nnz={self.nnz})"


def _format_of(sparse_mat):
    import brainevent

    if isinstance(sparse_mat, u.sparse.COO):
        return "coo"
    if isinstance(sparse_mat, (u.sparse.CSR, brainevent.CSR)):
        return "csr"
    if isinstance(sparse_mat, (u.sparse.CSC, brainevent.CSC)):
        return "csc"
    return None


def _apply(x, effective, *, structure, has_bias, weight_fn, bias_fn):
    w = effective["weight"]
    contrib = jnp.take(x, structure.rows, axis=-1) * w
    y = jnp.zeros(contrib.shape[:-1] + (structure.shape[1],), contrib.dtype).at[..., structure.cols].add(contrib)
    if has_bias:
        y = y + effective["bias"]
    return y


def _effective(raw, *, structure, has_bias, weight_fn, bias_fn):
    out = {"weight": raw["weight"] if weight_fn is None else weight_fn(raw["weight"])}
    if has_bias:
        out["bias"] = raw["bias"] if bias_fn is None else bias_fn(raw["bias"])
    return out


def _trainable_inputs(*, structure, has_bias, weight_fn, bias_fn):
    return {"weight": 1, "bias": 2} if has_bias else {"weight": 1}


def _trace_increment(x, df, *, structure, has_bias, weight_fn, bias_fn):
    # value n: x[..., rows[n]] * df[..., cols[n], s]  ->  (*lead, nnz, S)
    out = {"weight": jnp.take(x, structure.rows, axis=-1)[..., None] * jnp.take(df, structure.cols, axis=-2)}
    if has_bias:
        out["bias"] = df
    return out


def _trace_contract(trace, signal, effective, *, structure, has_bias, weight_fn, bias_fn):
    out = {"weight": jnp.einsum("...ns,...ns->n", trace["weight"], jnp.take(signal, structure.cols, axis=-2))}
    if has_bias:
        out["bias"] = jnp.einsum("...os,...os->o", trace["bias"], signal)
    return out


def _per_position(jacobian, trace):
    """``Σ_b D[..., a, b] ε[..., b]`` for a trace ``(..., S)`` and ``D`` ``(..., S, S)``."""
    if trace.shape[-1] == 1:
        return trace * jacobian[..., 0, 0][..., None]
    return jnp.einsum("...ab,...b->...a", jacobian, trace)


def _trace_roll(trace, jacobian, *, structure, has_bias, weight_fn, bias_fn):
    # jacobian (*lead, O, S, S): each stored value follows the Jacobian of its column
    out = {"weight": _per_position(jnp.take(jacobian, structure.cols, axis=-3), trace["weight"])}
    if has_bias:
        out["bias"] = _per_position(jacobian, trace["bias"])
    return out


etp_sparse_matmul_p = define_primitive(
    "etp_sparse_matmul",
    _apply,
    trainable_inputs=_trainable_inputs,
    x_index=0,
    effective=_effective,
    param_trace_increment=_trace_increment,
    param_trace_contract=_trace_contract,
    param_trace_roll=_trace_roll,
)


def sparse_matmul(x, weight, sparse_mat, bias=None, weight_fn: Callable | None = None,
                  bias_fn: Callable | None = None):
    """Trainable sparse product ``x @ M + bias`` with ``M`` the pattern of ``sparse_mat``.

    ``M`` has the sparsity pattern of ``sparse_mat`` and the values ``weight_fn(weight)``;
    the values stored in ``sparse_mat`` itself are ignored. Eligibility traces of
    ``weight`` cost ``O(nnz)`` per batch row and state, not ``O(I·O)``.

    Parameters
    ----------
    x : array_like
        Input of shape ``(I,)`` or ``(B, I)`` (more leading axes are accepted too).
        brainunit quantities are supported.
    weight : array_like
        The ``nnz`` trainable values, shape ``(nnz,)``, in ``sparse_mat``'s storage order.
    sparse_mat : brainunit.sparse.CSR, CSC or COO, or brainevent.CSR or CSC
        The static ``(I, O)`` structure. Its indices must be concrete (built outside ``jit``).
    bias : array_like, optional
        Bias of shape ``(O,)``, in the unit of the output.
    weight_fn, bias_fn : callable, optional
        Differentiable transforms applied inside the op (hashed by identity).

    Returns
    -------
    jax.Array or brainunit.Quantity
        Shape ``(..., O)``.

    Raises
    ------
    TypeError
        If ``sparse_mat`` is not a supported sparse matrix.
    ValueError
        If ``weight`` is not ``(nnz,)``, ``x`` does not end in ``I``, or ``bias`` is not ``(O,)``.

    Examples
    --------
    >>> import brainunit as u, jax.numpy as jnp
    >>> import braintrace
    >>> dense = jnp.array([[0., 1., 0.], [2., 0., 3.]])
    >>> csr = u.sparse.CSR.fromdense(dense)
    >>> braintrace.sparse_matmul(jnp.array([1., 1.]), csr.data, csr)
    Array([2., 1., 3.], dtype=float32)
    """
    structure = SparseStructure.of(sparse_mat)
    n_in, n_out = structure.shape
    xm, xu = _units.split(x)
    wm, wu = _units.split(weight)
    unit = _units.combine_units(xu, wu)
    xm, wm = jnp.asarray(xm), jnp.asarray(wm)
    if wm.shape != (structure.nnz,):
        raise ValueError(
            f"`sparse_matmul` expects `weight` to hold the {structure.nnz} stored values of `sparse_mat` "
            f"(shape ({structure.nnz},)); got shape {wm.shape}."
        )
    if xm.ndim < 1 or xm.shape[-1] != n_in:
        raise ValueError(
            f"`sparse_matmul` expects `x` with trailing axis {n_in} to match `sparse_mat` of shape "
            f"{structure.shape}; got x of shape {xm.shape}."
        )
    args = [xm, wm]
    if bias is not None:
        bm = jnp.asarray(_units.bias_mantissa(bias, unit))
        if bm.shape != (n_out,):
            raise ValueError(f"`sparse_matmul` expects `bias` of shape ({n_out},); got {bm.shape}.")
        args.append(bm)
    y = etp_sparse_matmul_p.bind(*args, structure=structure, has_bias=bias is not None,
                                 weight_fn=weight_fn, bias_fn=bias_fn)
    return _units.attach(y, unit)
