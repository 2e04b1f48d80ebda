"""`embedding`: lookup/grad/vmap/jit with integer indices, the trace oracle, D-RTRL == BPTT, ES-D-RTRL."""

import warnings

import brainstate
import brainunit as u
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import braintrace
from braintrace.ops import etp_embedding_p, etp_rule_of
from tests._support.oracle import assert_grads_close, bptt_grads, online_grads, restore_states, snapshot_states

TOL = dict(rtol=1e-5, atol=1e-5)
V, D = 7, 4


def randn(seed, shape):
    return jnp.asarray(np.random.RandomState(seed).randn(*shape), dtype=jnp.float32)


def tokens(seed, shape):
    return jnp.asarray(np.random.RandomState(seed).randint(0, V, shape), dtype=jnp.int32)


TABLE = randn(0, (V, D))


def reference(idx, table):
    return np.asarray(table)[np.asarray(idx)]


@pytest.mark.parametrize("shape", [(), (5,), (3, 5)])
def test_lookup_grad_jit(shape):
    idx = tokens(1, shape)
    cot = randn(2, shape + (D,))
    y = braintrace.embedding(idx, TABLE)
    np.testing.assert_allclose(y, reference(idx, TABLE), **TOL)
    np.testing.assert_allclose(jax.jit(braintrace.embedding)(idx, TABLE), reference(idx, TABLE), **TOL)
    grad = jax.jit(jax.grad(lambda t: jnp.sum(braintrace.embedding(idx, t) * cot)))(TABLE)
    expected = np.zeros((V, D), np.float32)
    np.add.at(expected, np.asarray(idx).reshape(-1), np.asarray(cot).reshape(-1, D))  # scatter-add by hand
    np.testing.assert_allclose(grad, expected, **TOL)


def test_integer_indices_have_float0_tangents():
    idx = tokens(1, (5,))
    t_table = randn(3, (V, D))
    zero = np.zeros(idx.shape, jax.dtypes.float0)
    y, ty = jax.jvp(braintrace.embedding, (idx, TABLE), (zero, t_table))
    np.testing.assert_allclose(ty, reference(idx, t_table), **TOL)
    _, pullback = jax.vjp(braintrace.embedding, idx, TABLE)
    g_idx, g_table = pullback(jnp.ones_like(y))
    assert g_idx.dtype == jax.dtypes.float0
    assert float(g_table.sum()) == pytest.approx(5 * D)


def test_vmap_over_indices_keeps_the_primitive():
    idx = tokens(4, (3, 5))
    vm = jax.vmap(braintrace.embedding, in_axes=(0, None))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert etp_embedding_p in {e.primitive for e in jax.make_jaxpr(vm)(idx, TABLE).eqns}
        np.testing.assert_allclose(jax.jit(vm)(idx, TABLE), reference(idx, TABLE), **TOL)
    with pytest.warns(UserWarning, match="vmapped over its parameters"):
        got = jax.vmap(braintrace.embedding, in_axes=(None, 0))(idx[0], jnp.stack([TABLE, 2 * TABLE]))
    np.testing.assert_allclose(got[1], 2 * reference(idx[0], TABLE), **TOL)


def test_out_of_range_indices_give_nan_rows_and_no_gradient():
    idx = jnp.array([1, V, -1, 0])
    y = braintrace.embedding(idx, TABLE)
    assert np.all(np.isnan(y[1])) and np.all(np.isnan(y[2]))
    np.testing.assert_allclose(y[0], TABLE[1], **TOL)
    grad = jax.grad(lambda t: jnp.nansum(braintrace.embedding(idx, t)))(TABLE)
    expected = np.zeros((V, D), np.float32)
    expected[[0, 1]] = 1.0  # only the in-range ids 1 and 0 receive gradient
    np.testing.assert_allclose(grad, expected, **TOL)


def test_weight_fn_and_units():
    y = braintrace.embedding(jnp.array([2, 3]), TABLE, weight_fn=jnp.tanh)
    np.testing.assert_allclose(y, np.tanh(reference([2, 3], TABLE)), **TOL)
    g = jax.grad(lambda t: jnp.sum(braintrace.embedding(jnp.array([2]), t, weight_fn=jnp.tanh)))(TABLE)
    np.testing.assert_allclose(g[2], 1 - np.tanh(TABLE[2]) ** 2, **TOL)
    q = braintrace.embedding(jnp.array([2]), TABLE * u.mV)
    assert isinstance(q, u.Quantity) and q.unit == u.mV


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(TypeError, match="integer indices.*float32"):
        braintrace.embedding(jnp.array([1.0, 2.0]), TABLE)
    with pytest.raises(ValueError, match=r"2-D table.*\(7,\)"):
        braintrace.embedding(jnp.array([1]), jnp.ones(7))


