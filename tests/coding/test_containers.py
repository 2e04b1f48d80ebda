"""SoftCode and CodingTrace: validation, pytree behaviour under jit/scan, value-free repr."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from braintrace.coding import CodingTrace, SoftCode, soft_assign


def full_code(leading=(2, 3), k=4):
    probs = jnp.full(leading + (k,), 1.0 / k)
    zeros = jnp.zeros(leading)
    return SoftCode(probs, best_length=zeros, entropy=zeros, best_indices=jnp.zeros(leading, jnp.int32),
                    combined_surprise=zeros)


def make_trace(leading=(5,), meta=None):
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=leading + (3,)), jnp.float32)
    code, inter = soft_assign(x, jnp.eye(3))
    return CodingTrace(x, meta if meta is not None else {"method": "identity"}, soft_code=code, **inter)


# ---------------------------------------------------------------- SoftCode validation
def test_soft_code_properties():
    code = full_code((2, 3), 4)
    assert code.leading_shape == (2, 3)
    assert code.code_dim == 4
    assert SoftCode(jnp.ones(7)).leading_shape == ()


def test_soft_code_needs_a_code_axis():
    with pytest.raises(ValueError, match="at least one axis"):
        SoftCode(jnp.asarray(1.0))
    with pytest.raises(ValueError, match="at least one code"):
        SoftCode(jnp.ones((3, 0)))


@pytest.mark.parametrize("field", ["best_length", "entropy", "best_indices", "combined_surprise"])
def test_soft_code_optional_shapes(field):
    bad = jnp.zeros((3, 2), jnp.int32)
    with pytest.raises(ValueError, match=field):
        SoftCode(jnp.ones((2, 3, 4)), **{field: bad})
    with pytest.raises(ValueError, match=field):
        SoftCode(jnp.ones((2, 3, 4)), **{field: jnp.zeros((2, 3, 1), jnp.int32)})


def test_soft_code_scalar_fields_for_empty_leading_shape():
    code = SoftCode(jnp.ones(4) / 4, entropy=jnp.asarray(0.5), best_indices=jnp.asarray(2))
    assert code.entropy.shape == ()
    with pytest.raises(ValueError, match="entropy"):
        SoftCode(jnp.ones(4) / 4, entropy=jnp.zeros(1))


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bool_])
def test_soft_code_indices_must_be_integers(dtype):
    with pytest.raises(TypeError, match="integer"):
        SoftCode(jnp.ones((5, 4)), best_indices=jnp.zeros(5, dtype))
    SoftCode(jnp.ones((5, 4)), best_indices=jnp.zeros(5, jnp.uint8))


def test_soft_code_is_frozen():
    code = full_code()
    with pytest.raises(AttributeError):
        code.probs = jnp.ones(3)


def test_soft_code_validation_on_tracers():
    def build(p, idx):
        return SoftCode(p, best_indices=idx, entropy=jnp.sum(p, -1))

    out = jax.jit(build)(jnp.ones((3, 2)), jnp.zeros(3, jnp.int32))
    assert out.entropy.shape == (3,)
    with pytest.raises(ValueError, match="entropy"):
        jax.jit(lambda p: SoftCode(p, entropy=p))(jnp.ones((3, 2)))
    with pytest.raises(TypeError, match="integer"):
        jax.jit(lambda p: SoftCode(p, best_indices=p[..., 0]))(jnp.ones((3, 2)))


# ---------------------------------------------------------------- pytrees
def test_soft_code_round_trip_through_jit_and_scan():
    code = full_code((2, 3), 4)
    out = jax.jit(lambda c: jax.tree.map(lambda a: a + 1, c))(code)
    assert isinstance(out, SoftCode)
    np.testing.assert_array_equal(out.probs, code.probs + 1)
    assert out.best_indices.dtype == jnp.int32

    partial = SoftCode(jnp.ones((3, 2)) / 2)
    assert len(jax.tree.leaves(partial)) == 1
    assert jax.jit(lambda c: c)(partial).entropy is None

    def step(carry, x):
        new, _ = soft_assign(x, jnp.eye(2))
        return new, new

    xs = jnp.arange(24.0).reshape(4, 3, 2)
    init, _ = soft_assign(xs[0], jnp.eye(2))
    last, stacked = jax.lax.scan(step, init, xs)
    assert isinstance(last, SoftCode) and isinstance(stacked, SoftCode)
    assert stacked.probs.shape == (4, 3, 2) and stacked.best_indices.shape == (4, 3)
    np.testing.assert_array_equal(last.probs, stacked.probs[-1])


def test_coding_trace_round_trip_through_jit_scan_and_vmap():
    trace = make_trace(meta={"method": "spatial_mean", "axes": [1, 2], "nested": {"a": 1}})
    out = jax.jit(lambda t: t)(trace)
    assert isinstance(out, CodingTrace) and isinstance(out.soft_code, SoftCode)
    assert out.reduction_meta == {"method": "spatial_mean", "axes": (1, 2), "nested": {"a": 1}}
    for a, b in zip(jax.tree.leaves(trace), jax.tree.leaves(out), strict=True):
        np.testing.assert_array_equal(a, b)

    def step(carry, x):
        code, inter = soft_assign(x, jnp.eye(3))
        new = CodingTrace(x, {"method": "identity"}, soft_code=code, **inter)
        return new, new.commitment_distances

    xs = jnp.ones((6, 5, 3))
    last, distances = jax.lax.scan(step, make_trace(), xs)
    assert isinstance(last, CodingTrace) and distances.shape == (6, 5)

    def code_one(x):
        code, inter = soft_assign(x, jnp.eye(3))
        return CodingTrace(x, {"method": "identity"}, soft_code=code, **inter)

    batched = jax.vmap(code_one)(xs)
    assert batched.soft_code.probs.shape == (6, 5, 3) and batched.chosen_center_indices.shape == (6, 5)


def test_coding_trace_meta_is_static_and_hashable():
    a = make_trace(meta={"method": "identity", "axes": [1]})
    b = make_trace(meta={"method": "identity", "axes": [1]})
    c = make_trace(meta={"method": "other"})
    assert jax.tree.structure(a) == jax.tree.structure(b)
    assert jax.tree.structure(a) != jax.tree.structure(c)
    hash(jax.tree.structure(a))
    calls = []

    @jax.jit
    def f(t):
        calls.append(1)
        return t.commitment_distances

    f(a), f(b), f(c)
    assert len(calls) == 2  # the metadata is part of the cache key


def test_coding_trace_validation():
    trace = make_trace()
    fields = dict(reduced=trace.reduced, reduction_meta={}, nearest_center_distances=trace.nearest_center_distances,
                  chosen_center_indices=trace.chosen_center_indices,
                  commitment_distances=trace.commitment_distances, soft_code=trace.soft_code)
    with pytest.raises(TypeError, match="soft_code"):
        CodingTrace(**{**fields, "soft_code": trace.soft_code.probs})
    with pytest.raises(TypeError, match="reduction_meta"):
        CodingTrace(**{**fields, "reduction_meta": "identity"})
    with pytest.raises(ValueError, match="commitment_distances"):
        CodingTrace(**{**fields, "commitment_distances": jnp.zeros(4)})
    with pytest.raises(ValueError, match="reduced"):
        CodingTrace(**{**fields, "reduced": jnp.zeros((4, 3))})


# ---------------------------------------------------------------- repr
def test_reprs_show_shapes_not_values():
    code = SoftCode(jnp.full((2, 3), 0.123456), best_indices=jnp.array([7, 8]))
    text = repr(code)
    assert "Array(shape=(2, 3), dtype=float32)" in text
    assert "Array(shape=(2,), dtype=int32)" in text
    assert "entropy=None" in text
    assert "0.123" not in text and "7" not in text.replace("(2,)", "")

    trace = make_trace((5,))
    text = repr(trace)
    assert text.startswith("CodingTrace(reduced=Array(shape=(5, 3), dtype=float32)")
    assert "reduction_meta={'method': 'identity'}" in text
    assert "soft_code=SoftCode(probs=Array(shape=(5, 3), dtype=float32)" in text
    for value in np.ravel(np.asarray(trace.reduced))[:3]:
        assert f"{value:.4f}"[:5] not in text

    seen = []
    jax.jit(lambda c: seen.append(repr(c)) or c.probs)(code)
    assert "Array(shape=(2, 3), dtype=float32)" in seen[0]
