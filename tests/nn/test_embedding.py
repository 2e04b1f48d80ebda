"""`nn.Embedding`: PyTorch-like padding_idx/max_norm/freeze, errors, D-RTRL == BPTT, Vmap and jit."""

import brainstate
import brainunit as u
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import braintrace
import braintrace.nn as bnn
from braintrace.ops import etp_embedding_p
from tests._support.oracle import assert_grads_close, bptt_grads, online_grads, restore_states, snapshot_states

TOL = dict(rtol=1e-5, atol=1e-5)
TABLE = jnp.asarray(np.random.RandomState(0).randn(6, 3), jnp.float32)


def grad_of(layer, idx, cot):
    params = layer.states(brainstate.ParamState)
    return brainstate.transform.grad(lambda: jnp.sum(layer(idx) * cot), grad_states=params)()[("weight",)]


def test_lookup_and_gradient():
    layer = bnn.Embedding(6, 3, embedding_init=TABLE)
    idx = jnp.array([[1, 4], [4, 0]])
    np.testing.assert_allclose(layer(idx), np.asarray(TABLE)[np.asarray(idx)], **TOL)
    np.testing.assert_allclose(brainstate.transform.jit(layer)(idx), np.asarray(TABLE)[np.asarray(idx)], **TOL)
    cot = jnp.asarray(np.random.RandomState(1).randn(2, 2, 3), jnp.float32)
    expected = np.zeros((6, 3), np.float32)
    np.add.at(expected, np.asarray(idx).ravel(), np.asarray(cot).reshape(-1, 3))
    np.testing.assert_allclose(grad_of(layer, idx, cot), expected, **TOL)


def test_padding_idx_row_is_zero_and_gets_no_gradient():
    layer = bnn.Embedding(6, 3, embedding_init=TABLE, padding_idx=-1)  # counts from the end, as in PyTorch
    assert layer.padding_idx == 5
    np.testing.assert_array_equal(layer.weight.value[5], np.zeros(3))
    idx = jnp.array([5, 2, 5])
    g = grad_of(layer, idx, jnp.ones((3, 3)))
    np.testing.assert_array_equal(g[5], np.zeros(3))
    np.testing.assert_allclose(g[2], np.ones(3), **TOL)
    # the row keeps its value if it is set by hand (only its gradient is blocked)
    layer.weight.value = layer.weight.value.at[5].set(1.0)
    np.testing.assert_allclose(layer(jnp.array(5)), np.ones(3), **TOL)


def test_max_norm_renormalises_looked_up_rows():
    layer = bnn.Embedding(6, 3, embedding_init=TABLE, max_norm=0.5)
    y = np.asarray(layer(jnp.arange(6)))
    norms = np.linalg.norm(np.asarray(TABLE), axis=1)
    expected = np.asarray(TABLE) * np.minimum(1.0, 0.5 / (norms + 1e-7))[:, None]
    np.testing.assert_allclose(y, expected, **TOL)
    assert np.all(np.linalg.norm(y, axis=1) <= 0.5 + 1e-5)
    # the renormalisation scale is not differentiated (PyTorch renormalises the weight in place)
    g = grad_of(layer, jnp.array([0, 0, 3]), jnp.ones((3, 3)))
    np.testing.assert_allclose(g[0], 2 * np.ones(3), **TOL)
    l1 = bnn.Embedding(6, 3, embedding_init=TABLE, max_norm=0.5, norm_type=1.0)
    assert np.all(np.abs(np.asarray(l1(jnp.arange(6)))).sum(1) <= 0.5 + 1e-5)


def test_freeze_is_not_trainable():
    layer = bnn.Embedding(6, 3, embedding_init=TABLE, freeze=True)
    assert not layer.states(brainstate.ParamState)
    np.testing.assert_allclose(layer(jnp.array([3])), TABLE[3:4], **TOL)
    assert etp_embedding_p not in {e.primitive for e in jax.make_jaxpr(lambda i: layer(i))(jnp.array([3])).eqns}


def test_bad_arguments_raise_clear_errors():
    with pytest.raises(braintrace.NotSupportedError, match="`Embedding`: scale_grad_by_freq=True"):
        bnn.Embedding(6, 3, scale_grad_by_freq=True)
    with pytest.raises(ValueError, match=r"`Embedding`: `padding_idx` = 6 must lie in \[-6, 6\)"):
        bnn.Embedding(6, 3, padding_idx=6)
    with pytest.raises(ValueError, match="`Embedding`: `max_norm` must be positive"):
        bnn.Embedding(6, 3, max_norm=0.0)
    with pytest.raises(ValueError, match=r"`Embedding`: `embedding_init` does not give a table of shape \(6, 3\)"):
        bnn.Embedding(6, 3, embedding_init=jnp.ones((6, 4)))
    with pytest.raises(TypeError, match="integer indices"):
        bnn.Embedding(6, 3)(jnp.array([1.0]))


def test_units():
    layer = bnn.Embedding(6, 3, embedding_init=TABLE * u.mV, padding_idx=0)
    y = layer(jnp.array([0, 1]))
    assert isinstance(y, u.Quantity) and y.unit == u.mV
    np.testing.assert_allclose(y.to_decimal(u.mV)[1], TABLE[1], **TOL)


class TokenRNN(brainstate.nn.Module):
    """Token ids -> Embedding -> leaky integrator -> Linear readout."""

    def __init__(self, **kwargs):
        super().__init__()
        self.emb = bnn.Embedding(6, 3, embedding_init=TABLE, **kwargs)
        self.out = bnn.Linear(3, 2)

    def init_state(self, batch_size=None, **kwargs):
        self.h = brainstate.HiddenState(jnp.zeros(((batch_size,) if batch_size else ()) + (3,)))

    def update(self, token):
        self.h.value = 0.75 * self.h.value + jnp.tanh(self.emb(token))
        return self.out(self.h.value)


@pytest.mark.parametrize("batch,kwargs", [(None, {}), (3, dict(padding_idx=2, max_norm=1.0))])
def test_d_rtrl_equals_bptt(batch, kwargs):
    brainstate.random.seed(2)
    model = TokenRNN(**kwargs)
    brainstate.nn.init_all_states(model, batch) if batch else brainstate.nn.init_all_states(model)
    xs = jnp.asarray(np.random.RandomState(3).randint(0, 6, (10,) + ((batch,) if batch else ())), jnp.int32)
    snap = snapshot_states(model)
    expected = bptt_grads(model, xs)
    restore_states(model, snap)
    learner = braintrace.D_RTRL(model)
    learner.compile_graph(xs[0])
    actual = online_grads(learner, xs)
    assert float(jnp.abs(expected[("emb", "weight")]).max()) > 0.1
    assert_grads_close(expected, actual, rtol=1e-4, atol=1e-5)
    if "padding_idx" in kwargs:
        np.testing.assert_array_equal(np.asarray(actual[("emb", "weight")])[2], np.zeros(3))


def test_vmap_new_states_and_vmap_match_the_batched_model():
    brainstate.random.seed(4)
    model = TokenRNN()
    tokens = jnp.array([0, 3, 5, 3])

    @brainstate.transform.vmap_new_states(state_tag="new", axis_size=4)
    def init():
        brainstate.nn.init_all_states(model)

    init()
    y_lanes = brainstate.transform.jit(brainstate.nn.Vmap(model, vmap_states="new"))(tokens)
    brainstate.nn.init_all_states(model, 4)
    np.testing.assert_allclose(y_lanes, model(tokens), **TOL)
