"""`conv` in lax layouts: default NC.../OI..., any dimension_numbers, grouped; oracle; D-RTRL == BPTT."""

import warnings

import brainstate
import brainunit as u
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

import braintrace
from braintrace.ops import etp_conv_p, etp_rule_of
from tests._support.oracle import assert_grads_close, bptt_grads, online_grads, restore_states, snapshot_states

TOL = dict(rtol=1e-4, atol=1e-4)


def randn(seed, shape):
    return jnp.asarray(np.random.RandomState(seed).randn(*shape), dtype=jnp.float32)


def _as_tuple(v, n):
    return (1,) * n if v is None else ((v,) * n if isinstance(v, int) else tuple(v))


def lax_reference(x, k, b, *, dn, bias_shape, strides=1, padding="SAME", lhs_dilation=None, rhs_dilation=None,
                  feature_group_count=1):
    """``lax.conv_general_dilated`` plus a bias reshaped by hand onto the output-channel axis."""
    ns = k.ndim - 2
    y = lax.conv_general_dilated(x, k, _as_tuple(strides, ns), padding, _as_tuple(lhs_dilation, ns),
                                 _as_tuple(rhs_dilation, ns), dimension_numbers=dn,
                                 feature_group_count=feature_group_count)
    return y if b is None else y + b.reshape(bias_shape)


# (id, x shape, kernel shape, dimension_numbers, bias shape broadcast onto y, kwargs)
CASES = [
    ("1d-default", (2, 3, 9), (4, 3, 3), None, (4, 1), dict(padding="SAME")),
    ("2d-default-stride", (2, 2, 7, 6), (3, 2, 3, 2), None, (3, 1, 1), dict(strides=(2, 1), padding="VALID")),
    ("3d-default", (2, 2, 4, 5, 4), (3, 2, 2, 3, 2), None, (3, 1, 1, 1), dict(padding="SAME", rhs_dilation=(1, 2, 1))),
    ("2d-nhwc-hwio", (2, 6, 5, 3), (3, 3, 3, 4), ("NHWC", "HWIO", "NHWC"), (4,), dict(padding=((1, 0), (2, 1)))),
    ("2d-mixed-layouts", (2, 6, 5, 3), (4, 3, 2, 3), ("NHWC", "OIHW", "NCHW"), (4, 1, 1), dict(strides=2)),
    ("2d-batch-last", (6, 5, 3, 2), (3, 3, 3, 4), ("HWCN", "HWIO", "NHWC"), (4,), dict(padding="VALID")),
    ("1d-grouped-default", (2, 4, 8), (6, 2, 3), None, (6, 1), dict(feature_group_count=2)),
    ("2d-depthwise-nhwc", (2, 5, 6, 3), (3, 3, 1, 6), ("NHWC", "HWIO", "NHWC"), (6,),
     dict(feature_group_count=3, strides=(1, 2))),
    ("1d-lhs-dilation", (2, 2, 6), (3, 2, 2), None, (3, 1), dict(padding=((1, 1),), lhs_dilation=2)),
]
IDS = [c[0] for c in CASES]


