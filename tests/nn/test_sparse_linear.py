"""`braintrace.nn.SparseLinear`: the published parameter layout, dense equivalence, brainstate
state initialisation / Vmap / jit, exact online gradients, O(nnz) traces, clear errors."""

import brainevent
import brainstate
import braintools
import brainunit as u
import jax.numpy as jnp
import numpy as np
import pytest

import braintrace
import braintrace.nn as bnn
from tests._support.oracle import assert_grads_close, bptt_grads, online_grads

TOL = dict(rtol=1e-5, atol=1e-6)
I, O = 7, 4


def dense_pattern(seed=0):
    rng = np.random.RandomState(seed)
    d = rng.randn(I, O) * (rng.rand(I, O) < 0.4)
    d[0, 0] = 1.5
    return jnp.asarray(d, jnp.float32)


def test_parameters_live_in_one_param_state():
    csr = u.sparse.CSR.fromdense(dense_pattern())
    layer = bnn.SparseLinear(csr, b_init=braintools.init.Constant(0.5))
    assert isinstance(layer.weight, brainstate.ParamState)
    assert set(layer.weight.value) == {"weight", "bias"}
    np.testing.assert_array_equal(layer.weight.value["weight"], csr.data)
    np.testing.assert_array_equal(layer.weight.value["bias"], 0.5 * jnp.ones(O))
    assert len(layer.states(brainstate.ParamState)) == 1
    assert set(bnn.SparseLinear(csr).weight.value) == {"weight"}  # b_init=None: no bias
    assert layer.in_size == (I,) and layer.out_size == (O,)


@pytest.mark.parametrize("make", [u.sparse.CSR.fromdense, u.sparse.COO.fromdense, u.sparse.CSC.fromdense,
                                  brainevent.CSR.fromdense])
@pytest.mark.parametrize("shape", [(I,), (5, I), (2, 3, I)])
def test_forward_matches_dense_product(make, shape):
    dense = dense_pattern()
    layer = bnn.SparseLinear(make(dense), b_init=jnp.arange(O, dtype=jnp.float32))
    x = brainstate.random.randn(*shape)
    np.testing.assert_allclose(layer(x), x @ dense + jnp.arange(O), **TOL)


def test_param_type_and_units():
    csr = u.sparse.CSR.fromdense(dense_pattern())
    layer = bnn.SparseLinear(u.sparse.CSR((csr.data * u.mA, csr.indices, csr.indptr), shape=csr.shape),
                             b_init=braintools.init.ZeroInit(), param_type=brainstate.FakeState)
    assert type(layer.weight) is brainstate.FakeState
    y = layer(jnp.ones((2, I)))
    assert isinstance(y, u.Quantity) and y.unit.has_same_dim(u.mA)
    np.testing.assert_allclose(y.to_decimal(u.mA), jnp.ones((2, I)) @ dense_pattern(), **TOL)


def test_vmap_new_states_vmap_module_and_jit():
    dense = dense_pattern(1)
    layer = bnn.SparseLinear(u.sparse.CSR.fromdense(dense), b_init=jnp.ones(O))
    x = brainstate.random.randn(5, I)
    expected = x @ dense + 1.0
    np.testing.assert_allclose(brainstate.nn.Vmap(layer)(x), expected, **TOL)
    np.testing.assert_allclose(brainstate.transform.jit(lambda v: layer(v))(x), expected, **TOL)

    model = Leaky(u.sparse.CSR.fromdense(dense))

    @brainstate.transform.vmap_new_states(state_tag="lanes", axis_size=4)
    def init_lanes():
        brainstate.nn.init_all_states(model)

    init_lanes()
    lanes = brainstate.nn.Vmap(model, vmap_states="lanes")
    xs = brainstate.random.randn(3, 4, I)
    got = jnp.stack([lanes(x) for x in xs])
    brainstate.nn.init_all_states(model, 4)
    np.testing.assert_allclose(got, jnp.stack([model(x) for x in xs]), **TOL)


def test_bad_arguments_name_the_layer_and_argument():
    csr = u.sparse.CSR.fromdense(dense_pattern())
    with pytest.raises(ValueError, match=rf"`SparseLinear`.*`spar_mat`.*`in_size` must be {I}"):
        bnn.SparseLinear(csr, in_size=I + 1)
    with pytest.raises(TypeError, match="`SparseLinear`.*`spar_mat`"):
        bnn.SparseLinear(np.asarray(dense_pattern()))
    with pytest.raises(ValueError, match=r"`SparseLinear`.*`b_init`.*\(4,\)"):
        bnn.SparseLinear(csr, b_init=jnp.ones(O + 1))
    layer = bnn.SparseLinear(csr, in_size=(3, I))
    assert layer.out_size == (3, O)
    with pytest.raises(ValueError, match=rf"`SparseLinear`.*{I} features.*\(2, {I + 1}\)"):
        layer(jnp.ones((2, I + 1)))


class Leaky(brainstate.nn.Module):
    """``h = 0.9 h + tanh(SparseLinear(x))``; linear readout."""

    def __init__(self, mat):
        super().__init__()
        self.inp = bnn.SparseLinear(mat, b_init=braintools.init.Constant(0.1))
        self.out = bnn.Linear(O, 2)

    def init_state(self, batch_size=None, **kwargs):
        self.h = brainstate.HiddenState(jnp.zeros((batch_size, O) if batch_size else (O,)))

    def update(self, x):
        self.h.value = 0.9 * self.h.value + jnp.tanh(self.inp(x))
        return self.out(self.h.value)


@pytest.mark.parametrize("batch", [None, 3])
def test_d_rtrl_equals_bptt_with_nnz_sized_traces(batch):
    brainstate.random.seed(0)
    mat = u.sparse.COO.fromdense(dense_pattern(2))
    model = Leaky(mat)
    xs = brainstate.random.randn(10, *((batch, I) if batch else (I,)))
    learner = braintrace.compile(model, "d_rtrl", xs[0], batch_size=batch)
    brainstate.nn.init_all_states(model, *([batch] if batch else []))
    expected = bptt_grads(model, xs)
    actual = online_grads(learner, xs)
    assert_grads_close(expected, actual, rtol=1e-4, atol=1e-6)
    (trace,) = learner.get_etrace_of(model.inp.weight).values()
    assert trace["weight"].shape == ((batch,) if batch else ()) + (mat.nse, 1)


def test_d_rtrl_in_vmap_lane_mode_equals_bptt():
    brainstate.random.seed(0)
    mat = u.sparse.CSR.fromdense(dense_pattern(2))
    model = Leaky(mat)
    xs = brainstate.random.randn(8, 3, I)
    learner = braintrace.compile(model, "d_rtrl", xs[0], batch_size=3, vmap=True)
    (trace,) = learner.get_etrace_of(model.inp.weight).values()
    assert trace["weight"].shape == (3, mat.nse, 1)  # lanes x nnz x S
    actual = online_grads(learner, xs)
    brainstate.nn.init_all_states(model, 3)
    assert_grads_close(bptt_grads(model, xs), actual, rtol=1e-4, atol=1e-6)
