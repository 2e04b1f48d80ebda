"""`grouped_matmul`: forward/grad/vmap/jit against plain JAX, the trace oracle, D-RTRL == BPTT."""

import warnings

import brainstate
import brainunit as u
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import braintrace
from braintrace.ops import etp_grouped_matmul_p, etp_rule_of, is_etp_primitive
from tests._support.oracle import assert_grads_close, bptt_grads, online_grads, restore_states, snapshot_states

TOL = dict(rtol=1e-5, atol=1e-5)
G, K, N = 3, 4, 2


def randn(seed, shape):
    return jnp.asarray(np.random.RandomState(seed).randn(*shape), dtype=jnp.float32)


def reference(x, w, b=None):
    # written out per group, independent of the op's einsum
    y = jnp.stack([x[..., g, :] @ w[g] for g in range(w.shape[0])], axis=-2)
    return y if b is None else y + b


def square(w):
    return w * w + 0.5 * w


@pytest.mark.parametrize("x_shape", [(G, K), (5, G, K), (2, 5, G, K)])
@pytest.mark.parametrize("with_bias", [False, True])
def test_forward_grad_jit(x_shape, with_bias):
    args = [randn(0, x_shape), randn(1, (G, K, N))] + ([randn(2, (G, N))] if with_bias else [])
    cot = randn(3, x_shape[:-1] + (N,))

    @jax.jit
    def both(*a):
        out = []
        for f in (braintrace.grouped_matmul, reference):
            loss = lambda *a_, f=f: jnp.sum(f(*a_) * cot)  # noqa: E731
            out.append((f(*a), jax.grad(loss, tuple(range(len(a))))(*a)))
        return out

    (y, g), (y_ref, g_ref) = both(*args)
    np.testing.assert_allclose(y, y_ref, **TOL)
    np.testing.assert_allclose(braintrace.grouped_matmul(*args), y_ref, **TOL)  # eager
    for a, e in zip(g, g_ref, strict=True):
        np.testing.assert_allclose(a, e, **TOL)
    assert etp_grouped_matmul_p in {e.primitive for e in jax.make_jaxpr(braintrace.grouped_matmul)(*args).eqns}


def test_weight_fn_bias_fn_are_differentiated():
    x, w, b = randn(0, (5, G, K)), randn(1, (G, K, N)), randn(2, (G, N))
    op = lambda x_, w_, b_: braintrace.grouped_matmul(x_, w_, b_, weight_fn=square, bias_fn=jnp.exp)  # noqa: E731
    ref = lambda x_, w_, b_: reference(x_, square(w_), jnp.exp(b_))  # noqa: E731
    np.testing.assert_allclose(op(x, w, b), ref(x, w, b), **TOL)
    g = jax.grad(lambda *a: jnp.sum(jnp.sin(op(*a))), (1, 2))(x, w, b)
    g_ref = jax.grad(lambda *a: jnp.sum(jnp.sin(ref(*a))), (1, 2))(x, w, b)
    for a, e in zip(g, g_ref, strict=True):
        np.testing.assert_allclose(a, e, **TOL)


def test_vmap_over_x_keeps_the_primitive_and_over_weight_falls_back():
    x, w, b = randn(0, (G, K)), randn(1, (G, K, N)), randn(2, (G, N))
    xs = jnp.stack([x, 2 * x, -x])
    vm = jax.vmap(braintrace.grouped_matmul, in_axes=(0, None, None))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert etp_grouped_matmul_p in {e.primitive for e in jax.make_jaxpr(vm)(xs, w, b).eqns}
        np.testing.assert_allclose(jax.jit(vm)(xs, w, b), reference(xs, w, b), **TOL)
        g = jax.grad(lambda w_: jnp.sum(vm(xs, w_, b) ** 2))(w)
    np.testing.assert_allclose(g, jax.grad(lambda w_: jnp.sum(reference(xs, w_, b) ** 2))(w), **TOL)
    ws = jnp.stack([w, 2 * w])
    with pytest.warns(UserWarning, match="vmapped over its parameters"):
        got = jax.vmap(braintrace.grouped_matmul, in_axes=(None, 0, None))(x, ws, b)
    np.testing.assert_allclose(got, jnp.stack([reference(x, w, b), reference(x, 2 * w, b)]), **TOL)


