"""ETP ops agree with their plain-JAX expressions under forward, grad, vmap and jit."""

import warnings

import brainunit as u
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

import braintrace
from braintrace.ops import etp_conv_p, etp_einsum_p, etp_element_wise_p, etp_matmul_p
from braintrace.ops.conv import channel_last_dimension_numbers as channel_last

TOL = dict(rtol=1e-5, atol=1e-5)


def randn(seed, shape):
    return jnp.asarray(np.random.RandomState(seed).randn(*shape), dtype=jnp.float32)


def square_weight(w):
    return w * w + 0.5 * w


def softplus_bias(b):
    return jax.nn.softplus(b)


def assert_close(actual, expected):
    actual_leaves, actual_tree = jax.tree.flatten(actual)
    expected_leaves, expected_tree = jax.tree.flatten(expected)
    assert actual_tree == expected_tree
    for a, e in zip(actual_leaves, expected_leaves, strict=True):
        assert a.shape == e.shape
        np.testing.assert_allclose(np.asarray(a), np.asarray(e), **TOL)


def primitives_in(fn, *args):
    return {eqn.primitive for eqn in jax.make_jaxpr(fn)(*args).eqns}


def check_forward_grad_jit(op, reference, args):
    """Forward (eager and jitted) and ``jax.grad`` w.r.t. every argument agree with ``reference``.

    Everything but the eager forward runs in one ``jax.jit`` to keep compilation cheap.
    """
    cotangent = randn(99, jax.eval_shape(reference, *args).shape)
    argnums = tuple(range(len(args)))

    def loss(fn):
        return lambda *a: jnp.sum(fn(*a) * cotangent)

    @jax.jit
    def both(*a):
        # all arguments at once, and each alone (the others get symbolic-zero tangents)
        return [(f(*a), jax.grad(loss(f), argnums)(*a), [jax.grad(loss(f), i)(*a) for i in argnums])
                for f in (op, reference)]

    actual, expected = both(*args)
    assert_close(actual, expected)
    assert_close(op(*args), expected[0])


def check_vmap_over_x(op, reference, args, primitive, in_axis=0, size=3):
    """vmap over ``x`` (argument 0) matches, keeps the ETP primitive, and differentiates."""
    x = args[0]
    xs = jnp.stack([x + 0.1 * i for i in range(size)], axis=in_axis)
    in_axes = (in_axis,) + (None,) * (len(args) - 1)
    argnums = tuple(range(len(args)))

    def loss(fn):
        return lambda xs_, *rest: jnp.sum(jnp.sin(jax.vmap(fn, in_axes=in_axes)(xs_, *rest)))

    @jax.jit
    def both(*a):
        return ((jax.vmap(op, in_axes=in_axes)(*a), jax.grad(loss(op), argnums)(*a)),
                (jax.vmap(reference, in_axes=in_axes)(*a), jax.grad(loss(reference), argnums)(*a)))

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # mapping only x must not fall back
        found = primitives_in(jax.vmap(op, in_axes=in_axes), xs, *args[1:])
        actual, expected = both(xs, *args[1:])
    assert primitive in found
    assert_close(actual, expected)


def check_vmap_over_weight(op, reference, args, size=2):
    """vmap over the weight (argument 1) falls back to plain JAX, with a UserWarning."""
    ws = jnp.stack([args[1] * (1.0 + 0.5 * i) for i in range(size)])
    in_axes = (None, 0) + (None,) * (len(args) - 2)
    with pytest.warns(UserWarning, match="vmapped over its parameters"):
        found = primitives_in(jax.vmap(op, in_axes=in_axes), args[0], ws, *args[2:])
    assert not any(braintrace.ops.is_etp_primitive(p) for p in found)
    with pytest.warns(UserWarning, match="vmapped over its parameters"):
        got = jax.jit(jax.vmap(op, in_axes=in_axes))(args[0], ws, *args[2:])
    assert_close(got, jax.vmap(reference, in_axes=in_axes)(args[0], ws, *args[2:]))


# --------------------------------------------------------------------------------------
# matmul
# --------------------------------------------------------------------------------------

MATMUL_X_SHAPES = [(3,), (4, 3), (2, 4, 3)]


def matmul_case(x_shape, with_bias, with_fns):
    weight_fn = square_weight if with_fns else None
    bias_fn = softplus_bias if with_fns else None
    f = weight_fn or (lambda w: w)
    g = bias_fn or (lambda b: b)
    args = [randn(0, x_shape), randn(1, (3, 5))]
    if with_bias:
        args.append(randn(2, (5,)))

        def op(x, w, b):
            return braintrace.matmul(x, w, b, weight_fn=weight_fn, bias_fn=bias_fn)

        def reference(x, w, b):
            return x @ f(w) + g(b)
    else:
        def op(x, w):
            return braintrace.matmul(x, w, weight_fn=weight_fn)

        def reference(x, w):
            return x @ f(w)
    return op, reference, args


