"""`lora_matmul`: plain-JAX equivalence (explicit alpha*x@B@A), trace rules on the effective
weight pulled back exactly to both factors, D-RTRL == BPTT, ES-D-RTRL alignment, errors."""

import brainstate
import brainunit as u
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import braintrace
import braintrace.nn as bnn
from braintrace.ops import etp_lora_matmul_p
from tests._support.oracle import assert_grads_close, bptt_grads, cosine, flat, online_grads
from tests.ops.test_forward_grad import check_forward_grad_jit, check_vmap_over_weight, check_vmap_over_x
from tests.ops.test_trace_rules import assert_tree_close, bound_op, check_oracle

TOL = dict(rtol=1e-5, atol=1e-5)
I, R, O = 6, 2, 5
ALPHA = 0.7


def randn(seed, shape):
    return jnp.asarray(np.random.RandomState(seed).randn(*shape), dtype=jnp.float32)


def b_fn(b):
    return jnp.tanh(b) + 0.1 * b ** 3


def a_fn(a):
    return a * jnp.abs(a) + a


def bias_fn(c):
    return jax.nn.softplus(c)


def case(x_shape, with_bias, with_fns, alpha=ALPHA):
    fb, fa, fc = (b_fn, a_fn, bias_fn) if with_fns else (None, None, None)
    gb, ga, gc = (f or (lambda v: v) for f in (fb, fa, fc))
    args = [randn(0, x_shape), randn(1, (I, R)), randn(2, (R, O))]
    if with_bias:
        args.append(randn(3, (O,)))

        def op(x, B, A, c):
            return braintrace.lora_matmul(x, B, A, alpha, c, b_fn=fb, a_fn=fa, bias_fn=fc)

        def reference(x, B, A, c):
            return alpha * (x @ gb(B)) @ ga(A) + gc(c)
    else:
        def op(x, B, A):
            return braintrace.lora_matmul(x, B, A, alpha=alpha, b_fn=fb, a_fn=fa)

        def reference(x, B, A):
            return alpha * (x @ gb(B)) @ ga(A)
    return op, reference, args


# --------------------------------------------------------------------------------------
# forward / grad / vmap / jit
# --------------------------------------------------------------------------------------

@pytest.mark.parametrize("with_fns", [False, True])
@pytest.mark.parametrize("with_bias", [False, True])
@pytest.mark.parametrize("x_shape", [(I,), (4, I), (2, 3, I)])
def test_forward_grad_jit(x_shape, with_bias, with_fns):
    op, reference, args = case(x_shape, with_bias, with_fns)
    check_forward_grad_jit(op, reference, args)


@pytest.mark.parametrize("x_shape", [(I,), (4, I)])
def test_vmap_over_x_keeps_primitive(x_shape):
    op, reference, args = case(x_shape, True, True)
    check_vmap_over_x(op, reference, args, etp_lora_matmul_p)


def test_vmap_over_factor_falls_back_with_warning():
    op, reference, args = case((4, I), True, False)
    check_vmap_over_weight(op, reference, args)


def test_primitive_layout_and_keys():
    rule, x, raw, params = bound_op(lambda *a: braintrace.lora_matmul(*a[:3], 2.0, a[3]),
                                    randn(0, (I,)), randn(1, (I, R)), randn(2, (R, O)), randn(3, (O,)))
    assert set(raw) == {"lora_b", "lora_a", "bias"} and params["alpha"] == 2.0
    eff = rule.effective_params(raw, params)
    assert set(eff) == {"weight", "bias"}
    np.testing.assert_allclose(eff["weight"], 2.0 * raw["lora_b"] @ raw["lora_a"], **TOL)


