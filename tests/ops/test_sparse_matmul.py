"""`sparse_matmul`: plain-JAX equivalence, trace rules against the VJP and the dense layout,
D-RTRL == BPTT on a leaky integrator, ES-D-RTRL alignment, O(nnz) traces, clear errors."""

import brainevent
import brainstate
import brainunit as u
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import braintrace
import braintrace.nn as bnn
from braintrace.algorithms.executor import apply_jacobian
from braintrace.ops import SparseStructure, etp_sparse_matmul_p
from tests._support.oracle import assert_grads_close, bptt_grads, cosine, flat, online_grads
from tests.ops.test_forward_grad import check_forward_grad_jit, check_vmap_over_weight, check_vmap_over_x
from tests.ops.test_trace_rules import bound_op, check_oracle

TOL = dict(rtol=1e-5, atol=1e-5)
I, O = 6, 5


def randn(seed, shape):
    return jnp.asarray(np.random.RandomState(seed).randn(*shape), dtype=jnp.float32)


def dense_pattern(seed=0, n_in=I, n_out=O, density=0.4):
    rng = np.random.RandomState(seed)
    d = rng.randn(n_in, n_out) * (rng.rand(n_in, n_out) < density)
    d[0, 0] = d[0, 0] or 1.5  # never empty
    return jnp.asarray(d, jnp.float32)


def structures(dense):
    return {
        "u.CSR": u.sparse.CSR.fromdense(dense),
        "u.CSC": u.sparse.CSC.fromdense(dense),
        "u.COO": u.sparse.COO.fromdense(dense),
        "brainevent.CSR": brainevent.CSR.fromdense(dense),
        "brainevent.CSC": brainevent.CSC.fromdense(dense),
    }


def weight_fn(w):
    return jnp.tanh(w) + 0.5 * w


def bias_fn(b):
    return jax.nn.softplus(b)


def case(mat, x_shape, with_bias, with_fns):
    wf, bf = (weight_fn, bias_fn) if with_fns else (None, None)
    f = wf or (lambda w: w)
    g = bf or (lambda b: b)
    args = [randn(1, x_shape), jnp.asarray(mat.data) * 0.7 + 0.1]
    # the dense matrix of the pattern: CSR/COO from `fromdense` store values in row-major order
    dense = np.asarray(mat.todense())
    rows, cols = np.nonzero(dense)
    np.testing.assert_array_equal(np.asarray(mat.data), dense[rows, cols])
    ref_dense = lambda w: jnp.zeros((I, O), w.dtype).at[rows, cols].set(f(w))  # noqa: E731
    if with_bias:
        args.append(randn(2, (O,)))

        def op(x, w, b):
            return braintrace.sparse_matmul(x, w, mat, b, weight_fn=wf, bias_fn=bf)

        def reference(x, w, b):
            return x @ ref_dense(w) + g(b)
    else:
        def op(x, w):
            return braintrace.sparse_matmul(x, w, mat, weight_fn=wf)

        def reference(x, w):
            return x @ ref_dense(w)
    return op, reference, args


# --------------------------------------------------------------------------------------
# forward / grad / vmap / jit against the dense matrix of the structure
# --------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", list(structures(dense_pattern())))
def test_forward_matches_dense_for_every_structure_type(kind):
    dense = dense_pattern()
    mat = structures(dense)[kind]
    x = randn(0, (3, I))
    np.testing.assert_allclose(braintrace.sparse_matmul(x, mat.data, mat), x @ dense, **TOL)
    np.testing.assert_allclose(braintrace.sparse_matmul(x[0], mat.data, mat), x[0] @ dense, **TOL)
    # the pattern, not the stored values, is what the op uses
    np.testing.assert_allclose(braintrace.sparse_matmul(x, 2.0 * mat.data, mat), x @ (2.0 * dense), **TOL)