@pytest.mark.parametrize("with_fns", [False, True])
@pytest.mark.parametrize("with_bias", [False, True])
@pytest.mark.parametrize("x_shape", MATMUL_X_SHAPES)
def test_matmul_forward_grad_jit(x_shape, with_bias, with_fns):
    op, reference, args = matmul_case(x_shape, with_bias, with_fns)
    check_forward_grad_jit(op, reference, args)
    assert primitives_in(op, *args) >= {etp_matmul_p}


@pytest.mark.parametrize("in_axis", [0, 1])
@pytest.mark.parametrize("with_fns", [False, True])
@pytest.mark.parametrize("x_shape", [(3,), (4, 3)])
def test_matmul_vmap_over_x_keeps_primitive(x_shape, with_fns, in_axis):
    if in_axis >= len(x_shape) + 1:
        pytest.skip("no such axis")
    op, reference, args = matmul_case(x_shape, True, with_fns)
    check_vmap_over_x(op, reference, args, etp_matmul_p, in_axis=in_axis)


@pytest.mark.parametrize("with_bias", [False, True])
def test_matmul_vmap_over_weight_falls_back_with_warning(with_bias):
    op, reference, args = matmul_case((4, 3), with_bias, True)
    check_vmap_over_weight(op, reference, args)


def test_matmul_vmap_over_bias_only_falls_back():
    op, reference, args = matmul_case((4, 3), True, False)
    bs = jnp.stack([args[2], args[2] + 1.0])
    with pytest.warns(UserWarning):
        got = jax.vmap(op, in_axes=(None, None, 0))(*args[:2], bs)
    assert_close(got, jax.vmap(reference, in_axes=(None, None, 0))(*args[:2], bs))


def test_matmul_jacfwd_jacrev():
    op, reference, args = matmul_case((2, 3), True, True)

    @jax.jit
    def jacobians(*a):
        return [(jax.jacfwd(f, argnums=(0, 1, 2))(*a), jax.jacrev(f, argnums=(0, 1, 2))(*a))
                for f in (op, reference)]

    actual, expected = jacobians(*args)
    assert_close(actual, expected)


def test_matmul_units():
    x = randn(0, (4, 3))
    w = randn(1, (3, 5))
    y = braintrace.matmul(x * u.mV, w * u.siemens)
    assert isinstance(y, u.Quantity)
    assert y.unit.has_same_dim(u.mV * u.siemens)
    np.testing.assert_allclose(np.asarray(y.to_decimal(u.mV * u.siemens)), np.asarray(x @ w), **TOL)

    b = randn(2, (5,))
    yb = braintrace.matmul(x * u.mV, w * u.siemens, b * u.uA)
    np.testing.assert_allclose(np.asarray(yb.to_decimal(u.uA)), np.asarray((x @ w) * 1e3 + b),
                               rtol=1e-5, atol=1e-3)

    # only one operand carries a unit
    y1 = braintrace.matmul(x * u.mV, w)
    assert isinstance(y1, u.Quantity)
    np.testing.assert_allclose(np.asarray(y1.to_decimal(u.mV)), np.asarray(x @ w), **TOL)
    # no units: a plain array
    assert not isinstance(braintrace.matmul(x, w), u.Quantity)


def test_matmul_unit_errors():
    x, w = randn(0, (4, 3)), randn(1, (3, 5))
    with pytest.raises(ValueError, match="bias"):
        braintrace.matmul(x * u.mV, w * u.siemens, randn(2, (5,)))
    with pytest.raises(ValueError, match="bias"):
        braintrace.matmul(x, w, randn(2, (5,)) * u.mV)


def test_matmul_shape_errors():
    x, w = randn(0, (4, 3)), randn(1, (3, 5))
    with pytest.raises(ValueError, match=r"\(3,\)"):
        braintrace.matmul(x, jnp.ones(3))
    with pytest.raises(ValueError, match=r"\(3, 5\).*\(4, 2\)"):
        braintrace.matmul(randn(0, (4, 2)), w)
    with pytest.raises(ValueError, match=r"\(4,\)"):
        braintrace.matmul(x, w, jnp.ones(4))
    with pytest.raises(ValueError):
        braintrace.matmul(jnp.float32(1.0), w)


# --------------------------------------------------------------------------------------
# element_wise
# --------------------------------------------------------------------------------------