def test_units():
    x, B, A = randn(0, (4, I)), randn(1, (I, R)), randn(2, (R, O))
    y = braintrace.lora_matmul(x * u.mV, B * u.siemens, A, alpha=0.5, bias=randn(3, (O,)) * u.uA)
    assert isinstance(y, u.Quantity)
    np.testing.assert_allclose(np.asarray(y.to_decimal(u.uA)), np.asarray(0.5 * x @ B @ A * 1e3 + randn(3, (O,))),
                               rtol=1e-5, atol=1e-3)
    assert not isinstance(braintrace.lora_matmul(x, B, A), u.Quantity)


def test_bad_inputs_raise_naming_the_argument():
    x, B, A = jnp.ones((2, I)), jnp.ones((I, R)), jnp.ones((R, O))
    with pytest.raises(ValueError, match=r"`B` of shape \(I, r\)"):
        braintrace.lora_matmul(x, jnp.ones(I), A)
    with pytest.raises(ValueError, match=r"`A` of shape \(r, O\)"):
        braintrace.lora_matmul(x, B, jnp.ones((1, R, O)))
    with pytest.raises(ValueError, match="rank axes of `B`"):
        braintrace.lora_matmul(x, B, jnp.ones((R + 1, O)))
    with pytest.raises(ValueError, match=rf"`x`.*{I}.*\(2, {I + 1}\)"):
        braintrace.lora_matmul(jnp.ones((2, I + 1)), B, A)
    with pytest.raises(ValueError, match=rf"`bias`.*\({O},\)"):
        braintrace.lora_matmul(x, B, A, bias=jnp.ones(O + 1))
    with pytest.raises(TypeError, match="`alpha`"):
        jax.jit(lambda a: braintrace.lora_matmul(x, B, A, alpha=a))(1.0)


# --------------------------------------------------------------------------------------
# trace rules
# --------------------------------------------------------------------------------------

def effective_reference(x, eff):
    y = x @ eff["weight"]
    return y + eff["bias"] if "bias" in eff else y


@pytest.mark.parametrize("with_bias", [False, True])
@pytest.mark.parametrize("x_shape,varshape", [((I,), None), ((4, I), None), ((I,), (3, O))])
def test_trace_oracle_on_effective_weight(x_shape, varshape, with_bias):
    op, _, args = case(x_shape, with_bias, True)
    dims = {"weight": (I,)} | ({"bias": ()} if with_bias else {})
    check_oracle(op, args, effective_reference, varshape=varshape, trace_dims=dims)


@pytest.mark.parametrize("with_fns", [False, True])
def test_raw_gradients_reach_both_factors_exactly(with_fns):
    """contract(trace) on W_eff, pulled back by raw_gradients, is the VJP of the op w.r.t. (B, A, bias)."""
    op, _, args = case((4, I), True, with_fns)
    rule, x, raw, params = bound_op(op, *args)
    df, signal = randn(10, (4, O, 2)), randn(11, (4, O, 2))

    @jax.jit
    def compute(raw_):
        eff = rule.effective_params(raw_, params)
        trace = rule.trace_increment(x, df, eff, params)
        got = rule.raw_gradients(raw_, rule.trace_contract(trace, signal, eff, params), params)
        _, pullback = jax.vjp(lambda r: op(x, r["lora_b"], r["lora_a"], r["bias"]), raw_)
        return got, pullback(jnp.sum(df * signal, -1))[0]

    got, expected = compute(raw)
    assert_tree_close(got, expected)
    assert float(jnp.linalg.norm(got["lora_b"])) > 1e-2 and float(jnp.linalg.norm(got["lora_a"])) > 1e-2


def test_raw_gradients_by_hand_without_transforms():
    B, A = randn(1, (I, R)), randn(2, (R, O))
    rule, _, raw, params = bound_op(lambda x_, b_, a_: braintrace.lora_matmul(x_, b_, a_, ALPHA),
                                    randn(0, (I,)), B, A)
    g_w = randn(3, (I, O))
    got = rule.raw_gradients(raw, {"weight": g_w}, params)
    assert_tree_close(got, {"lora_b": ALPHA * g_w @ A.T, "lora_a": ALPHA * B.T @ g_w})


