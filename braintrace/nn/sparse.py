# Copyright 2026 The braintrace authors. Licensed under the Apache License, Version 2.0.
"""Sparse layer whose product goes through the trainable :func:`braintrace.sparse_matmul` op."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import brainstate
import braintools
import brainunit as u
import jax
import jax.numpy as jnp

from ..ops.sparse_matmul import SparseStructure, sparse_matmul

__all__ = ["SparseLinear"]


def _as_size(layer: str, arg: str, size) -> tuple[int, ...]:
    size = (size,) if isinstance(size, int) else tuple(size)
    if not size or not all(isinstance(n, int) and n > 0 for n in size):
        raise ValueError(f"`{layer}`: `{arg}` must be a positive int or a tuple of them; got {size!r}.")
    return size


class SparseLinear(brainstate.nn.Module):
    """Sparse layer ``y = x @ M + b`` with a fixed sparsity pattern and trainable values.

    Only the stored values of ``spar_mat`` are parameters: they live in one ``param_type``
    state named ``weight`` whose value is ``{'weight': data (nnz,)[, 'bias': (O,)]}``. The
    product is the ETP op :func:`braintrace.sparse_matmul`, so eligibility traces cost
    ``O(nnz)`` per batch row instead of ``O(I·O)``.

    Parameters
    ----------
    spar_mat : brainunit.sparse.CSR, CSC or COO, or brainevent.CSR or CSC
        The ``(I, O)`` connectivity; its pattern is fixed and its values initialise the
        weight (a brainunit quantity keeps its unit).
    b_init : callable or array_like, optional
        Bias initialiser; ``None`` (default) means no bias. A unitless bias next to unitful
        values takes their unit.
    in_size : int or tuple of int, optional
        Input size; its last axis must be ``I``. Default ``(I,)``.
    name : str, optional
        Module name.
    param_type : type
        The state class of the parameters (default ``brainstate.ParamState``).

    Raises
    ------
    TypeError
        If ``spar_mat`` is not a supported sparse matrix.
    ValueError
        If ``in_size`` does not end in ``I``, ``b_init`` gives the wrong shape, or (at call
        time) the input's last axis is not ``I``.

    Examples
    --------
    >>> import brainunit as u, jax.numpy as jnp
    >>> import braintrace
    >>> csr = u.sparse.CSR.fromdense(jnp.array([[0., 1., 0.], [2., 0., 3.]]))
    >>> layer = braintrace.nn.SparseLinear(csr, b_init=jnp.zeros(3))
    >>> sorted(layer.weight.value), layer.weight.value['weight'].shape
    (['bias', 'weight'], (3,))
    >>> layer(jnp.ones((4, 2))).shape
    (4, 3)
    """

    def __init__(
        self,
        spar_mat,
        b_init: Callable | jax.typing.ArrayLike | None = None,
        in_size: int | Sequence[int] | None = None,
        name: str | None = None,
        param_type: type = brainstate.ParamState,
    ):
        super().__init__(name=name)
        layer = type(self).__name__
        try:
            self.structure = SparseStructure.of(spar_mat)
        except TypeError as err:
            raise TypeError(f"`{layer}`: `spar_mat`: {err}") from None
        n_in, n_out = self.structure.shape
        if in_size is None:
            in_size = (n_in,)
        self.in_size = _as_size(layer, "in_size", in_size)
        if self.in_size[-1] != n_in:
            raise ValueError(
                f"`{layer}`: `spar_mat` has shape {self.structure.shape} (I, O), so the last axis of "
                f"`in_size` must be {n_in}; got in_size={self.in_size}."
            )
        self.out_size = self.in_size[:-1] + (n_out,)
        data = spar_mat.data
        if tuple(u.math.shape(data)) != (self.structure.nnz,):
            raise ValueError(
                f"`{layer}`: `spar_mat` stores {self.structure.nnz} values but its data has shape "
                f"{tuple(u.math.shape(data))}."
            )
        params = {"weight": data if isinstance(data, u.Quantity) else jnp.asarray(data)}
        if b_init is not None:
            try:
                bias = braintools.init.param(b_init, (n_out,), allow_none=False, allow_scalar=False)
            except ValueError as err:
                raise ValueError(f"`{layer}`: `b_init` must give shape ({n_out},): {err}") from None
            if tuple(u.math.shape(bias)) != (n_out,):
                raise ValueError(f"`{layer}`: `b_init` gave shape {tuple(u.math.shape(bias))}; expected ({n_out},).")
            unit = u.get_unit(data)
            if not unit.is_unitless and u.get_unit(bias).is_unitless:
                bias = u.Quantity(u.get_mantissa(bias), unit=unit)
            params["bias"] = bias
        self.weight = param_type(params)

    def update(self, x):
        """Return ``x @ M + b`` for ``x`` of shape ``(..., I)``."""
        shape = tuple(u.math.shape(x))
        if len(shape) == 0 or shape[-1] != self.structure.shape[0]:
            raise ValueError(
                f"`{type(self).__name__}`: the input's last axis must have {self.structure.shape[0]} features "
                f"(`spar_mat` is {self.structure.shape}); got an input of shape {shape}."
            )
        params = self.weight.value
        return sparse_matmul(x, params["weight"], self.structure, params.get("bias"))