@pytest.mark.parametrize("with_fns", [False, True])
@pytest.mark.parametrize("with_bias", [False, True])
@pytest.mark.parametrize("x_shape", [(I,), (4, I), (2, 3, I)])
def test_forward_grad_jit(x_shape, with_bias, with_fns):
    op, reference, args = case(u.sparse.CSR.fromdense(dense_pattern()), x_shape, with_bias, with_fns)
    check_forward_grad_jit(op, reference, args)


@pytest.mark.parametrize("x_shape", [(I,), (4, I)])
def test_vmap_over_x_keeps_primitive(x_shape):
    op, reference, args = case(u.sparse.COO.fromdense(dense_pattern()), x_shape, True, True)
    check_vmap_over_x(op, reference, args, etp_sparse_matmul_p)


def test_vmap_over_weight_falls_back_with_warning():
    op, reference, args = case(u.sparse.CSR.fromdense(dense_pattern()), (4, I), True, False)
    check_vmap_over_weight(op, reference, args)


def test_duplicate_entries_add_up_like_the_dense_matrix():
    coo = u.sparse.COO((jnp.array([1.0, 2.0, 3.0]), jnp.array([0, 0, 1]), jnp.array([1, 1, 0])), shape=(2, 2))
    x = jnp.array([1.0, 10.0])
    np.testing.assert_allclose(braintrace.sparse_matmul(x, coo.data, coo), jnp.array([30.0, 3.0]), **TOL)


def test_structure_is_hashable_by_content_and_shown_compactly():
    dense = dense_pattern()
    a, b = SparseStructure.of(u.sparse.CSR.fromdense(dense)), SparseStructure.of(u.sparse.COO.fromdense(dense))
    assert a == b and hash(a) == hash(b)
    assert a != SparseStructure.of(u.sparse.CSR.fromdense(dense.at[1, 1].set(9.0).at[0, 0].set(0.0)))
    jaxpr = jax.make_jaxpr(lambda x, w: braintrace.sparse_matmul(x, w, a))(jnp.ones(I), jnp.ones(a.nnz))
    assert f"SparseStructure(shape=({I}, {O}), nnz={a.nnz})" in str(jaxpr)


def test_units():
    mat = u.sparse.CSR.fromdense(dense_pattern())
    x = randn(0, (4, I))
    y = braintrace.sparse_matmul(x * u.mV, mat.data * u.siemens, mat, randn(2, (O,)) * u.uA)
    assert isinstance(y, u.Quantity)
    expected = (x @ dense_pattern()) * 1e3 + randn(2, (O,))
    np.testing.assert_allclose(np.asarray(y.to_decimal(u.uA)), np.asarray(expected), rtol=1e-5, atol=1e-3)
    assert not isinstance(braintrace.sparse_matmul(x, mat.data, mat), u.Quantity)


# --------------------------------------------------------------------------------------
# bad input
# --------------------------------------------------------------------------------------

def test_bad_inputs_raise_naming_the_argument():
    mat = u.sparse.CSR.fromdense(dense_pattern())
    x, w = jnp.ones((2, I)), mat.data
    with pytest.raises(TypeError, match="`sparse_mat`.*ndarray|`sparse_mat`.*Array"):
        braintrace.sparse_matmul(x, w, np.asarray(dense_pattern()))
    with pytest.raises(TypeError, match="`sparse_mat`"):
        braintrace.sparse_matmul(x, w, jnp.asarray(dense_pattern()))
    with pytest.raises(ValueError, match=rf"`weight`.*\({mat.nse},\).*\({mat.nse + 1},\)"):
        braintrace.sparse_matmul(x, jnp.ones(mat.nse + 1), mat)
    with pytest.raises(ValueError, match="`weight`"):
        braintrace.sparse_matmul(x, jnp.ones((mat.nse, 1)), mat)
    with pytest.raises(ValueError, match=rf"`x`.*{I}.*\(2, {I + 1}\)"):
        braintrace.sparse_matmul(jnp.ones((2, I + 1)), w, mat)
    with pytest.raises(ValueError, match="`x`"):
        braintrace.sparse_matmul(jnp.asarray(1.0), w, mat)
    with pytest.raises(ValueError, match=rf"`bias`.*\({O},\)"):
        braintrace.sparse_matmul(x, w, mat, jnp.ones(O + 1))