def test_io_gradient_is_vjp_wrt_effective_weight():
    op, _, args = case((4, I), True, False)
    rule, _, raw, params = bound_op(op, *args)
    eff = rule.effective_params(raw, params)
    xbar, signal = randn(20, (4, I)), randn(21, (2, 4, O))
    got = rule.io_gradient(xbar, signal, eff, params, (2, 4, O))
    assert_tree_close(got, {"weight": xbar.T @ signal.sum(0), "bias": signal.sum((0, 1))})


# --------------------------------------------------------------------------------------
# online learning on a leaky integrator h = a*h + tanh(lora(x) + b) (exact for D-RTRL)
# --------------------------------------------------------------------------------------

class LoRALeaky(brainstate.nn.Module):
    """``h = a ⊙ h + tanh(alpha x B A + c)``; linear readout. Input enters only through the op."""

    def __init__(self, decay=0.9, with_fns=False):
        super().__init__()
        self.decay = decay
        self.fns = (b_fn, a_fn) if with_fns else (None, None)
        self.p = brainstate.ParamState({"lora_b": 0.6 * randn(30, (I, R)), "lora_a": 0.6 * randn(31, (R, O)),
                                        "bias": 0.1 * jnp.ones(O)})
        self.out = bnn.Linear(O, 2)

    def init_state(self, batch_size=None, **kwargs):
        self.h = brainstate.HiddenState(jnp.zeros((batch_size, O) if batch_size else (O,)))

    def update(self, x):
        p = self.p.value
        y = braintrace.lora_matmul(x, p["lora_b"], p["lora_a"], ALPHA, p["bias"], b_fn=self.fns[0], a_fn=self.fns[1])
        self.h.value = self.decay * self.h.value + jnp.tanh(y)
        return self.out(self.h.value)


def run_both(model, xs, batch, algorithm, **options):
    brainstate.nn.init_all_states(model, *([batch] if batch else []))
    expected = bptt_grads(model, xs)
    learner = algorithm(model, **options)
    learner.compile_graph(xs[0])
    return expected, online_grads(learner, xs), learner


@pytest.mark.parametrize("batch,with_fns", [(None, False), (3, False), (3, True)])
def test_d_rtrl_equals_bptt_for_both_factors(batch, with_fns):
    brainstate.random.seed(0)
    xs = brainstate.random.randn(12, *((batch, I) if batch else (I,)))
    model = LoRALeaky(with_fns=with_fns)
    expected, actual, learner = run_both(model, xs, batch, braintrace.D_RTRL)
    for key in ("lora_b", "lora_a", "bias"):
        e, a = np.asarray(expected[("p",)][key]), np.asarray(actual[("p",)][key])
        assert np.linalg.norm(e) > 1e-2, key  # every factor has a live gradient
        np.testing.assert_allclose(a, e, rtol=1e-4, atol=1e-6, err_msg=key)
    assert_grads_close(expected, actual, rtol=1e-4, atol=1e-6)
    (trace,) = learner.get_etrace_of(model.p).values()
    lead = (batch,) if batch else ()
    assert trace["weight"].shape == lead + (O, I, 1)  # the effective-weight trace


def test_es_d_rtrl_aligns_with_bptt_at_short_memory():
    """ES-D-RTRL is biased; with a fast leak (a = 0.3) and decay 0.3 it is well aligned."""
    brainstate.random.seed(1)
    xs = brainstate.random.randn(20, 4, I)
    expected, actual, _ = run_both(LoRALeaky(decay=0.3), xs, 4, braintrace.ES_D_RTRL, decay_or_rank=0.3)
    e, a = flat(expected)[("p",)], flat(actual)[("p",)]
    assert cosine(e, a) > 0.9
    assert 0.5 < np.linalg.norm(a) / np.linalg.norm(e) < 2.0