def case_args(case):
    _, x_shape, k_shape, dn, bias_shape, kwargs = case
    c_out = int(np.prod(bias_shape))
    args = (randn(1, x_shape), randn(2, k_shape) * 0.5, randn(3, (c_out,)))
    dn_lax = dn if dn is not None else lax.conv_dimension_numbers(x_shape, k_shape, None)

    def op(x, k, b):
        return braintrace.conv(x, k, b, dimension_numbers=dn, **kwargs)

    def ref(x, k, b):
        return lax_reference(x, k, b, dn=dn_lax, bias_shape=bias_shape, **kwargs)

    return op, ref, args


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_forward_grad_jit_vmap(case):
    op, ref, args = case_args(case)
    cot = randn(4, jax.eval_shape(ref, *args).shape)

    @jax.jit
    def both(*a):
        return [(f(*a), jax.grad(lambda *a_, f=f: jnp.sum(f(*a_) * cot), (0, 1, 2))(*a)) for f in (op, ref)]

    (y, g), (y_ref, g_ref) = both(*args)
    np.testing.assert_allclose(op(*args), y_ref, **TOL)
    np.testing.assert_allclose(y, y_ref, **TOL)
    for a, e in zip(g, g_ref, strict=True):
        np.testing.assert_allclose(a, e, **TOL)
    xs = jnp.stack([args[0], -args[0]])
    vm = jax.vmap(op, in_axes=(0, None, None))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert etp_conv_p in {e.primitive for e in jax.make_jaxpr(vm)(xs, *args[1:]).eqns}
        np.testing.assert_allclose(jax.jit(vm)(xs, *args[1:]), jax.vmap(ref, in_axes=(0, None, None))(xs, *args[1:]),
                                   **TOL)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_trace_oracle(case):
    """Contracted increment == VJP at ``Σ_s df·L``; the kernel trace is ``(*y.shape, P, S)``."""
    op, ref, args = case_args(case)
    (eqn,) = [e for e in jax.make_jaxpr(op)(*args).eqns if e.primitive is etp_conv_p]
    rule, params = etp_rule_of(etp_conv_p), dict(eqn.params)
    raw = {"kernel": args[1], "bias": args[2]}
    vs = jax.eval_shape(ref, *args).shape
    patch = int(np.prod(args[1].shape)) // args[2].shape[0]  # (C_in / groups) · prod(kernel_spatial)
    data = [(randn(10 + s, vs + (s,)), randn(20 + s, vs + (s,))) for s in (1, 2)]

    @jax.jit
    def compute(x, raw_):
        out = []
        for df, signal in data:
            trace = rule.trace_increment(x, df, raw_, params)
            assert trace["kernel"].shape == vs + (patch, df.shape[-1])
            _, pullback = jax.vjp(lambda r: ref(x, r["kernel"], r["bias"]), raw_)
            out.append((rule.trace_contract(trace, signal, raw_, params), pullback(jnp.sum(df * signal, -1))[0]))
        return out

    for got, expected in compute(args[0], raw):
        for key in raw:
            np.testing.assert_allclose(got[key], expected[key], **TOL)


def test_dimension_numbers_object_equals_strings():
    x, k = randn(1, (2, 6, 5, 3)), randn(2, (3, 3, 3, 4))
    dn = lax.conv_dimension_numbers(x.shape, k.shape, ("NHWC", "HWIO", "NHWC"))
    np.testing.assert_allclose(braintrace.conv(x, k, dimension_numbers=dn),
                               braintrace.conv(x, k, dimension_numbers=("NHWC", "HWIO", "NHWC")), **TOL)


def test_unbatched_sample_and_extra_leading_axes():
    x, k, b = randn(1, (3, 2, 3, 9)), randn(2, (4, 3, 3)), randn(3, (4,))
    full = braintrace.conv(x.reshape(6, 3, 9), k, b)
    np.testing.assert_allclose(braintrace.conv(x, k, b), full.reshape(3, 2, 4, 9), **TOL)
    np.testing.assert_allclose(braintrace.conv(x[1, 0], k, b), full[2], **TOL)


def test_units_flow_through():
    x, k, b = randn(1, (2, 3, 9)), randn(2, (4, 3, 3)), randn(3, (4,))
    y = braintrace.conv(x * u.mV, k * u.siemens, b * u.mA)
    assert isinstance(y, u.Quantity)
    np.testing.assert_allclose(y.to_decimal(u.mA), braintrace.conv(x, k, b), **TOL)  # mV · S = mA
    with pytest.raises(ValueError, match="unit"):
        braintrace.conv(x * u.mV, k * u.siemens, b)