def test_traced_indices_are_rejected():
    @jax.jit
    def f(d):
        return braintrace.sparse_matmul(jnp.ones(I), jnp.ones(3), u.sparse.COO((jnp.ones(3), d[:3], d[:3]),
                                                                              shape=(I, O)))

    with pytest.raises(ValueError, match="traced"):
        f(jnp.arange(I))


# --------------------------------------------------------------------------------------
# trace rules
# --------------------------------------------------------------------------------------

def sparse_reference(mat):
    s = SparseStructure.of(mat)

    def reference(x, eff):
        y = x @ s.todense(eff["weight"])
        return y + eff["bias"] if "bias" in eff else y

    return reference


@pytest.mark.parametrize("with_bias", [False, True])
@pytest.mark.parametrize("x_shape,varshape", [((I,), None), ((4, I), None), ((2, 4, I), None), ((I,), (3, O))])
def test_trace_oracle(x_shape, varshape, with_bias):
    mat = u.sparse.CSR.fromdense(dense_pattern())
    args = [randn(3, x_shape), jnp.asarray(mat.data)] + ([randn(4, (O,))] if with_bias else [])
    rule, x, raw, params = check_oracle(lambda *a: braintrace.sparse_matmul(*a[:2], mat, *a[2:]), args,
                                        sparse_reference(mat), varshape=varshape)
    vs = tuple(varshape or x_shape[:-1] + (O,))
    trace = rule.trace_increment(x, jnp.ones(vs + (2,)), raw, params)
    assert trace["weight"].shape == vs[:-1] + (mat.nse, 2)  # O(nnz), not (..., O, I, S)


def to_dense_trace(structure, sparse_trace):
    """Scatter a ``(*lead, nnz, S)`` trace into the dense-op layout ``(*lead, O, I, S)``."""
    lead, s = sparse_trace.shape[:-2], sparse_trace.shape[-1]
    dense = jnp.zeros(lead + (structure.shape[1], structure.shape[0], s))
    return dense.at[..., structure.cols, structure.rows, :].add(sparse_trace)


@pytest.mark.parametrize("n_states", [1, 2])
@pytest.mark.parametrize("lead", [(), (3,)])
def test_trace_roll_equals_dense_layout_roll(lead, n_states):
    """Rolling the compact trace is the generic per-position roll of the dense trace, gathered."""
    mat = u.sparse.COO.fromdense(dense_pattern(5))
    rule, x, raw, params = bound_op(lambda x_, w_, b_: braintrace.sparse_matmul(x_, w_, mat, b_),
                                    randn(0, lead + (I,)), jnp.asarray(mat.data), randn(1, (O,)))
    structure = params["structure"]
    trace = {"weight": randn(5, lead + (structure.nnz, n_states)), "bias": randn(6, lead + (O, n_states))}
    jac = randn(7, lead + (O, n_states, n_states))
    rolled = jax.jit(lambda t, j: rule.param_trace_roll(t, j, **params))(trace, jac)
    dense_rolled = apply_jacobian(jac, to_dense_trace(structure, trace["weight"]), len(lead) + 1)
    np.testing.assert_allclose(rolled["weight"], dense_rolled[..., structure.cols, structure.rows, :], **TOL)
    np.testing.assert_allclose(rolled["bias"], apply_jacobian(jac, trace["bias"], len(lead) + 1), **TOL)


# --------------------------------------------------------------------------------------
# online learning on a leaky integrator h = a*h + tanh(sparse(x) + b) (exact for D-RTRL)
# --------------------------------------------------------------------------------------