@pytest.mark.parametrize("shape", [(), (5,), (2, 5)])
@pytest.mark.parametrize("weight_fn", [None, jnp.exp, square_weight])
def test_element_wise_forward_grad_jit(shape, weight_fn):
    w = randn(3, shape)
    f = weight_fn or (lambda v: v)

    def op(w_):
        return braintrace.element_wise(w_, weight_fn=weight_fn)

    check_forward_grad_jit(op, f, [w])
    assert etp_element_wise_p in primitives_in(op, w)


@pytest.mark.parametrize("weight_fn", [None, jnp.exp])
def test_element_wise_vmap(weight_fn):
    f = weight_fn or (lambda v: v)
    ws = randn(3, (4, 5))

    def op(w_):
        return braintrace.element_wise(w_, weight_fn=weight_fn)

    # Mapping the parameter itself leaves the ETP primitive (with a warning), values stay right.
    with pytest.warns(UserWarning, match="vmapped over its parameters"):
        assert_close(jax.vmap(op)(ws), jax.vmap(f)(ws))
    with pytest.warns(UserWarning, match="vmapped over its parameters"):
        assert_close(jax.grad(lambda v: jnp.sum(jnp.sin(jax.vmap(op)(v))))(ws),
                     jax.grad(lambda v: jnp.sum(jnp.sin(jax.vmap(f)(v))))(ws))


def test_element_wise_units():
    w = randn(3, (5,))
    y = braintrace.element_wise(w * u.ms)
    assert isinstance(y, u.Quantity)
    np.testing.assert_allclose(np.asarray(y.to_decimal(u.ms)), np.asarray(w), **TOL)
    # a transform drops the unit (it applies to the mantissa)
    y2 = braintrace.element_wise(w * u.ms, weight_fn=jnp.exp)
    np.testing.assert_allclose(np.asarray(y2), np.asarray(jnp.exp(w)), **TOL)


# --------------------------------------------------------------------------------------
# conv
# --------------------------------------------------------------------------------------

# (id, x shape, kernel shape, conv kwargs, lax padding, with bias)
CONV_CASES = [
    ("1d-same-bias", (2, 9, 3), (3, 3, 4), dict(padding="SAME"), "SAME", True),
    ("1d-unbatched-valid-stride", (10, 2), (3, 2, 3), dict(strides=2, padding="VALID"), "VALID", True),
    ("1d-explicit-dilation", (2, 11, 2), (3, 2, 3), dict(padding=[(2, 1)], rhs_dilation=2), [(2, 1)], False),
    ("1d-int-pad-lhs-dilation", (2, 6, 2), (2, 2, 3), dict(padding=1, lhs_dilation=2), [(1, 1)], True),
    ("2d-same-stride", (2, 7, 6, 3), (3, 2, 3, 4), dict(strides=(2, 1), padding="SAME"), "SAME", True),
    ("2d-unbatched-explicit-dilation", (8, 7, 2), (3, 3, 2, 3),
     dict(padding=((1, 2), (0, 1)), rhs_dilation=(2, 1)), [(1, 2), (0, 1)], True),
    ("2d-valid-stride-dilation", (2, 9, 8, 2), (2, 3, 2, 2),
     dict(strides=(2, 3), padding="VALID", rhs_dilation=(1, 2)), "VALID", True),
    ("2d-two-lead-axes", (2, 2, 6, 5, 1), (3, 3, 1, 2), dict(padding="SAME"), "SAME", False),
    ("3d-same-stride-bias", (2, 5, 6, 4, 2), (2, 3, 2, 2, 3), dict(strides=(1, 2, 1), padding="SAME"), "SAME", True),
    ("2d-same-lower-stride", (2, 7, 6, 2), (2, 3, 2, 3), dict(strides=2, padding="SAME_LOWER"), "SAME_LOWER", True),
    ("3d-unbatched-valid-dilation", (5, 5, 4, 2), (2, 2, 2, 2, 2),
     dict(padding="VALID", rhs_dilation=2), "VALID", True),
]


def _tup(v, n):
    if v is None:
        return (1,) * n
    return (v,) * n if isinstance(v, int) else tuple(v)


def conv_reference(kernel_rank, kwargs, lax_padding):
    ns = kernel_rank - 2
    sp = "DHW"[-ns:]
    dn = (f"N{sp}C", f"{sp}IO", f"N{sp}C")
    strides = _tup(kwargs.get("strides", 1), ns)
    lhs = _tup(kwargs.get("lhs_dilation"), ns)
    rhs = _tup(kwargs.get("rhs_dilation"), ns)

    def reference(x, k, b=None):
        lead = x.shape[: x.ndim - ns - 1]
        xb = x.reshape((-1,) + x.shape[x.ndim - ns - 1:])
        y = lax.conv_general_dilated(xb, k, strides, lax_padding, lhs, rhs, dimension_numbers=dn)
        y = y.reshape(lead + y.shape[1:])
        return y if b is None else y + b

    return reference


