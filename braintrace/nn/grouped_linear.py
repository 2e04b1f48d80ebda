# Copyright 2026 The braintrace authors. Licensed under the Apache License, Version 2.0.
"""Grouped dense layer computed by the trainable :func:`braintrace.grouped_matmul` op."""

from __future__ import annotations

from collections.abc import Callable

import brainstate
import braintools
import brainunit as u
import jax

from ..ops.grouped_matmul import grouped_matmul

__all__ = ["GroupedLinear"]


def _positive(layer: str, arg: str, value) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"`{layer}`: `{arg}` must be a positive int; got {value!r}.")
    return value


def _param(layer: str, arg: str, init, shape: tuple[int, ...], per_group: bool):
    """``init`` drawn at ``shape``; a callable initialiser is drawn once per group.

    Drawing each group separately gives every group the fan of its own ``(K, N)`` matrix
    (a 3-D draw would count the group axis as a receptive field).
    """
    try:
        if callable(init) and per_group:
            value = u.math.stack([braintools.init.param(init, shape[1:], allow_none=False) for _ in range(shape[0])])
        else:
            value = braintools.init.param(init, shape, allow_none=False, allow_scalar=False)
    except ValueError as err:
        raise ValueError(f"`{layer}`: `{arg}` does not give an array of shape {shape}: {err}") from None
    if tuple(u.math.shape(value)) != shape:
        raise ValueError(f"`{layer}`: `{arg}` gave shape {u.math.shape(value)}; expected {shape}.")
    return value


class GroupedLinear(brainstate.nn.Module):
    """``G`` independent dense layers, ``y[..., g, :] = x[..., g, :] @ W[g] + b[g]``.

    Computed by the ETP op :func:`braintrace.grouped_matmul`, so every group's weights are
    trained online with an exact D-RTRL trace ``(*V, K, S)`` for element-wise recurrences.
    The parameters live in one ``param_type`` state named ``weight`` whose value is
    ``{'weight': (G, K, N), 'bias': (G, N)}`` (no ``'bias'`` key when ``b_init`` is ``None``).

    Parameters
    ----------
    num_groups : int
        Number of groups ``G``.
    in_features : int
        Input features per group ``K``.
    out_features : int
        Output features per group ``N``.
    w_init : callable or array_like
        Weight initialiser, drawn per group at ``(K, N)`` (default
        ``braintools.init.KaimingNormal()``), or a ``(G, K, N)`` array.
    b_init : callable or array_like or None
        Bias initialiser at ``(G, N)``; ``None`` means no bias.
    name : str, optional
        Module name.
    param_type : type
        The state class of the parameters (default ``brainstate.ParamState``).

    Raises
    ------
    ValueError
        For non-positive sizes, initialisers of the wrong shape, and (at call time) an input
        whose trailing axes are not ``(G, K)``.

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> import braintrace
    >>> layer = braintrace.nn.GroupedLinear(3, 4, 2)
    >>> layer.weight.value['weight'].shape, layer.weight.value['bias'].shape
    ((3, 4, 2), (3, 2))
    >>> layer(jnp.ones((5, 3, 4))).shape
    (5, 3, 2)
    """

    def __init__(
        self,
        num_groups: int,
        in_features: int,
        out_features: int,
        w_init: Callable | jax.typing.ArrayLike = braintools.init.KaimingNormal(),
        b_init: Callable | jax.typing.ArrayLike | None = braintools.init.ZeroInit(),
        name: str | None = None,
        param_type: type = brainstate.ParamState,
    ):
        super().__init__(name=name)
        layer = type(self).__name__
        self.num_groups = _positive(layer, "num_groups", num_groups)
        self.in_features = _positive(layer, "in_features", in_features)
        self.out_features = _positive(layer, "out_features", out_features)
        self.in_size = (num_groups, in_features)
        self.out_size = (num_groups, out_features)
        params = {"weight": _param(layer, "w_init", w_init, (num_groups, in_features, out_features), True)}
        if b_init is not None:
            bias = _param(layer, "b_init", b_init, (num_groups, out_features), False)
            weight_unit = u.get_unit(params["weight"])
            if not weight_unit.is_unitless and u.get_unit(bias).is_unitless:
                bias = u.Quantity(u.get_mantissa(bias), unit=weight_unit)
            params["bias"] = bias
        self.weight = param_type(params)

    def update(self, x):
        """Return ``y`` of shape ``(..., G, N)`` for ``x`` of shape ``(..., G, K)``."""
        shape = tuple(u.math.shape(x))
        if shape[-2:] != self.in_size:
            raise ValueError(
                f"`{type(self).__name__}`: the input's trailing axes must be (num_groups, in_features) = "
                f"{self.in_size}; got an input of shape {shape}."
            )
        params = self.weight.value
        return grouped_matmul(x, params["weight"], params.get("bias"))
