"""The defining oracle of the ETP trace rules.

For one step, the D-RTRL trace increment of a trainable input is
``ε[p, c, s] = df[p, s] · ∂y[p]/∂θ_c`` for every hidden position ``p``. Contracting it with a
learning signal ``L`` gives ``Σ_{p,s} L[p, s] df[p, s] ∂y[p]/∂θ``, which is the VJP of
``θ ↦ broadcast(apply(x, θ), V)`` at the cotangent ``Σ_s df[..., s] L[..., s]``. Every rule,
including the Jacobian fallback of a user op, must satisfy this identity.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

import braintrace
from braintrace.ops import etp_rule_of, is_etp_primitive
from braintrace.ops.conv import channel_last_dimension_numbers as channel_last

TOL = dict(rtol=1e-5, atol=1e-5)


def randn(seed, shape):
    return jnp.asarray(np.random.RandomState(seed).randn(*shape), dtype=jnp.float32)


def assert_tree_close(actual, expected):
    assert set(actual) == set(expected)
    for key in expected:
        assert actual[key].shape == expected[key].shape, key
        np.testing.assert_allclose(np.asarray(actual[key]), np.asarray(expected[key]), err_msg=key, **TOL)


def bound_op(fn, *args):
    """Trace ``fn(*args)`` and return ``(rule, x, raw params dict, static params)`` of its ETP equation."""
    closed = jax.make_jaxpr(fn)(*args)
    eqns = [e for e in closed.eqns if is_etp_primitive(e.primitive)]
    assert len(eqns) == 1
    eqn = eqns[0]
    values = dict(zip(closed.jaxpr.invars if hasattr(closed, "jaxpr") else closed.invars, args, strict=True))
    invals = [values[v] for v in eqn.invars]
    rule = etp_rule_of(eqn.primitive)
    params = dict(eqn.params)
    x = None if rule.x_index is None else invals[rule.x_index]
    raw = {key: invals[i] for key, i in rule.trainable_inputs(**params).items()}
    return rule, x, raw, params


def check_oracle(fn, args, reference, *, varshape=None, trace_dims=None, seed=0):
    """``contract(increment(x, df), L)`` equals the VJP of ``reference`` at ``Σ_s df·L``.

    Checked for ``S`` in {1, 2} states. ``reference(x, effective) -> y`` is the op in plain
    JAX on the effective parameters. ``trace_dims`` maps each key to the expected ``C`` shape
    of its trace ``(*V, *C, S)``. All of it runs in one ``jax.jit`` (cheap to compile).
    """
    rule, x, raw, params = bound_op(fn, *args)
    y_shape = jax.eval_shape(lambda x_, r: reference(x_, rule.effective_params(r, params)), x, raw).shape
    varshape = tuple(y_shape if varshape is None else varshape)
    data = [tuple(randn(seed + 10 * s + i, varshape + (s,)) for i in range(3)) for s in (1, 2)]

    @jax.jit
    def compute(x_, raw_, data_):
        effective = rule.effective_params(raw_, params)
        _, pullback = jax.vjp(lambda eff: jnp.broadcast_to(reference(x_, eff), varshape), effective)
        out = []
        for df, df2, signal in data_:
            trace = rule.trace_increment(x_, df, effective, params)
            if trace_dims is not None:
                assert set(trace) == set(trace_dims)
                for key, c in trace_dims.items():
                    assert trace[key].shape == varshape + tuple(c) + df.shape[-1:], key
            got = rule.trace_contract(trace, signal, effective, params)
            (expected,) = pullback(jnp.sum(df * signal, axis=-1))
            # the trace is linear in df: summed increments contract to the summed gradients
            trace2 = rule.trace_increment(x_, df2, effective, params)
            summed = rule.trace_contract(jax.tree.map(jnp.add, trace, trace2), signal, effective, params)
            (expected2,) = pullback(jnp.sum(df2 * signal, axis=-1))
            out.append(((got, expected), (summed, jax.tree.map(jnp.add, expected, expected2))))
        return out

    for pairs in compute(x, raw, data):
        for got, expected in pairs:
            assert_tree_close(got, expected)
    return rule, x, raw, params


# --------------------------------------------------------------------------------------
# matmul
# --------------------------------------------------------------------------------------

def matmul_reference(x, eff):
    y = x @ eff["weight"]
    return y + eff["bias"] if "bias" in eff else y


@pytest.mark.parametrize("with_bias", [False, True])
@pytest.mark.parametrize("x_shape,varshape", [
    ((3,), None),
    ((4, 3), None),
    ((2, 4, 3), None),
    ((3,), (4, 5)),  # unbatched input feeding a batched hidden group
    ((4, 3), (2, 4, 5)),
])
def test_matmul_oracle(x_shape, varshape, with_bias):
    args = [randn(0, x_shape), randn(1, (3, 5))] + ([randn(2, (5,))] if with_bias else [])
    dims = {"weight": (3,)} | ({"bias": ()} if with_bias else {})
    check_oracle(lambda *a: braintrace.matmul(*a), args, matmul_reference, varshape=varshape, trace_dims=dims)


# --------------------------------------------------------------------------------------
# conv
# --------------------------------------------------------------------------------------

CONV_CASES = [
    ("1d-same", (2, 9, 3), (3, 3, 4), dict(padding="SAME")),
    ("1d-unbatched-valid-stride", (10, 2), (3, 2, 3), dict(strides=2, padding="VALID")),
    ("1d-explicit-dilation", (2, 11, 2), (3, 2, 3), dict(padding=[(2, 1)], rhs_dilation=2)),
    ("1d-lhs-dilation", (2, 6, 2), (2, 2, 3), dict(padding=1, lhs_dilation=2)),
    ("2d-same-stride", (2, 7, 6, 3), (3, 2, 3, 4), dict(strides=(2, 1), padding="SAME")),
    ("2d-unbatched-explicit-dilation", (8, 7, 2), (3, 3, 2, 3),
     dict(padding=((1, 2), (0, 1)), rhs_dilation=(2, 1))),
    ("2d-valid-stride-dilation", (2, 9, 8, 2), (2, 3, 2, 2),
     dict(strides=(2, 3), padding="VALID", rhs_dilation=(1, 2))),
    ("2d-two-lead-axes", (2, 2, 6, 5, 1), (3, 3, 1, 2), dict(padding="SAME")),
    ("2d-same-lower-stride", (2, 7, 6, 2), (2, 3, 2, 3), dict(strides=2, padding="SAME_LOWER")),
    ("3d-same-stride", (2, 5, 4, 4, 2), (2, 3, 2, 2, 3), dict(strides=(1, 2, 1), padding="SAME")),
]


def conv_reference_for(kernel_shape, kwargs):
    ns = len(kernel_shape) - 2

    def reference(x, eff):
        # independent of the op: the padding/strides as lax takes them
        sp = "DHW"[-ns:]
        pad = kwargs.get("padding", "SAME")
        if isinstance(pad, int):
            pad = [(pad, pad)] * ns
        as_tuple = lambda v: (1,) * ns if v is None else ((v,) * ns if isinstance(v, int) else tuple(v))  # noqa: E731
        lead = x.shape[: x.ndim - ns - 1]
        xb = x.reshape((-1,) + x.shape[x.ndim - ns - 1:])
        y = lax.conv_general_dilated(
            xb, eff["kernel"], as_tuple(kwargs.get("strides", 1)), pad,
            as_tuple(kwargs.get("lhs_dilation")), as_tuple(kwargs.get("rhs_dilation")),
            dimension_numbers=(f"N{sp}C", f"{sp}IO", f"N{sp}C"),
        )
        y = y.reshape(lead + y.shape[1:])
        return y + eff["bias"] if "bias" in eff else y

    return reference


@pytest.mark.parametrize("case", CONV_CASES, ids=[c[0] for c in CONV_CASES])
def test_conv_oracle(case):
    _, x_shape, k_shape, kwargs = case
    args = [randn(10, x_shape), randn(11, k_shape), randn(12, k_shape[-1:])]
    patch = int(np.prod(k_shape[:-1]))
    dn = channel_last(len(k_shape) - 2)
    check_oracle(lambda x, k, b: braintrace.conv(x, k, b, dimension_numbers=dn, **kwargs), args,
                 conv_reference_for(k_shape, kwargs), trace_dims={"kernel": (patch,), "bias": ()})


def test_conv_oracle_broadcast_varshape():
    # an unbatched input feeding a batched hidden group
    k_shape, kwargs = (3, 3, 2, 3), dict(padding="SAME", strides=(1, 2))
    args = [randn(10, (6, 6, 2)), randn(11, k_shape)]
    check_oracle(lambda x, k: braintrace.conv(x, k, dimension_numbers=channel_last(2), **kwargs), args,
                 conv_reference_for(k_shape, kwargs), varshape=(2, 6, 3, 3), trace_dims={"kernel": (18,)})


def test_conv_patch_ordering_matches_kernel_layout():
    """A one-hot kernel entry picks the patch feature the contract maps it to."""
    k_shape = (2, 3, 2, 1)
    x = randn(13, (5, 6, 2))
    args = [x, jnp.zeros(k_shape)]
    rule, x_, raw, params = bound_op(lambda x, k: braintrace.conv(x, k, padding="VALID", dimension_numbers=channel_last(2)), *args)
    df = jnp.ones((4, 4, 1, 1))
    trace = rule.trace_increment(x_, df, raw, params)["kernel"]  # (4, 4, 1, P, 1)
    signal = jnp.zeros((4, 4, 1, 1)).at[1, 2, 0, 0].set(1.0)
    grad = rule.trace_contract({"kernel": trace}, signal, raw, params)["kernel"]
    for idx in np.ndindex(*k_shape[:-1]):
        onehot = jnp.zeros(k_shape).at[idx + (0,)].set(1.0)
        y = braintrace.conv(x, onehot, padding="VALID", dimension_numbers=channel_last(2))  # (4, 4, 1)
        # grad[idx] = ∂y[1, 2]/∂k[idx] = y[1, 2] evaluated at the one-hot kernel
        np.testing.assert_allclose(float(grad[idx + (0,)]), float(y[1, 2, 0]), **TOL)


# --------------------------------------------------------------------------------------
# einsum
# --------------------------------------------------------------------------------------

EINSUM_CASES = [
    ("bi,io->bo", (4, 3), (3, 5), None),
    ("bhi,hio->bho", (2, 3, 4), (3, 4, 5), None),
    ("i,io->o", (3,), (3, 5), None),
    ("i,io->o", (3,), (3, 5), (2, 5)),  # broadcast into a batched hidden group
    ("bti,io->bto", (2, 4, 3), (3, 5), None),
    ("bi,hio->bho", (2, 3), (4, 3, 5), None),
    ("bij,io->bo", (2, 3, 4), (3, 5), None),
    ("bhi,hi->bh", (2, 3, 4), (3, 4), None),
    ("bi,io->ob", (4, 3), (3, 5), None),
]


@pytest.mark.parametrize("case", EINSUM_CASES, ids=[f"{c[0]}-{c[3]}" for c in EINSUM_CASES])
def test_einsum_oracle(case):
    equation, x_shape, w_shape, varshape = case
    args = [randn(20, x_shape), randn(21, w_shape)]
    x_spec, w_spec = equation.split("->")[0].split(",")
    y_spec = equation.split("->")[1]
    contracted = tuple(n for c, n in zip(w_spec, w_shape, strict=True) if c not in y_spec)
    check_oracle(lambda x, w: braintrace.einsum(equation, x, w), args,
                 lambda x, eff: jnp.einsum(equation, x, eff["weight"]),
                 varshape=varshape, trace_dims={"weight": contracted})


def test_einsum_oracle_on_vmapped_equation():
    # the equation the vmap rule produces ('i,io->o' under vmap) obeys the oracle too
    w = randn(21, (3, 5))
    closed = jax.make_jaxpr(jax.vmap(lambda x: braintrace.einsum("i,io->o", x, w)))(randn(20, (4, 3)))
    (eqn,) = [e for e in closed.eqns if is_etp_primitive(e.primitive)]
    equation = eqn.params["equation"]
    check_oracle(lambda x, w_: braintrace.einsum(equation, x, w_), [randn(20, (4, 3)), w],
                 lambda x, eff: jnp.einsum(equation, x, eff["weight"]))


# --------------------------------------------------------------------------------------
# element_wise
# --------------------------------------------------------------------------------------

@pytest.mark.parametrize("weight_shape", [(5,), (1, 5), (), (3, 5)])
def test_element_wise_oracle(weight_shape):
    # a per-neuron parameter broadcast into the hidden group V = (B, N)
    w = randn(30, weight_shape)
    check_oracle(lambda w_: braintrace.element_wise(w_), [w], lambda x, eff: eff["weight"],
                 varshape=(3, 5), trace_dims={"weight": ()})


# --------------------------------------------------------------------------------------
# raw gradients through a non-linear transform, and the io (factorised) gradient
# --------------------------------------------------------------------------------------

def nonlinear_weight(w):
    return jnp.tanh(w) * 2.0 + w ** 3


def softplus_bias(b):
    return jax.nn.softplus(b)


RAW_CASES = [
    ("matmul", lambda x, w, b: braintrace.matmul(x, w, b, weight_fn=nonlinear_weight, bias_fn=softplus_bias),
     [(4, 3), (3, 5), (5,)]),
    ("conv", lambda x, k, b: braintrace.conv(x, k, b, padding="SAME", strides=2, dimension_numbers=channel_last(2),
                                             kernel_fn=nonlinear_weight, bias_fn=softplus_bias),
     [(2, 7, 6, 2), (3, 3, 2, 3), (3,)]),
    ("einsum", lambda x, w: braintrace.einsum("bhi,hio->bho", x, w, weight_fn=nonlinear_weight),
     [(2, 3, 4), (3, 4, 5)]),
    ("element_wise", lambda w: braintrace.element_wise(w, weight_fn=nonlinear_weight), [(5,)]),
]


def _raw_case(case):
    _, fn, shapes = case
    args = [randn(40 + i, s) for i, s in enumerate(shapes)]
    rule, x, raw, params = bound_op(fn, *args)
    return fn, args, rule, x, raw, params


def _with_params(args, rule, params, values, x=None):
    """``args`` with the trainable inputs (and optionally ``x``) replaced."""
    call = list(args)
    if x is not None:
        call[rule.x_index] = x
    for key, i in rule.trainable_inputs(**params).items():
        call[i] = values[key]
    return call


@pytest.mark.parametrize("case", RAW_CASES, ids=[c[0] for c in RAW_CASES])
def test_raw_gradients_through_transform(case):
    fn, args, rule, x, raw, params = _raw_case(case)
    y_shape = jax.eval_shape(fn, *args).shape
    varshape = (2,) + y_shape if case[0] == "element_wise" else y_shape
    df, signal = randn(50, varshape + (2,)), randn(51, varshape + (2,))

    @jax.jit
    def compute(raw_):
        effective = rule.effective_params(raw_, params)
        trace = rule.trace_increment(x, df, effective, params)
        eff_grads = rule.trace_contract(trace, signal, effective, params)
        got = rule.raw_gradients(raw_, eff_grads, params)
        # the full op as a function of the raw parameters, differentiated by JAX
        _, pullback = jax.vjp(lambda r: jnp.broadcast_to(fn(*_with_params(args, rule, params, r)), varshape), raw_)
        (expected,) = pullback(jnp.sum(df * signal, axis=-1))
        return eff_grads, got, expected

    eff_grads, got, expected = compute(raw)
    assert_tree_close(got, expected)

    # and the chain rule by hand for the weight
    wkey = next(iter(raw))
    dw = 2.0 * (1.0 - jnp.tanh(raw[wkey]) ** 2) + 3.0 * raw[wkey] ** 2
    np.testing.assert_allclose(np.asarray(got[wkey]), np.asarray(eff_grads[wkey] * dw), **TOL)


def test_raw_gradients_identity_without_transform():
    args = [randn(0, (4, 3)), randn(1, (3, 5)), randn(2, (5,))]
    rule, x, raw, params = bound_op(lambda *a: braintrace.matmul(*a), *args)
    grads = {"weight": randn(3, (3, 5)), "bias": randn(4, (5,))}
    assert_tree_close(rule.raw_gradients(raw, grads, params), grads)


@pytest.mark.parametrize("case", RAW_CASES, ids=[c[0] for c in RAW_CASES])
def test_io_gradient_is_vjp_of_op(case):
    fn, args, rule, x, raw, params = _raw_case(case)
    varshape = (3,) + jax.eval_shape(fn, *args).shape
    x_trace = None if x is None else randn(60, x.shape)  # a (filtered) input trace
    signal = randn(61, varshape)
    # the op with its transform hooks removed, as a function of the effective parameters
    prim = [e for e in jax.make_jaxpr(fn)(*args).eqns if is_etp_primitive(e.primitive)][0].primitive
    plain = dict(params, **{k: None for k in ("weight_fn", "bias_fn", "kernel_fn") if k in params})

    def of_effective(eff):
        return jnp.broadcast_to(prim.bind(*_with_params(args, rule, params, eff, x_trace), **plain), varshape)

    @jax.jit
    def compute(raw_):
        effective = rule.effective_params(raw_, params)
        got = rule.io_gradient(x_trace, signal, effective, params, varshape)
        _, pullback = jax.vjp(of_effective, effective)
        return got, pullback(signal)[0]

    got, expected = compute(raw)
    assert_tree_close(got, expected)


def test_io_gradient_matches_hand_written_matmul():
    x, w, b = randn(0, (4, 3)), randn(1, (3, 5)), randn(2, (5,))
    rule, _, raw, params = bound_op(lambda *a: braintrace.matmul(*a), x, w, b)
    signal = randn(3, (2, 4, 5))  # the hidden group has an extra leading axis
    got = rule.io_gradient(x, signal, raw, params, (2, 4, 5))
    assert_tree_close(got, {"weight": x.T @ signal.sum(0), "bias": signal.sum((0, 1))})


# --------------------------------------------------------------------------------------
# a user op without trace rules: the generic Jacobian fallback
# --------------------------------------------------------------------------------------

def _user_apply(x, eff):
    return jnp.tanh(x @ eff["weight"]) * eff["scale"] + eff["weight"][0]


def _user_effective(raw):
    return {"weight": raw["weight"], "scale": jnp.exp(raw["scale"])}


user_tanh_p = braintrace.register_primitive(
    "test_ops_user_tanh_dense",
    _user_apply,
    trainable_inputs={"weight": 1, "scale": 2},
    effective=_user_effective,
)
user_scale_p = braintrace.register_primitive(
    "test_ops_user_param_only", lambda x, eff: jnp.sin(eff["weight"]), x_index=None,
    trainable_inputs={"weight": 0},
)


def test_user_op_is_registered():
    assert is_etp_primitive(user_tanh_p)
    assert user_tanh_p in braintrace.ops.registered_primitives()
    rule = etp_rule_of(user_tanh_p)
    assert rule.param_trace_increment is None and rule.param_trace_contract is None


@pytest.mark.parametrize("x_shape,varshape", [((3,), None), ((4, 3), None), ((3,), (2, 5))])
def test_user_op_jacobian_fallback_oracle(x_shape, varshape):
    args = [randn(70, x_shape), randn(71, (3, 5)), randn(72, (5,))]

    def reference(x, eff):
        return jnp.tanh(x @ eff["weight"]) * eff["scale"] + eff["weight"][0]

    rule, x, raw, params = check_oracle(lambda *a: user_tanh_p.bind(*a), args, reference, varshape=varshape)
    # and the raw gradient through the op's `effective` hook
    vs = tuple(varshape or (x_shape[:-1] + (5,)))
    df, signal = randn(73, vs + (2,)), randn(74, vs + (2,))

    @jax.jit
    def compute(raw_):
        effective = rule.effective_params(raw_, params)
        trace = rule.trace_increment(x, df, effective, params)
        got = rule.raw_gradients(raw_, rule.trace_contract(trace, signal, effective, params), params)
        _, pullback = jax.vjp(lambda r: jnp.broadcast_to(user_tanh_p.bind(x, r["weight"], r["scale"]), vs), raw_)
        return got, pullback(jnp.sum(df * signal, -1))[0]

    got, expected = compute(raw)
    assert_tree_close(got, expected)


def test_user_op_without_x_jacobian_fallback_oracle():
    check_oracle(lambda w: user_scale_p.bind(w), [randn(75, (5,))], lambda x, eff: jnp.sin(eff["weight"]),
                 varshape=(3, 5))


def test_user_op_forward_grad_vmap_jit():
    x, w, s = randn(70, (4, 3)), randn(71, (3, 5)), randn(72, (5,))

    def reference(x_, w_, s_):
        return jnp.tanh(x_ @ w_) * jnp.exp(s_) + w_[0]

    np.testing.assert_allclose(user_tanh_p.bind(x, w, s), reference(x, w, s), **TOL)
    np.testing.assert_allclose(jax.jit(user_tanh_p.bind)(x, w, s), reference(x, w, s), **TOL)
    g_op = jax.grad(lambda *a: jnp.sum(jnp.sin(user_tanh_p.bind(*a))), (0, 1, 2))(x, w, s)
    g_ref = jax.grad(lambda *a: jnp.sum(jnp.sin(reference(*a))), (0, 1, 2))(x, w, s)
    for a, e in zip(g_op, g_ref, strict=True):
        np.testing.assert_allclose(a, e, **TOL)
    xs = randn(76, (2, 4, 3))
    vm = jax.vmap(user_tanh_p.bind, in_axes=(0, None, None))
    np.testing.assert_allclose(vm(xs, w, s), jax.vmap(reference, in_axes=(0, None, None))(xs, w, s), **TOL)
    assert user_tanh_p in {e.primitive for e in jax.make_jaxpr(vm)(xs, w, s).eqns}