def conv_case(x_shape, k_shape, kwargs, lax_padding, with_bias):
    args = [randn(10, x_shape), randn(11, k_shape)]
    if with_bias:
        args.append(randn(12, k_shape[-1:]))

    def op(x, k, b=None):
        return braintrace.conv(x, k, b, dimension_numbers=channel_last(len(k_shape) - 2), **kwargs)

    return op, conv_reference(len(k_shape), kwargs, lax_padding), args


@pytest.mark.parametrize("case", CONV_CASES, ids=[c[0] for c in CONV_CASES])
def test_conv_forward_grad_jit(case):
    _, x_shape, k_shape, kwargs, lax_padding, with_bias = case
    op, reference, args = conv_case(x_shape, k_shape, kwargs, lax_padding, with_bias)
    check_forward_grad_jit(op, reference, args)
    assert etp_conv_p in primitives_in(op, *args)


@pytest.mark.parametrize("case", [CONV_CASES[i] for i in (1, 4, 5, 8)], ids=[CONV_CASES[i][0] for i in (1, 4, 5, 8)])
def test_conv_vmap(case):
    _, x_shape, k_shape, kwargs, lax_padding, with_bias = case
    op, reference, args = conv_case(x_shape, k_shape, kwargs, lax_padding, with_bias)
    check_vmap_over_x(op, reference, args, etp_conv_p, size=2)
    check_vmap_over_weight(op, reference, args)


def test_conv_kernel_fn():
    op_args = conv_case((2, 7, 6, 3), (3, 2, 3, 4), dict(padding="SAME"), "SAME", True)
    _, reference, args = op_args

    def op(x, k, b):
        return braintrace.conv(x, k, b, padding="SAME", kernel_fn=square_weight, bias_fn=softplus_bias,
                               dimension_numbers=channel_last(2))

    def ref(x, k, b):
        return reference(x, square_weight(k), softplus_bias(b))

    check_forward_grad_jit(op, ref, args)


def test_conv_units():
    x, k = randn(10, (2, 8, 2)), randn(11, (3, 2, 3))
    y = braintrace.conv(x * u.mV, k * u.siemens, padding="VALID", dimension_numbers=channel_last(1))
    assert isinstance(y, u.Quantity)
    expected = conv_reference(3, dict(padding="VALID"), "VALID")(x, k)
    np.testing.assert_allclose(np.asarray(y.to_decimal(u.mV * u.siemens)), np.asarray(expected), **TOL)


def test_conv_batch_grouped_is_not_supported():
    with pytest.raises(braintrace.NotSupportedError, match="batch_group_count"):
        braintrace.conv(jnp.ones((2, 8, 4)), jnp.ones((3, 4, 4)), batch_group_count=2,
                        dimension_numbers=channel_last(1))


def test_conv_shape_errors():
    with pytest.raises(ValueError, match=r"\(3, 4\)"):
        braintrace.conv(jnp.ones((2, 8, 3)), jnp.ones((3, 4)))
    with pytest.raises(ValueError, match=r"\(2, 8, 5\)"):
        braintrace.conv(jnp.ones((2, 8, 5)), jnp.ones((3, 3, 4)), dimension_numbers=channel_last(1))
    with pytest.raises(ValueError, match=r"\(3,\)"):
        braintrace.conv(jnp.ones((2, 8, 3)), jnp.ones((3, 3, 4)), jnp.ones(3), dimension_numbers=channel_last(1))
    with pytest.raises(ValueError, match="padding"):
        braintrace.conv(jnp.ones((2, 8, 8, 3)), jnp.ones((3, 3, 3, 4)), padding=[(1, 1)],
                        dimension_numbers=channel_last(2))
    with pytest.raises(ValueError, match="padding"):
        braintrace.conv(jnp.ones((2, 8, 3)), jnp.ones((3, 3, 4)), padding="FULL", dimension_numbers=channel_last(1))
    with pytest.raises(ValueError, match="padding"):  # lax has no string padding with lhs_dilation
        braintrace.conv(jnp.ones((2, 8, 3)), jnp.ones((3, 3, 4)), padding="SAME", lhs_dilation=2,
                        dimension_numbers=channel_last(1))
    with pytest.raises(ValueError, match="strides"):
        braintrace.conv(jnp.ones((2, 8, 8, 3)), jnp.ones((3, 3, 3, 4)), strides=(1, 1, 1),
                        dimension_numbers=channel_last(2))


