# Copyright 2026 The braintrace authors. Licensed under the Apache License, Version 2.0.
"""``register_primitive``: a user's trainable op, in the published calling convention.

The published package defines a user op by an ``impl(*invars, **params)`` over the equation
inputs and a layout (where ``x`` and the trainable inputs sit). This module turns that into
braintrace's rule record (:class:`~braintrace.ETPRule`) with exact, Jacobian-based trace rules,
so research code that registers its own ops runs unchanged. Calls in braintrace's own form
(``apply(x, effective)`` with keyword rule hooks) are passed to
:func:`braintrace.ops.define_primitive`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from .. import _errors
from .primitive import ETPPrimitive, define_primitive

__all__ = ["register_primitive"]

# Keywords of braintrace's own form; their presence selects it.
_OWN_FORM = ("trainable_inputs", "x_index", "effective", "param_trace_increment", "param_trace_contract",
             "batch_params", "param_trace_roll", "io_input", "check_batching")


def register_primitive(name: str, impl_fn: Callable | None = None, batched: bool = False,
                       gradient_enabled: bool = False, trainable_invars_fn: Callable | None = None,
                       x_invar_index: int | None = 0, y_outvar_index: int = 0, **own_form) -> ETPPrimitive:
    """Create and register a trainable (ETP) op from ``impl(*invars, **params) -> y``.

    Parameters
    ----------
    name : str
        Name shown in jaxprs.
    impl_fn : callable
        ``impl(*invars, **static_params) -> y``: the op over its equation inputs, written with
        ordinary JAX ops (its derivatives come from JAX). It should accept extra leading axes
        on ``x`` to stay an ETP equation under ``jax.vmap``; when it does not (checked
        abstractly), a vmapped call falls back to plain JAX ops with a ``UserWarning``.
    batched : bool
        Whether ``x`` carries a leading batch axis (recorded as ``primitive.batched``; the
        rules are rank-agnostic either way).
    gradient_enabled : bool
        True for identity-like markers whose output may lie on a hidden-to-hidden path.
    trainable_invars_fn : callable, optional
        ``trainable_invars_fn(params) -> {key: invar_index}``; default ``{'weight': 1}``.
    x_invar_index : int or None
        Position of the data input, ``None`` when the op has none.
    y_outvar_index : int
        Position of the output; only single-output ops (0) are supported.
    **own_form
        braintrace's own form (``trainable_inputs=``, ``x_index=``, ``effective=``, trace
        hooks): the call is passed to :func:`braintrace.ops.define_primitive`, with
        ``impl_fn`` as its ``apply(x, effective, **params)``.

    Returns
    -------
    ETPPrimitive

    Raises
    ------
    NotSupportedError
        For ``y_outvar_index != 0``, or at the first call when an equation has inputs that are
        neither ``x`` nor trainable.

    Examples
    --------
    >>> import jax, jax.numpy as jnp
    >>> import braintrace
    >>> scaled_mm_p = braintrace.register_primitive(
    ...     'doc_scaled_mm', lambda x, w, *, scale: scale * (x @ w), batched=True)
    >>> y = scaled_mm_p.bind(jnp.ones((2, 3)), jnp.ones((3, 4)), scale=0.5)
    >>> y.shape, float(y[0, 0])
    ((2, 4), 1.5)
    >>> braintrace.ops.is_etp_primitive(scaled_mm_p)
    True
    """
    if impl_fn is None or not callable(impl_fn):
        raise TypeError(f"`register_primitive({name!r}, impl_fn)` needs a callable `impl_fn`; got {impl_fn!r}.")
    unknown = sorted(set(own_form) - set(_OWN_FORM))
    if unknown:
        raise TypeError(f"`register_primitive` got unexpected keyword arguments {unknown}.")
    if own_form:
        return define_primitive(name, impl_fn, gradient_enabled=gradient_enabled, **own_form)
    if y_outvar_index != 0:
        raise _errors.NotSupportedError(
            f"`register_primitive({name!r})`: only single-output ops are supported (y_outvar_index=0); got "
            f"y_outvar_index={y_outvar_index}."
        )
    if x_invar_index is not None and (isinstance(x_invar_index, bool) or not isinstance(x_invar_index, int)
                                      or x_invar_index < 0):
        raise ValueError(f"`x_invar_index` must be a non-negative int or None; got {x_invar_index!r}.")

    def layout(**params) -> dict:
        positions = {"weight": 1} if trainable_invars_fn is None else trainable_invars_fn(params)
        if not isinstance(positions, Mapping) or not positions:
            raise ValueError(f"`trainable_invars_fn` of `{name}` must return a non-empty {{key: invar_index}}; "
                             f"got {positions!r}.")
        return dict(positions)

    def apply(x, effective, **params):
        positions = layout(**params)
        slots = {i: effective[k] for k, i in positions.items()}
        if x_invar_index is not None:
            slots[x_invar_index] = x
        count = max(slots) + 1
        missing = [i for i in range(count) if i not in slots]
        if missing:
            raise _errors.NotSupportedError(
                f"`{name}`: equation inputs {missing} are neither the data input (x_invar_index={x_invar_index}) "
                f"nor trainable ({positions}); pass such values as static params instead."
            )
        return impl_fn(*[slots[i] for i in range(count)], **params)

    primitive = define_primitive(name, apply, trainable_inputs=layout, x_index=x_invar_index,
                                 gradient_enabled=gradient_enabled, check_batching=True)
    primitive.batched = bool(batched)
    return primitive
