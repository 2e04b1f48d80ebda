"""soft_assign against a NumPy re-implementation of its formulas; argument checks."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from braintrace.coding import SoftAssignment, SoftCode, soft_assign, squared_distances


def numpy_soft_assign(x, centers, temperature, eps, beta_length, beta_entropy, beta_distance):
    """The seed's formulas (nervecode: squared distances throughout), in float64 NumPy."""
    x = np.asarray(x, np.float64)
    centers = np.asarray(centers, np.float64)
    d = np.sum((x[..., None, :] - centers) ** 2, axis=-1)
    logits = -d / max(temperature, eps)
    logits = logits - logits.max(axis=-1, keepdims=True)
    p = np.exp(logits)
    p = p / p.sum(axis=-1, keepdims=True)
    best = np.argmin(d, axis=-1)
    d_best = np.take_along_axis(d, best[..., None], axis=-1)[..., 0]
    p_best = np.take_along_axis(p, best[..., None], axis=-1)[..., 0]
    length = -np.log(p_best + eps)
    entropy = -np.sum(p * np.log(p + eps), axis=-1)
    combined = beta_length * length + beta_entropy * entropy + beta_distance * np.log1p(d_best)
    return {
        "probs": p,
        "best_indices": best,
        "best_length": length,
        "entropy": entropy,
        "combined_surprise": combined,
        "nearest_center_distances": d_best,
        "chosen_center_indices": best,
        "commitment_distances": d_best,
    }


def flatten_result(code, inter):
    return {
        "probs": code.probs,
        "best_indices": code.best_indices,
        "best_length": code.best_length,
        "entropy": code.entropy,
        "combined_surprise": code.combined_surprise,
        **inter,
    }


SETTINGS = [
    dict(temperature=1.0, eps=1e-12, beta_length=1.0, beta_entropy=1.0, beta_distance=0.0),
    dict(temperature=0.25, eps=1e-12, beta_length=0.5, beta_entropy=2.0, beta_distance=1.0),
    dict(temperature=4.0, eps=1e-6, beta_length=0.0, beta_entropy=0.0, beta_distance=3.0),
    dict(temperature=1e-9, eps=1e-3, beta_length=1.0, beta_entropy=-1.0, beta_distance=0.5),
]


@pytest.mark.parametrize("leading", [(), (5,), (2, 3)])
@pytest.mark.parametrize("settings", SETTINGS)
@pytest.mark.parametrize("jit", [False, True])
def test_matches_numpy(leading, settings, jit):
    rng = np.random.default_rng(len(leading) * 7 + int(settings["temperature"] * 100))
    x = rng.normal(size=leading + (3,)).astype(np.float32)
    centers = rng.normal(size=(6, 3)).astype(np.float32)
    fn = lambda x, c: soft_assign(x, c, **settings)  # noqa: E731
    if jit:
        fn = jax.jit(fn)
    code, inter = fn(jnp.asarray(x), jnp.asarray(centers))
    expected = numpy_soft_assign(x, centers, **settings)
    actual = flatten_result(code, inter)
    assert set(actual) == set(expected)
    for key, value in expected.items():
        assert actual[key].shape == leading + ((6,) if key == "probs" else ())
        if key in ("best_indices", "chosen_center_indices"):
            assert jnp.issubdtype(actual[key].dtype, jnp.integer)
            np.testing.assert_array_equal(actual[key], value, err_msg=key)
        else:
            np.testing.assert_allclose(actual[key], value, rtol=2e-5, atol=2e-5, err_msg=key)
    assert isinstance(code, SoftCode)
    assert code.leading_shape == leading and code.code_dim == 6


def test_exact_distances_near_a_center():
    centers = jnp.array([[1000.0, -1000.0], [0.0, 0.0]])
    x = centers[0] + jnp.array([2.0 ** -10, 0.0])  # exactly representable offset
    d = squared_distances(x, centers)
    assert float(d[0]) == 2.0 ** -20
    assert float(jnp.min(d)) >= 0.0


def test_probabilities_sum_to_one_and_temperature_softens():
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(50, 4)), jnp.float32)
    centers = jnp.asarray(rng.normal(size=(8, 4)), jnp.float32)
    cold, _ = soft_assign(x, centers, temperature=0.05)
    hot, _ = soft_assign(x, centers, temperature=50.0)
    np.testing.assert_allclose(cold.probs.sum(-1), 1.0, rtol=1e-6)
    assert float(cold.entropy.mean()) < float(hot.entropy.mean())
    assert float(hot.entropy.max()) <= np.log(8) + 1e-5


def test_soft_assignment_object_equals_function():
    rng = np.random.default_rng(1)
    x = jnp.asarray(rng.normal(size=(4, 3)), jnp.float32)
    centers = jnp.asarray(rng.normal(size=(5, 3)), jnp.float32)
    assign = SoftAssignment(temperature=0.3, beta_distance=2.0)
    a, ia = assign(x, centers)
    b, ib = soft_assign(x, centers, temperature=0.3, beta_distance=2.0)
    for u, v in zip(jax.tree.leaves((a, ia)), jax.tree.leaves((b, ib)), strict=True):
        np.testing.assert_array_equal(u, v)


def test_traced_temperature_is_accepted():
    x, centers = jnp.ones((2, 3)), jnp.eye(3)
    code, _ = jax.jit(lambda t: soft_assign(x, centers, temperature=t))(0.5)
    np.testing.assert_allclose(code.probs, soft_assign(x, centers, temperature=0.5)[0].probs)


@pytest.mark.parametrize(
    "x_shape, centers_shape, match",
    [((4, 3), (5, 2), "last axis"), ((4, 3), (15,), r"\(K, D\)"), ((4, 3), (2, 5, 3), r"\(K, D\)"),
     ((), (5, 3), "at least one axis")],
)
def test_shape_errors(x_shape, centers_shape, match):
    with pytest.raises(ValueError, match=match):
        soft_assign(jnp.zeros(x_shape), jnp.zeros(centers_shape))


@pytest.mark.parametrize("name", ["temperature", "eps"])
@pytest.mark.parametrize("value", [0.0, -1.0, float("nan"), float("inf")])
def test_bad_temperature_or_eps(name, value):
    with pytest.raises(ValueError, match=name):
        soft_assign(jnp.zeros((2, 3)), jnp.zeros((4, 3)), **{name: value})
    with pytest.raises(ValueError, match=name):
        SoftAssignment(**{name: value})


def test_bad_beta():
    with pytest.raises(ValueError, match="beta_entropy"):
        SoftAssignment(beta_entropy=float("nan"))


@pytest.mark.parametrize("jit", [False, True])
def test_seed_distance_semantics_pinned(jit):
    """nervecode: the nearest-center distance is the squared distance, the commitment's value."""
    centers = jnp.array([[0.0, 0.0], [3.0, 4.0]])
    x = jnp.array([[0.0, 2.0], [3.0, 3.0], [6.0, 8.0]])
    fn = lambda x: soft_assign(x, centers, beta_length=0.0, beta_entropy=0.0, beta_distance=1.0)  # noqa: E731
    code, inter = (jax.jit(fn) if jit else fn)(x)
    np.testing.assert_array_equal(inter["nearest_center_distances"], [4.0, 1.0, 25.0])  # not 2, 1, 5
    np.testing.assert_array_equal(inter["nearest_center_distances"], inter["commitment_distances"])
    np.testing.assert_allclose(code.combined_surprise, np.log1p([4.0, 1.0, 25.0]), rtol=1e-6)
