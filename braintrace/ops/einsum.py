# Copyright 2026 The braintrace authors. Licensed under the Apache License, Version 2.0.
"""Einsum ETP op: ``y = einsum(equation, x, weight_fn(W))``.

Letters of ``W`` that appear in ``y`` are *diagonal* (they index output positions); the
others are *contracted* and must appear in ``x``. The D-RTRL trace is ``(*V, *C, S)``
with ``V`` the output shape and ``C`` the contracted letters of ``W``: for every output
position, the slice of ``W`` that feeds it. This is exact for any equation of that form,
including output letters that come only from ``x`` (they become trace axes).
"""

from __future__ import annotations

import string
from collections.abc import Callable

import jax.numpy as jnp

from . import _units
from .primitive import define_primitive

__all__ = ["einsum", "etp_einsum_p", "parse_equation"]


def parse_equation(equation: str) -> tuple[str, str, str]:
    """Split ``'x,w->y'`` into its three letter strings, validating the ETP form."""
    eq = equation.replace(" ", "")
    if "->" not in eq or eq.count(",") != 1 or "." in eq:
        raise ValueError(
            f"`einsum` expects an explicit two-operand equation 'x,w->y' without ellipsis; "
            f"got {equation!r}."
        )
    lhs, y_spec = eq.split("->")
    x_spec, w_spec = lhs.split(",")
    for spec in (x_spec, w_spec, y_spec):
        if not spec.isalpha() or len(set(spec)) != len(spec):
            raise ValueError(f"`einsum` equation {equation!r}: each operand needs distinct letters.")
    for c in w_spec:
        if c not in y_spec and c not in x_spec:
            raise ValueError(
                f"`einsum` equation {equation!r}: weight letter {c!r} appears in neither x nor y."
            )
    for c in y_spec:
        if c not in x_spec and c not in w_spec:
            raise ValueError(f"`einsum` equation {equation!r}: output letter {c!r} has no source.")
    return x_spec, w_spec, y_spec


def _contracted(w_spec, y_spec):
    return "".join(c for c in w_spec if c not in y_spec)


def _state_letter(*specs):
    used = set("".join(specs))
    return next(c for c in string.ascii_letters if c not in used)


def _apply(x, effective, *, equation, weight_fn):
    return jnp.einsum(equation, x, effective["weight"])


def _effective(raw, *, equation, weight_fn):
    return {"weight": raw["weight"] if weight_fn is None else weight_fn(raw["weight"])}


def _trace_increment(x, df, *, equation, weight_fn):
    x_spec, w_spec, y_spec = parse_equation(equation)
    c = _contracted(w_spec, y_spec)
    s = _state_letter(x_spec, w_spec, y_spec)
    return {"weight": jnp.einsum(f"{x_spec},...{y_spec}{s}->...{y_spec}{c}{s}", x, df)}


def _trace_contract(trace, signal, effective, *, equation, weight_fn):
    x_spec, w_spec, y_spec = parse_equation(equation)
    c = _contracted(w_spec, y_spec)
    s = _state_letter(x_spec, w_spec, y_spec)
    return {"weight": jnp.einsum(f"...{y_spec}{c}{s},...{y_spec}{s}->{w_spec}", trace["weight"], signal)}


def _batch_params(params):
    x_spec, w_spec, y_spec = parse_equation(params["equation"])
    new = _state_letter(x_spec, w_spec, y_spec)
    return dict(params, equation=f"{new}{x_spec},{w_spec}->{new}{y_spec}")


etp_einsum_p = define_primitive(
    "etp_einsum",
    _apply,
    trainable_inputs={"weight": 1},
    x_index=0,
    effective=_effective,
    param_trace_increment=_trace_increment,
    param_trace_contract=_trace_contract,
    batch_params=_batch_params,
)


def _check_shapes(equation, x_spec, w_spec, x_shape, w_shape):
    """Raise a ValueError naming both shapes when they do not fit the equation."""
    def fail(reason):
        raise ValueError(
            f"`einsum` equation {equation!r} does not fit x of shape {tuple(x_shape)} and weight "
            f"of shape {tuple(w_shape)}: {reason}."
        )

    if len(x_shape) != len(x_spec):
        fail(f"x needs {len(x_spec)} axes ({x_spec!r})")
    if len(w_shape) != len(w_spec):
        fail(f"the weight needs {len(w_spec)} axes ({w_spec!r})")
    sizes = dict(zip(x_spec, x_shape, strict=True))
    for c, n in zip(w_spec, w_shape, strict=True):
        if c in sizes and sizes[c] != n:
            fail(f"letter {c!r} has size {sizes[c]} in x but {n} in the weight")


def einsum(equation: str, x, weight, *, weight_fn: Callable | None = None):
    """Trainable ``einsum(equation, x, weight_fn(weight))`` with two operands.

    Parameters
    ----------
    equation : str
        ``'x_letters,w_letters->y_letters'`` without ellipsis, e.g. ``'bi,io->bo'`` or
        per-head ``'bhi,hio->bho'``.
    x, weight : array_like
        The data input and the trainable parameter.
    weight_fn : callable, optional
        Transform applied to the weight inside the op (hashed by identity).

    Returns
    -------
    jax.Array

    Raises
    ------
    ValueError
        For a malformed equation, or shapes that do not fit it (sizes of shared letters
        must match exactly; einsum's size-1 broadcasting is not accepted).

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> import braintrace
    >>> braintrace.einsum('bi,io->bo', jnp.ones((2, 3)), jnp.ones((3, 4))).shape
    (2, 4)
    """
    x_spec, w_spec, _ = parse_equation(equation)
    xm, xu = _units.split(x)
    wm, wu = _units.split(weight)
    _check_shapes(equation, x_spec, w_spec, jnp.shape(xm), jnp.shape(wm))
    y = etp_einsum_p.bind(jnp.asarray(xm), jnp.asarray(wm), equation=equation.replace(" ", ""),
                          weight_fn=weight_fn)
    return _units.attach(y, _units.combine_units(xu, wu))