def test_bad_inputs_raise_clear_errors():
    x = jnp.ones((2, 3, 9))
    with pytest.raises(ValueError, match=r"2 input channels on axis 1.*\(2, 3, 9\)"):
        braintrace.conv(x, jnp.ones((4, 2, 3)))
    with pytest.raises(ValueError, match="dimension_numbers"):
        braintrace.conv(x, jnp.ones((4, 3, 3)), dimension_numbers=("NHWC", "HWIO", "NHWC"))
    with pytest.raises(ValueError, match="feature_group_count=4"):
        braintrace.conv(jnp.ones((2, 4, 9)), jnp.ones((6, 1, 3)), feature_group_count=4)
    with pytest.raises(ValueError, match=r"at least 2 axes"):
        braintrace.conv(jnp.ones(9), jnp.ones((4, 3, 3)))
    with pytest.raises(braintrace.NotSupportedError, match="batch_group_count"):
        braintrace.conv(x, jnp.ones((4, 3, 3)), batch_group_count=2)


class LeakyConv(brainstate.nn.Module):
    """``h = leak h + tanh(conv(x, K, b))`` with the state in the conv's output layout."""

    def __init__(self, x_shape, k_shape, dn=None, leak=0.8, **kwargs):
        super().__init__()
        self.dn, self.kwargs, self.leak = dn, kwargs, leak
        c_out = k_shape[0] if dn is None else k_shape[dn[1].index("O")]
        self.p = brainstate.ParamState({"kernel": randn(5, k_shape) * 0.4, "bias": randn(6, (c_out,)) * 0.1})
        self.y_shape = jax.eval_shape(self._conv, jnp.zeros(x_shape), self.p.value).shape[1:]

    def _conv(self, x, p):
        return braintrace.conv(x, p["kernel"], p["bias"], dimension_numbers=self.dn, **self.kwargs)

    def init_state(self, batch_size=None, **kwargs):
        self.h = brainstate.HiddenState(jnp.zeros((batch_size,) + self.y_shape))

    def update(self, x):
        self.h.value = self.leak * self.h.value + jnp.tanh(self._conv(x, self.p.value))
        return self.h.value


EXACT = [
    ("1d-default", (2, 2, 7), (3, 2, 3), None, dict(padding="SAME")),
    ("2d-default-stride", (2, 2, 6, 5), (3, 2, 3, 2), None, dict(strides=2, padding="VALID")),
    ("3d-default", (2, 1, 4, 4, 3), (2, 1, 2, 3, 2), None, dict(padding="SAME")),
    ("2d-grouped-nhwc", (2, 5, 4, 4), (3, 3, 2, 6), ("NHWC", "HWIO", "NHWC"), dict(feature_group_count=2)),
]


def run(model, xs, algorithm, **options):
    brainstate.nn.init_all_states(model, xs.shape[1])
    snap = snapshot_states(model)
    expected = bptt_grads(model, xs)
    restore_states(model, snap)
    learner = algorithm(model, **options)
    learner.compile_graph(xs[0])
    (rel,) = learner.graph.hidden_param_op_relations
    assert rel.primitive is etp_conv_p
    assert float(jnp.linalg.norm(expected[("p",)]["kernel"])) > 0.1  # a live gradient
    return expected, online_grads(learner, xs)


@pytest.mark.parametrize("case", EXACT, ids=[c[0] for c in EXACT])
def test_d_rtrl_equals_bptt(case):
    _, x_shape, k_shape, dn, kwargs = case
    xs = randn(7, (6,) + x_shape)
    expected, actual = run(LeakyConv(x_shape, k_shape, dn, **kwargs), xs, braintrace.D_RTRL)
    assert_grads_close(expected, actual, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("case", [EXACT[1], EXACT[3]], ids=[EXACT[1][0], EXACT[3][0]])
def test_es_d_rtrl_runs_and_is_exact_without_memory(case):
    _, x_shape, k_shape, dn, kwargs = case
    xs = randn(8, (5,) + x_shape)
    expected, actual = run(LeakyConv(x_shape, k_shape, dn, leak=0.0, **kwargs), xs, braintrace.ES_D_RTRL,
                           decay_or_rank=1)
    assert_grads_close(expected, actual, rtol=1e-4, atol=1e-5)
    _, approx = run(LeakyConv(x_shape, k_shape, dn, **kwargs), xs, braintrace.ES_D_RTRL, decay_or_rank=0.5)
    assert all(np.all(np.isfinite(np.asarray(g))) for g in jax.tree.leaves(approx))