# --------------------------------------------------------------------------------------
# einsum
# --------------------------------------------------------------------------------------

EINSUM_CASES = [
    ("bi,io->bo", (4, 3), (3, 5)),
    ("bhi,hio->bho", (2, 3, 4), (3, 4, 5)),
    ("i,io->o", (3,), (3, 5)),
    ("bti,io->bto", (2, 4, 3), (3, 5)),
    ("bi,hio->bho", (2, 3), (4, 3, 5)),
    ("bij,io->bo", (2, 3, 4), (3, 5)),
    ("bhi,hi->bh", (2, 3, 4), (3, 4)),
    ("bi,io->ob", (4, 3), (3, 5)),
    ("b i, i o -> b o", (4, 3), (3, 5)),
]


def einsum_case(equation, x_shape, w_shape, weight_fn=None):
    args = [randn(20, x_shape), randn(21, w_shape)]
    f = weight_fn or (lambda w: w)

    def op(x, w):
        return braintrace.einsum(equation, x, w, weight_fn=weight_fn)

    def reference(x, w):
        return jnp.einsum(equation, x, f(w))

    return op, reference, args


@pytest.mark.parametrize("weight_fn", [None, square_weight])
@pytest.mark.parametrize("case", EINSUM_CASES, ids=[c[0] for c in EINSUM_CASES])
def test_einsum_forward_grad_jit(case, weight_fn):
    op, reference, args = einsum_case(*case, weight_fn=weight_fn)
    check_forward_grad_jit(op, reference, args)
    assert etp_einsum_p in primitives_in(op, *args)


@pytest.mark.parametrize("case", EINSUM_CASES[:5], ids=[c[0] for c in EINSUM_CASES[:5]])
def test_einsum_vmap(case):
    op, reference, args = einsum_case(*case)
    check_vmap_over_x(op, reference, args, etp_einsum_p)
    check_vmap_over_x(op, reference, args, etp_einsum_p, in_axis=len(case[1]))
    check_vmap_over_weight(op, reference, args)


def test_einsum_nested_vmap_keeps_primitive():
    op, reference, args = einsum_case("i,io->o", (3,), (3, 5))
    xs = randn(22, (2, 4, 3))
    nested = jax.vmap(jax.vmap(op, in_axes=(0, None)), in_axes=(0, None))
    assert_close(nested(xs, args[1]), jnp.einsum("abi,io->abo", xs, args[1]))
    assert etp_einsum_p in primitives_in(nested, xs, args[1])


def test_einsum_units():
    x, w = randn(20, (4, 3)), randn(21, (3, 5))
    y = braintrace.einsum("bi,io->bo", x * u.mV, w * u.siemens)
    assert isinstance(y, u.Quantity)
    np.testing.assert_allclose(np.asarray(y.to_decimal(u.mV * u.siemens)), np.asarray(x @ w), **TOL)


@pytest.mark.parametrize("equation", [
    "bi,io",  # no output
    "bi->bo",  # one operand
    "bi,io,oj->bj",  # three operands
    "...i,io->...o",  # ellipsis
    "bi,iz->bo",  # weight letter in neither x nor y
    "bi,io->bq",  # output letter without source
    "bii,io->bo",  # repeated letter
    "b1,1o->bo",  # not letters
])
def test_einsum_malformed_equation(equation):
    with pytest.raises(ValueError, match="einsum"):
        braintrace.einsum(equation, jnp.ones((2, 3)), jnp.ones((3, 4)))


def test_einsum_shape_errors():
    with pytest.raises(ValueError, match=r"\(3,\)"):
        braintrace.einsum("bi,io->bo", jnp.ones(3), jnp.ones((3, 4)))
    with pytest.raises(ValueError, match=r"\(2, 3\).*\(4, 4\)"):
        braintrace.einsum("bi,io->bo", jnp.ones((2, 3)), jnp.ones((4, 4)))
    with pytest.raises(ValueError, match=r"\(2, 3, 4\)"):
        braintrace.einsum("bhi,hio->bho", jnp.ones((2, 3)), jnp.ones((2, 3, 4)))
    # jnp.einsum would broadcast a size-1 contracted axis, but the trace rules cannot
    with pytest.raises(ValueError, match=r"\(2, 1\).*\(3, 4\)"):
        braintrace.einsum("bi,io->bo", jnp.ones((2, 1)), jnp.ones((3, 4)))
