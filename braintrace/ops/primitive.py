# Copyright 2026 The braintrace authors. Licensed under the Apache License, Version 2.0.
"""ETP primitives: JAX primitives that mark a trainable operation for the compiler.

An *eligibility-trace propagation* (ETP) primitive ``y = op(x, θ)`` appears as a single
equation in a model's jaxpr. The compiler recognises it by identity (membership in the
registry below, never by name) and reads its :class:`ETPRule`, one record per primitive,
to learn where ``x`` and the trainable inputs sit and how the algorithms build and contract
eligibility traces for it.

Traces follow one layout for every op. For a hidden group with position shape ``V``
(``varshape``) and ``S`` stacked states, the parameter-dimension (D-RTRL) trace of a
trainable input is ``(*V, *C, S)``: for every hidden position, the slice of effective
parameters ``C`` that feeds that position's ``y``. Recurrence through the group Jacobian
``D`` (shape ``(*V, S, S)``) is then the same contraction for every op. The trace is taken
with respect to the *effective* parameter (after ``weight_fn``); the gradient with respect
to the raw parameter is one VJP of the transform at solve time, which is exact for any
differentiable transform.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Callable, Mapping
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp

from .._jax_compat import (
    Primitive,
    ad,
    batching,
    instantiate_zero_tangent,
    is_not_mapped,
    mlir,
    shaped_array,
)

__all__ = [
    "ETPRule",
    "ETPPrimitive",
    "define_primitive",
    "is_etp_primitive",
    "etp_rule_of",
    "registered_primitives",
]


ApplyFn = Callable[..., jax.Array]


@dataclasses.dataclass(frozen=True)
class ETPRule:
    """Everything the compiler and the algorithms need to know about one ETP primitive.

    Parameters
    ----------
    apply : callable
        ``apply(x, effective, **params) -> y``: the op on the effective parameters (a dict
        keyed like ``trainable_inputs``). ``x`` is ``None`` for ops without a data input.
    trainable_inputs : callable
        ``trainable_inputs(**params) -> {key: invar_index}``.
    x_index : int or None
        Position of the data input ``x`` among the equation's inputs.
    effective : callable, optional
        ``effective(raw, **params) -> dict``: applies transform hooks such as ``weight_fn``.
        The default is the identity.
    param_trace_increment : callable, optional
        ``(x, df, **params) -> {key: (*V, *C, S)}``: the instantaneous D-RTRL term for hidden
        sensitivities ``df`` of shape ``(*V, S)``. The default builds it from the Jacobian of
        ``apply`` (exact, but ``|θ|`` per position).
    param_trace_contract : callable, optional
        ``(trace, signal, effective, **params) -> {key: gradient}``: contracts traces with
        the learning signal ``(*V, S)`` into gradients of the effective parameters.
    param_trace_roll : callable, optional
        ``(trace, jacobian, **params) -> {key: rolled trace}``: applies the group Jacobian
        ``D`` (``(*V, S, S)``) to the op's traces, for ops whose trace does not follow the
        ``(*V, *C, S)`` layout (a sparse op keeps ``(*lead, nnz, S)``). ``None`` (default)
        means the generic per-position contraction of ``(*V, *C, S)`` traces.
    io_input : callable, optional
        ``(x, **params) -> x_repr``: the representation of ``x`` that the ES-D-RTRL input
        trace filters and that ``apply`` accepts in place of ``x`` (embedding: the one-hot of
        the integer indices in the table dtype). ``None`` (default) means ``x`` itself.
    check_batching : bool
        When true, the ``vmap`` rule first checks abstractly that binding with an extra
        leading axis on ``x`` gives ``vmap(apply)``'s output shape, and otherwise falls back to
        plain JAX ops with a ``UserWarning`` (used for user ops whose impl may not accept
        extra leading axes).
    gradient_enabled : bool
        True for identity-like markers (``element_wise``) whose output is the parameter
        itself; their output may lie on a hidden-to-hidden path.
    batch_params : callable, optional
        Maps static params to those of the same op with one extra leading axis on ``x``
        (used by the ``vmap`` rule, which keeps the op an ETP equation when only ``x`` is
        mapped). :func:`register_primitive` defaults it to "params unchanged", for ops whose
        ``apply`` accepts extra leading axes on ``x``.
    """

    apply: ApplyFn
    trainable_inputs: Callable[..., dict[str, int]]
    x_index: int | None = 0
    effective: Callable[..., dict[str, jax.Array]] | None = None
    param_trace_increment: Callable[..., dict[str, jax.Array]] | None = None
    param_trace_contract: Callable[..., dict[str, jax.Array]] | None = None
    gradient_enabled: bool = False
    batch_params: Callable[[dict], dict] | None = None
    param_trace_roll: Callable[..., dict[str, jax.Array]] | None = None
    io_input: Callable[..., jax.Array] | None = None
    check_batching: bool = False

    # -- derived helpers used by the algorithms -------------------------------------------
    def effective_params(self, raw: Mapping[str, jax.Array], params: Mapping[str, Any]) -> dict:
        if self.effective is None:
            return dict(raw)
        return dict(self.effective(dict(raw), **params))

    def raw_gradients(self, raw: Mapping[str, jax.Array], effective_grads: Mapping[str, jax.Array],
                      params: Mapping[str, Any]) -> dict:
        """Pull gradients of the effective parameters back to the raw parameters.

        The effective dict may be keyed differently from the raw one (LoRA: raw
        ``lora_b``/``lora_a`` give one effective ``weight``); effective keys without a
        gradient get a zero cotangent.
        """
        if self.effective is None:
            return {k: effective_grads[k] for k in raw}
        effective, pullback = jax.vjp(lambda r: self.effective_params(r, params), dict(raw))
        (grads,) = pullback({k: effective_grads[k] if k in effective_grads else jnp.zeros_like(v)
                             for k, v in effective.items()})
        return grads

    def input_representation(self, x, params):
        """``x`` as the ES-D-RTRL input trace sees it (see ``io_input``)."""
        return x if self.io_input is None else self.io_input(x, **params)

    def trace_increment(self, x, df, effective, params) -> dict:
        if self.param_trace_increment is not None:
            return dict(self.param_trace_increment(x, df, **params))
        return _jacobian_trace_increment(self, x, df, effective, params)

    def trace_contract(self, trace, signal, effective, params) -> dict:
        if self.param_trace_contract is not None:
            return dict(self.param_trace_contract(trace, signal, effective, **params))
        return _jacobian_trace_contract(trace, signal, effective)

    def io_gradient(self, x_trace, output_signal, effective, params, varshape) -> dict:
        """Gradient of ``<output_signal, apply(x_trace, θ)>`` w.r.t. effective θ.

        ``output_signal`` has the hidden group's ``varshape``; the op output is broadcast to
        it first, so broadcast axes are summed.
        """
        def forward(eff):
            y = self.apply(x_trace, eff, **params)
            return jnp.broadcast_to(y, varshape)

        _, pullback = jax.vjp(forward, dict(effective))
        (grads,) = pullback(output_signal.astype(jax.eval_shape(forward, dict(effective)).dtype))
        return grads


def _jacobian_trace_increment(rule: ETPRule, x, df, effective, params):
    """Generic instantaneous trace: ``∂y[p]/∂θ`` for every hidden position ``p``."""
    varshape = df.shape[:-1]

    def y_of(eff):
        return jnp.broadcast_to(rule.apply(x, eff, **params), varshape)

    jac = jax.jacrev(y_of)(dict(effective))
    out = {}
    for key, j in jac.items():
        extra = j.ndim - len(varshape)
        d = df.reshape(varshape + (1,) * extra + df.shape[-1:])
        out[key] = j[..., None] * d
    return out


def _jacobian_trace_contract(trace, signal, effective):
    out = {}
    for key, t in trace.items():
        nv = signal.ndim - 1
        extra = t.ndim - signal.ndim
        s = signal.reshape(signal.shape[:-1] + (1,) * extra + signal.shape[-1:])
        out[key] = jnp.sum(t * s, axis=tuple(range(nv)) + (t.ndim - 1,))
    return out


class ETPPrimitive(Primitive):
    """A JAX primitive carrying an :class:`ETPRule`.

    Instances are created by :func:`register_primitive`; the compiler treats any equation
    whose primitive is an ``ETPPrimitive`` in the registry as a trainable operation.
    """

    rule: ETPRule

    def __init__(self, name: str, rule: ETPRule):
        super().__init__(name)
        self.rule = rule

    def impl_function(self, *invars, **params):
        """Evaluate the op from its equation inputs (raw parameters)."""
        return _impl(self, *invars, **params)

    # The published rule registry. braintrace derives exact trace rules from the op's own
    # Jacobian (and built-in ops carry closed forms), so rules written for that registry
    # are kept for reference but not used; say so once instead of ignoring them silently.
    def register_etp_rules(self, dt_to_t=None, xy_to_dw=None, init_drtrl=None, init_pp=None, fast_path=None,
                           pp_x_repr=None, snap_anchor=None, snap_adjacency=None):
        """Accept rules in the published registry format (not used; see the warning).

        Examples
        --------
        >>> import warnings, jax.numpy as jnp, braintrace
        >>> p = braintrace.register_primitive('doc_rules_mm', lambda x, w: x @ w)
        >>> with warnings.catch_warnings(record=True) as caught:
        ...     warnings.simplefilter('always')
        ...     _ = p.register_dt_to_t(lambda hidden_dim, trace: trace)
        >>> 'exact trace rules' in str(caught[0].message)
        True
        """
        given = {k: v for k, v in dict(dt_to_t=dt_to_t, xy_to_dw=xy_to_dw, init_drtrl=init_drtrl, init_pp=init_pp,
                                       fast_path=fast_path, pp_x_repr=pp_x_repr, snap_anchor=snap_anchor,
                                       snap_adjacency=snap_adjacency).items() if v is not None}
        if given:
            if not hasattr(self, "published_rules"):
                self.published_rules = {}
            self.published_rules.update(given)
            warnings.warn(
                f"`{self.name}`: braintrace derives exact trace rules from the op's Jacobian; the rules "
                f"{sorted(given)} in the published registry format are recorded in `published_rules` but "
                "not used. To give the op closed-form rules, use `braintrace.ops.define_primitive`.",
                UserWarning,
                stacklevel=2,
            )
        return self

    def register_dt_to_t(self, fn):
        """Published registry entry (not used; see :meth:`register_etp_rules`)."""
        return self.register_etp_rules(dt_to_t=fn)

    def register_xy_to_dw(self, fn):
        """Published registry entry (not used; see :meth:`register_etp_rules`)."""
        return self.register_etp_rules(xy_to_dw=fn)

    def register_init_drtrl(self, fn):
        """Published registry entry (not used; see :meth:`register_etp_rules`)."""
        return self.register_etp_rules(init_drtrl=fn)

    def register_init_pp(self, fn):
        """Published registry entry (not used; see :meth:`register_etp_rules`)."""
        return self.register_etp_rules(init_pp=fn)


_REGISTRY: dict[Primitive, ETPRule] = {}


def is_etp_primitive(primitive) -> bool:
    """Whether ``primitive`` is a registered ETP primitive."""
    return primitive in _REGISTRY


def etp_rule_of(primitive) -> ETPRule:
    """The :class:`ETPRule` of a registered ETP primitive.

    Examples
    --------
    >>> import braintrace
    >>> rule = braintrace.ops.etp_rule_of(braintrace.ops.etp_matmul_p)
    >>> rule.x_index, rule.trainable_inputs(has_bias=True, weight_fn=None, bias_fn=None)
    (0, {'weight': 1, 'bias': 2})
    >>> braintrace.ops.is_etp_primitive(braintrace.ops.etp_matmul_p)
    True
    """
    try:
        return _REGISTRY[primitive]
    except KeyError:
        raise KeyError(
            f"`{primitive}` is not a registered ETP primitive; create it with "
            "`braintrace.register_primitive`."
        ) from None


def registered_primitives() -> tuple[Primitive, ...]:
    """All registered ETP primitives, in registration order."""
    return tuple(_REGISTRY)


def split_invars(rule: ETPRule, invars, params):
    """Split equation inputs into ``(x, {key: raw parameter})``."""
    x = None if rule.x_index is None else invars[rule.x_index]
    raw = {key: invars[i] for key, i in rule.trainable_inputs(**params).items()}
    return x, raw


def _impl(primitive: ETPPrimitive, *invars, **params):
    rule = primitive.rule
    x, raw = split_invars(rule, invars, params)
    return rule.apply(x, rule.effective_params(raw, params), **params)


def _abstract_eval(primitive, *avals, **params):
    structs = [jax.ShapeDtypeStruct(a.shape, a.dtype) for a in avals]
    out = jax.eval_shape(partial(_impl, primitive, **params), *structs)
    return shaped_array(out.shape, out.dtype)


def _jvp_rule(primitive, primals, tangents, **params):
    # The primal stays one ETP equation; the tangent is built from ordinary JAX ops so
    # that JAX can transpose it (reverse mode through a model works, giving BPTT).
    tangents = [instantiate_zero_tangent(t, p) for t, p in zip(tangents, primals, strict=True)]
    primal_out = primitive.bind(*primals, **params)
    tangent_out = jax.jvp(partial(_impl, primitive, **params), tuple(primals), tuple(tangents))[1]
    return primal_out, tangent_out


def _batch_rule(primitive, batched_args, batch_dims, **params):
    rule = primitive.rule
    trainable_positions = set(rule.trainable_inputs(**params).values())
    params_batched = any(not is_not_mapped(batch_dims[i]) for i in trainable_positions)
    if rule.x_index is not None and not params_batched and rule.batch_params is not None:
        # Only the data input is mapped: move the mapped axis to the front and keep the op
        # an ETP equation, so a vmapped model is still visible to the compiler.
        args = list(batched_args)
        bd = batch_dims[rule.x_index]
        args[rule.x_index] = jnp.moveaxis(args[rule.x_index], bd, 0)
        new_params = rule.batch_params(params)
        if not rule.check_batching or _promotion_is_exact(primitive, args, batched_args, batch_dims, params,
                                                          new_params):
            return primitive.bind(*args, **new_params), 0
        warnings.warn(
            f"`{primitive.name}` does not accept an extra leading axis on its data input, so under "
            "`jax.vmap` it is evaluated as plain JAX ops and is no longer visible to the "
            "eligibility-trace compiler; write its impl for any number of leading axes of x.",
            UserWarning,
            stacklevel=2,
        )
    if params_batched:
        warnings.warn(
            f"`{primitive.name}` is vmapped over its parameters; it is evaluated as plain JAX "
            "ops and is no longer visible to the eligibility-trace compiler.",
            UserWarning,
            stacklevel=2,
        )
    in_axes = tuple(None if is_not_mapped(d) else d for d in batch_dims)
    out = jax.vmap(partial(_impl, primitive, **params), in_axes=in_axes)(*batched_args)
    return out, 0


def _same_params(params):
    return params


def _promotion_is_exact(primitive, promoted_args, batched_args, batch_dims, params, new_params) -> bool:
    """Whether binding with a leading axis on ``x`` gives ``vmap(impl)``'s output shape.

    Checked abstractly at trace time, for user ops whose impl may not accept extra leading
    axes (a silent shape-compatible misuse would otherwise go unnoticed).
    """
    def shaped(a):
        return jax.ShapeDtypeStruct(jnp.shape(a), jnp.result_type(a))

    in_axes = tuple(None if is_not_mapped(d) else d for d in batch_dims)
    try:
        promoted = jax.eval_shape(partial(_impl, primitive, **new_params), *map(shaped, promoted_args))
    except Exception:  # noqa: BLE001 - any failure means the impl cannot take the axis
        return False
    expected = jax.eval_shape(jax.vmap(partial(_impl, primitive, **params), in_axes=in_axes),
                              *map(shaped, batched_args))
    return promoted.shape == expected.shape and promoted.dtype == expected.dtype


def define_primitive(
    name: str,
    apply: ApplyFn,
    *,
    trainable_inputs: Callable[..., dict[str, int]] | Mapping[str, int] | None = None,
    x_index: int | None = 0,
    effective: Callable[..., dict] | None = None,
    param_trace_increment: Callable[..., dict] | None = None,
    param_trace_contract: Callable[..., dict] | None = None,
    gradient_enabled: bool = False,
    batch_params: Callable[[dict], dict] | None = None,
    param_trace_roll: Callable[..., dict] | None = None,
    io_input: Callable[..., jax.Array] | None = None,
    check_batching: bool = False,
) -> ETPPrimitive:
    """Create and register an ETP primitive from its rule record (braintrace's own form).

    :func:`braintrace.register_primitive` is the published entry point (an ``impl`` over
    the equation inputs); this function takes the op in the form every built-in op uses,
    ``apply(x, effective)``, plus optional closed-form trace rules.

    The returned primitive has abstract evaluation, lowering, JVP (so ``jax.grad`` works),
    and a batching rule (``jax.vmap`` keeps it an ETP equation when only ``x`` is mapped
    and ``batch_params`` is given).

    Parameters
    ----------
    name : str
        Name shown in jaxprs.
    apply : callable
        ``apply(x, effective, **params) -> y`` with ``effective`` a dict of parameters.
    trainable_inputs : dict or callable, optional
        ``{key: invar_index}`` of the trainable inputs, or a function of the static
        params returning it. Default ``{'weight': 1}``.
    x_index : int or None
        Index of the data input, ``None`` when the op has none.
    effective, param_trace_increment, param_trace_contract, param_trace_roll, io_input, gradient_enabled, check_batching
        See :class:`ETPRule`. Ops without trace rules get exact Jacobian-based defaults.
    batch_params : callable, optional
        Maps the static params to those of the op with one extra leading axis on ``x``.
        ``None`` (default) means the op accepts extra leading axes unchanged.

    Returns
    -------
    ETPPrimitive

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> import braintrace
    >>> scale_p = braintrace.ops.define_primitive(
    ...     'doc_scale', lambda x, eff: x * eff['weight'])
    >>> float(scale_p.bind(jnp.array(2.0), jnp.array(3.0)))
    6.0
    >>> braintrace.ops.is_etp_primitive(scale_p)
    True
    """
    if trainable_inputs is None:
        trainable_inputs = {"weight": 1}
    if isinstance(trainable_inputs, Mapping):
        fixed = dict(trainable_inputs)

        def trainable_inputs(**_params):
            return fixed

    rule = ETPRule(
        apply=apply,
        trainable_inputs=trainable_inputs,
        x_index=x_index,
        effective=effective,
        param_trace_increment=param_trace_increment,
        param_trace_contract=param_trace_contract,
        gradient_enabled=gradient_enabled,
        batch_params=batch_params if batch_params is not None else _same_params,
        param_trace_roll=param_trace_roll,
        io_input=io_input,
        check_batching=check_batching,
    )
    primitive = ETPPrimitive(name, rule)
    primitive.def_impl(partial(_impl, primitive))
    primitive.def_abstract_eval(partial(_abstract_eval, primitive))
    mlir.register_lowering(primitive, mlir.lower_fun(partial(_impl, primitive), multiple_results=False))
    ad.primitive_jvps[primitive] = partial(_jvp_rule, primitive)
    batching.primitive_batchers[primitive] = partial(_batch_rule, primitive)
    _REGISTRY[primitive] = rule
    return primitive