@pytest.mark.parametrize("idx_shape,varshape", [((), None), ((5,), None), ((3, 5), None), ((), (2, D))])
def test_trace_oracle(idx_shape, varshape):
    """Contracted increment == VJP; the trace is ``(*lead, D, V, S)``, its increment the one-hot."""
    idx = tokens(5, idx_shape)
    (eqn,) = jax.make_jaxpr(braintrace.embedding)(idx, TABLE).eqns
    rule, params = etp_rule_of(eqn.primitive), dict(eqn.params)
    vs = tuple(varshape or idx_shape + (D,))
    raw = {"weight": TABLE}
    for s in (1, 2):
        df, signal = randn(10 + s, vs + (s,)), randn(20 + s, vs + (s,))
        trace = rule.trace_increment(idx, df, raw, params)["weight"]
        assert trace.shape == vs + (V, s)
        onehot = np.eye(V, dtype=np.float32)[np.asarray(idx)]
        np.testing.assert_allclose(trace, onehot[..., None, :, None] * np.asarray(df)[..., :, None, :], **TOL)
        got = rule.trace_contract({"weight": trace}, signal, raw, params)["weight"]
        _, pullback = jax.vjp(lambda t: jnp.broadcast_to(braintrace.embedding(idx, t), vs), TABLE)
        np.testing.assert_allclose(got, pullback(jnp.sum(df * signal, -1))[0], **TOL)


def test_io_input_is_the_one_hot_and_apply_accepts_it():
    idx = tokens(6, (5,))
    (eqn,) = jax.make_jaxpr(braintrace.embedding)(idx, TABLE.astype(jnp.float16)).eqns
    rule = etp_rule_of(eqn.primitive)
    x_repr = rule.input_representation(idx, dict(eqn.params))
    assert x_repr.dtype == jnp.float16
    np.testing.assert_array_equal(x_repr, np.eye(V)[np.asarray(idx)])
    y = rule.apply(x_repr.astype(jnp.float32), {"weight": TABLE}, **eqn.params)
    np.testing.assert_allclose(y, reference(idx, TABLE), **TOL)


class TokenLeaky(brainstate.nn.Module):
    """``h = leak h + tanh(table[token])`` with ``h`` of shape ``(B, D)``; the output is ``h``."""

    def __init__(self, leak=0.7):
        super().__init__()
        self.leak = leak
        self.table = brainstate.ParamState(TABLE)

    def init_state(self, batch_size=None, **kwargs):
        self.h = brainstate.HiddenState(jnp.zeros(((batch_size,) if batch_size else ()) + (D,)))

    def update(self, token):
        self.h.value = self.leak * self.h.value + jnp.tanh(braintrace.embedding(token, self.table.value))
        return self.h.value


def run(model, xs, batch, algorithm, **options):
    brainstate.nn.init_all_states(model, batch) if batch else brainstate.nn.init_all_states(model)
    snap = snapshot_states(model)
    expected = bptt_grads(model, xs)
    restore_states(model, snap)
    learner = algorithm(model, **options)
    learner.compile_graph(xs[0])
    (rel,) = learner.graph.hidden_param_op_relations
    assert rel.primitive is etp_embedding_p
    return expected, online_grads(learner, xs)


@pytest.mark.parametrize("batch", [None, 3])
def test_d_rtrl_equals_bptt_on_a_token_sequence(batch):
    xs = tokens(7, (10,) + ((batch,) if batch else ()))
    expected, actual = run(TokenLeaky(), xs, batch, braintrace.D_RTRL)
    assert float(jnp.abs(expected[("table",)]).max()) > 0.5  # a live gradient
    assert_grads_close(expected, actual, rtol=1e-4, atol=1e-5)


def es_d_rtrl_by_hand(xs, leak, alpha):
    """The ES-D-RTRL gradient of ``Σ_t Σ h_t²`` written out with numpy (one-hot input trace)."""
    table = np.asarray(TABLE, np.float64)
    h = np.zeros((xs.shape[1], D))
    x_bar = np.zeros((xs.shape[1], V))
    eps = np.zeros((xs.shape[1], D))
    grad = np.zeros((V, D))
    for k, tok in enumerate(np.asarray(xs)):
        pre = np.tanh(table[tok])
        h = leak * h + pre
        x_bar = alpha * x_bar + np.eye(V)[tok]
        eps = alpha * leak * eps + (1 - alpha) * (1 - pre ** 2)
        grad += x_bar.T @ (eps * 2 * h) / (1 - alpha ** (k + 1))
    return grad


def test_es_d_rtrl_filters_the_one_hot():
    xs = tokens(8, (9, 3))
    _, actual = run(TokenLeaky(), xs, 3, braintrace.ES_D_RTRL, decay_or_rank=0.6)
    np.testing.assert_allclose(actual[("table",)], es_d_rtrl_by_hand(xs, 0.7, 0.6), rtol=1e-4, atol=1e-5)


def test_es_d_rtrl_is_exact_without_memory():
    xs = tokens(9, (6, 3))
    expected, actual = run(TokenLeaky(leak=0.0), xs, 3, braintrace.ES_D_RTRL, decay_or_rank=1)
    assert_grads_close(expected, actual, rtol=1e-4, atol=1e-5)