@pytest.mark.parametrize("x_shape,varshape", [((G, K), None), ((5, G, K), None), ((G, K), (2, G, N))])
@pytest.mark.parametrize("with_bias", [False, True])
def test_trace_oracle(x_shape, varshape, with_bias):
    """``contract(increment(x, df), L)`` equals the VJP of the op at ``Σ_s df·L``; trace ``(*V, K, S)``."""
    args = [randn(0, x_shape), randn(1, (G, K, N))] + ([randn(2, (G, N))] if with_bias else [])
    (eqn,) = jax.make_jaxpr(braintrace.grouped_matmul)(*args).eqns
    rule, params = etp_rule_of(eqn.primitive), dict(eqn.params)
    raw = {"weight": args[1]} | ({"bias": args[2]} if with_bias else {})
    vs = tuple(varshape or x_shape[:-1] + (N,))
    for s in (1, 2):
        df, signal = randn(10 + s, vs + (s,)), randn(20 + s, vs + (s,))
        trace = rule.trace_increment(args[0], df, raw, params)
        assert trace["weight"].shape == vs + (K, s)
        got = rule.trace_contract(trace, signal, raw, params)
        _, pullback = jax.vjp(lambda r: jnp.broadcast_to(reference(args[0], r["weight"], r.get("bias")), vs), raw)
        (expected,) = pullback(jnp.sum(df * signal, -1))
        for key in raw:
            np.testing.assert_allclose(got[key], expected[key], **TOL)


def test_units():
    x, w, b = randn(0, (5, G, K)), randn(1, (G, K, N)), randn(2, (G, N))
    y = braintrace.grouped_matmul(x * u.mV, w * u.siemens, b * u.mA)
    assert isinstance(y, u.Quantity)
    np.testing.assert_allclose(y.to_decimal(u.mA), reference(x, w, b), **TOL)  # mV · S = mA


def test_bad_shapes_raise_clear_errors():
    with pytest.raises(ValueError, match=r"3-D weight.*\(4, 2\)"):
        braintrace.grouped_matmul(jnp.ones((G, K)), jnp.ones((4, 2)))
    with pytest.raises(ValueError, match=r"\(5, 3, 3\)"):
        braintrace.grouped_matmul(jnp.ones((5, G, 3)), jnp.ones((G, K, N)))
    with pytest.raises(ValueError, match=r"bias of shape \(G, N\) = \(3, 2\); got \(2,\)"):
        braintrace.grouped_matmul(jnp.ones((G, K)), jnp.ones((G, K, N)), jnp.ones(N))


class LeakyGrouped(brainstate.nn.Module):
    """``h = leak h + tanh(grouped_matmul(x, W, b))`` with ``h`` of shape ``(B, G, N)``."""

    def __init__(self, leak=0.8):
        super().__init__()
        self.leak = leak
        self.p = brainstate.ParamState({"weight": randn(5, (G, K, N)) * 0.7, "bias": randn(6, (G, N)) * 0.1})

    def init_state(self, batch_size=None, **kwargs):
        self.h = brainstate.HiddenState(jnp.zeros(((batch_size,) if batch_size else ()) + (G, N)))

    def update(self, x):
        p = self.p.value
        self.h.value = self.leak * self.h.value + jnp.tanh(braintrace.grouped_matmul(x, p["weight"], p["bias"]))
        return self.h.value


def run_against_bptt(model, xs, batch, algorithm, **options):
    brainstate.nn.init_all_states(model, batch) if batch else brainstate.nn.init_all_states(model)
    snap = snapshot_states(model)
    expected = bptt_grads(model, xs)
    restore_states(model, snap)
    learner = algorithm(model, **options)
    learner.compile_graph(xs[0])
    (rel,) = learner.graph.hidden_param_op_relations
    assert rel.primitive is etp_grouped_matmul_p
    assert float(jnp.linalg.norm(expected[("p",)]["weight"])) > 0.1  # a live gradient
    return expected, online_grads(learner, xs)


@pytest.mark.parametrize("batch", [None, 2])
def test_d_rtrl_equals_bptt(batch):
    xs = randn(7, (8,) + ((batch,) if batch else ()) + (G, K))
    expected, actual = run_against_bptt(LeakyGrouped(), xs, batch, braintrace.D_RTRL)
    assert_grads_close(expected, actual, rtol=1e-4, atol=1e-5)


def test_es_d_rtrl_runs_and_is_exact_without_memory():
    """With no recurrence (leak 0) and rank 1 (trace decay 0) the factorised gradient is exact."""
    xs = randn(8, (6, 2, G, K))
    expected, actual = run_against_bptt(LeakyGrouped(leak=0.0), xs, 2, braintrace.ES_D_RTRL, decay_or_rank=1)
    assert_grads_close(expected, actual, rtol=1e-4, atol=1e-5)
    expected, approx = run_against_bptt(LeakyGrouped(), xs, 2, braintrace.ES_D_RTRL, decay_or_rank=0.5)
    for key in ("weight", "bias"):
        assert approx[("p",)][key].shape == expected[("p",)][key].shape
        assert np.all(np.isfinite(np.asarray(approx[("p",)][key])))


def test_etp_primitive_registered():
    assert is_etp_primitive(etp_grouped_matmul_p)
    assert etp_rule_of(etp_grouped_matmul_p).trainable_inputs(has_bias=True, weight_fn=None, bias_fn=None) == {
        "weight": 1, "bias": 2}