class SparseLeaky(brainstate.nn.Module):
    """``h = a ⊙ h + tanh(x @ M + b)``; linear readout. Input enters only through the op."""

    def __init__(self, mat, decay=0.9, n_out=2):
        super().__init__()
        self.mat = mat
        self.decay = decay
        self.w = brainstate.ParamState({"weight": jnp.asarray(mat.data), "bias": 0.1 * jnp.ones(O)})
        self.out = bnn.Linear(O, n_out)

    def init_state(self, batch_size=None, **kwargs):
        self.h = brainstate.HiddenState(jnp.zeros((batch_size, O) if batch_size else (O,)))

    def update(self, x):
        p = self.w.value
        self.h.value = self.decay * self.h.value + jnp.tanh(
            braintrace.sparse_matmul(x, p["weight"], self.mat, p["bias"]))
        return self.out(self.h.value)


def run_both(model, xs, batch, algorithm, **options):
    brainstate.nn.init_all_states(model, *([batch] if batch else []))
    expected = bptt_grads(model, xs)
    learner = algorithm(model, **options)
    learner.compile_graph(xs[0])
    return expected, online_grads(learner, xs), learner


@pytest.mark.parametrize("batch", [None, 3])
def test_d_rtrl_equals_bptt_and_trace_is_nnz_sized(batch):
    brainstate.random.seed(0)
    mat = u.sparse.CSR.fromdense(dense_pattern(1))
    xs = brainstate.random.randn(12, *((batch, I) if batch else (I,)))
    model = SparseLeaky(mat)
    expected, actual, learner = run_both(model, xs, batch, braintrace.D_RTRL)
    assert set(actual) == {("w",), ("out", "weight")}
    assert np.linalg.norm(flat(expected)[("w",)]) > 1e-2  # a live gradient
    assert_grads_close(expected, actual, rtol=1e-4, atol=1e-6)
    (trace,) = learner.get_etrace_of(model.w).values()
    lead = (batch,) if batch else ()
    assert trace["weight"].shape == lead + (mat.nse, 1)  # B * nnz * S entries
    assert trace["bias"].shape == lead + (O, 1)


def test_d_rtrl_equals_bptt_with_two_coupled_states():
    """S = 2 per position: the roll applies each value's column Jacobian (a 2x2 block)."""

    class TwoState(SparseLeaky):
        def init_state(self, batch_size=None, **kwargs):
            shape = (batch_size, O) if batch_size else (O,)
            self.v = brainstate.HiddenState(jnp.zeros(shape))
            self.a = brainstate.HiddenState(jnp.zeros(shape))

        def update(self, x):
            p = self.w.value
            v = 0.9 * self.v.value + jnp.tanh(braintrace.sparse_matmul(x, p["weight"], self.mat, p["bias"])) \
                - 0.3 * self.a.value
            self.a.value = 0.8 * self.a.value + 0.2 * jnp.tanh(v)
            self.v.value = v
            return self.out(v)

    brainstate.random.seed(4)
    xs = brainstate.random.randn(10, 2, I)
    model = TwoState(u.sparse.CSC.fromdense(dense_pattern(2)))
    expected, actual, learner = run_both(model, xs, 2, braintrace.D_RTRL)
    (trace,) = learner.get_etrace_of(model.w).values()
    assert trace["weight"].shape[-1] == 2
    assert_grads_close(expected, actual, rtol=1e-4, atol=1e-6)


def test_es_d_rtrl_aligns_with_bptt_at_short_memory():
    """ES-D-RTRL is a biased estimate; with a fast leak (a = 0.3) its trace is nearly exact."""
    brainstate.random.seed(1)
    mat = u.sparse.CSR.fromdense(dense_pattern(3))
    xs = brainstate.random.randn(20, 4, I)
    expected, actual, _ = run_both(SparseLeaky(mat, decay=0.3), xs, 4, braintrace.ES_D_RTRL, decay_or_rank=0.3)
    e, a = flat(expected), flat(actual)
    assert cosine(e[("w",)], a[("w",)]) > 0.9
    # scale, not only direction
    assert 0.5 < np.linalg.norm(a[("w",)]) / np.linalg.norm(e[("w",)]) < 2.0
