"""Reducers: identity, spatial mean, random projection, chaining, fail-open, lookup."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from braintrace.coding import (
    RandomProjection,
    chain_reducers,
    coding_statistics,
    fail_open_reducer,
    identity_reducer,
    resolve_reducer,
    spatial_mean_reducer,
)


def test_identity():
    x = jnp.arange(6.0).reshape(2, 3)
    y, meta = identity_reducer(x)
    assert y is x and meta == {"method": "identity"}


@pytest.mark.parametrize("shape, axes", [((4, 5, 6, 3), (1, 2)), ((4, 7, 3), (1,)), ((4, 2, 2, 2, 3), (1, 2, 3)),
                                         ((4, 3), ())])
def test_spatial_mean(shape, axes):
    x = jnp.asarray(np.random.default_rng(0).normal(size=shape), jnp.float32)
    y, meta = spatial_mean_reducer(x)
    np.testing.assert_allclose(y, np.asarray(x).mean(axis=axes), rtol=1e-6)
    assert y.shape == (4, 3) and meta == {"method": "spatial_mean", "axes": axes}


def test_random_projection_is_fixed_and_norm_preserving_on_average():
    project = RandomProjection(32, seed=5)
    x = jnp.asarray(np.random.default_rng(1).normal(size=(200, 256)), jnp.float32)
    y, meta = project(x)
    assert y.shape == (200, 32)
    assert meta == {"method": "random_projection", "in_dim": 256, "out_dim": 32}
    np.testing.assert_array_equal(y, RandomProjection(32, seed=5)(x)[0])
    np.testing.assert_array_equal(y, jax.jit(lambda a: project(a)[0])(x))
    np.testing.assert_allclose(project.matrix(256), RandomProjection(32, seed=5).matrix(256))
    ratio = np.mean(np.sum(np.asarray(y) ** 2, -1)) / np.mean(np.sum(np.asarray(x) ** 2, -1))
    assert 0.8 < ratio < 1.2


def test_random_projection_pass_through_and_errors():
    x = jnp.ones((3, 4))
    y, meta = RandomProjection(4)(x)
    assert y is x and meta == {"method": "identity"}
    with pytest.raises(ValueError, match="coding_dim"):
        RandomProjection(8)(x)
    with pytest.raises(ValueError, match="out_dim"):
        RandomProjection(0)


def test_chain():
    reduce = chain_reducers(spatial_mean_reducer, RandomProjection(2, seed=0))
    y, meta = reduce(jnp.ones((5, 4, 4, 6)))
    assert y.shape == (5, 2)
    assert meta == {"method": "spatial_mean+random_projection", "axes": (1, 2), "in_dim": 6, "out_dim": 2}
    y, meta = chain_reducers(identity_reducer, RandomProjection(6))(jnp.ones((5, 6)))
    assert meta == {"method": "identity"}
    assert chain_reducers() is identity_reducer


def test_fail_open():
    def broken(x):
        raise ValueError("bad input")

    x = jnp.ones(3)
    y, meta = fail_open_reducer(broken)(x)
    assert y is x
    assert meta == {"method": "bypass", "reason": "reduction_error", "error": "ValueError: bad input"}
    y, meta = fail_open_reducer(lambda a: a * 2)(x)  # not a (reduced, meta) pair
    assert y is x and meta["method"] == "bypass" and meta["error"].startswith("TypeError")
    y, meta = fail_open_reducer(identity_reducer)(x)
    assert meta == {"method": "identity"}


def test_resolve():
    assert resolve_reducer(None) is identity_reducer
    assert resolve_reducer("identity") is identity_reducer
    assert resolve_reducer("spatial_mean") is spatial_mean_reducer
    custom = lambda x: (x, {"method": "custom"})  # noqa: E731
    assert resolve_reducer(custom) is custom
    with pytest.raises(ValueError, match="spatial_mean"):
        resolve_reducer("max_pool")
    with pytest.raises(TypeError, match="callable"):
        resolve_reducer(3)


def test_coding_statistics_is_pure_and_stops_gradients():
    centers = jnp.asarray(np.random.default_rng(2).normal(size=(4, 3)), jnp.float32)
    x = jnp.ones((2, 5, 5, 3))
    trace = coding_statistics(x, centers, reducer="spatial_mean", temperature=0.5)
    assert trace.reduced.shape == (2, 3) and trace.reduction_meta["method"] == "spatial_mean"
    grad = jax.grad(lambda a: jnp.sum(coding_statistics(a, centers).soft_code.entropy))(jnp.ones((2, 3)))
    np.testing.assert_array_equal(grad, 0.0)
    jitted = jax.jit(lambda a: coding_statistics(a, centers, reducer="spatial_mean", temperature=0.5))(x)
    for a, b in zip(jax.tree.leaves(trace), jax.tree.leaves(jitted), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
