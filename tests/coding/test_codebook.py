"""Codebook: never a parameter, initialisation, and the online EMA update."""

import brainstate
import jax.numpy as jnp
import numpy as np
import pytest

import braintrace
from braintrace.coding import Codebook, CodebookState, soft_assign


def test_codebook_is_never_a_param_state():
    book = Codebook(8, 4, update="ema")
    assert book.states(brainstate.ParamState) == {}
    states = book.states()
    assert set(states) == {("centers",), ("cluster_sizes",)}
    assert all(isinstance(st, CodebookState) and isinstance(st, brainstate.LongTermState) for st in states.values())
    assert not any(isinstance(st, brainstate.ParamState) for st in states.values())


def test_codebook_is_outside_gradients():
    book = Codebook(4, 3)
    w = brainstate.ParamState(jnp.ones(3))

    def loss(x):
        code, _ = soft_assign(x * w.value, book.centers.value)
        return jnp.sum(code.entropy)

    grads = brainstate.transform.grad(loss, grad_states={"w": w})(jnp.ones((5, 3)))
    assert set(grads) == {"w"}
    assert brainstate.graph.states(book, brainstate.ParamState) == {}


@pytest.mark.parametrize("init, bound", [("uniform", 1.0), ("normal", None)])
def test_initialisation_scale(init, bound):
    book = Codebook(512, 16, init=init, seed=3)
    centers = np.asarray(book.centers.value)
    assert centers.shape == (512, 16) and centers.dtype == np.float32
    scaled = centers * np.sqrt(16)
    if bound is not None:
        assert np.abs(scaled).max() <= bound
        np.testing.assert_allclose(scaled.var(), 1.0 / 3.0, rtol=0.1)
    else:
        np.testing.assert_allclose(scaled.std(), 1.0, rtol=0.1)
    np.testing.assert_array_equal(centers, Codebook(512, 16, init=init, seed=3).centers.value)
    assert not np.array_equal(centers, Codebook(512, 16, init=init, seed=4).centers.value)
    assert book.K == 512 and book.code_dim == 16


@pytest.mark.parametrize(
    "kwargs, match",
    [(dict(K=0, code_dim=2), "K"), (dict(K=2.5, code_dim=2), "K"), (dict(K=2, code_dim=0), "code_dim"),
     (dict(K=2, code_dim=2, init="zeros"), "init"), (dict(K=2, code_dim=2, update="sgd"), "update"),
     (dict(K=2, code_dim=2, decay=1.0), "decay"), (dict(K=2, code_dim=2, decay=0.0), "decay")],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Codebook(**kwargs)


def test_update_none_leaves_centers():
    book = Codebook(4, 2)
    before = book.centers.value
    after = book.update(jnp.full((10, 2), 5.0))
    np.testing.assert_array_equal(before, after)
    np.testing.assert_array_equal(before, book.centers.value)


def test_ema_step_formula():
    book = Codebook(3, 2, update="ema", decay=0.9)
    centers = jnp.array([[0.0, 0.0], [1.0, 1.0], [5.0, 5.0]])
    book.centers.value = centers
    x = jnp.array([[0.2, 0.0], [0.0, 0.4], [0.9, 1.3]])
    new = book.update(x, jnp.array([0, 0, 1]))
    sizes = 0.9 * 1.0 + 0.1 * np.array([2.0, 1.0, 0.0])
    expected = np.array([
        (0.9 * 1.0 * np.array([0.0, 0.0]) + 0.1 * np.array([0.2, 0.4])) / sizes[0],
        (0.9 * 1.0 * np.array([1.0, 1.0]) + 0.1 * np.array([0.9, 1.3])) / sizes[1],
        [5.0, 5.0],
    ])
    np.testing.assert_allclose(new, expected, rtol=1e-6)
    np.testing.assert_allclose(book.cluster_sizes.value, sizes, rtol=1e-6)
    np.testing.assert_array_equal(book.centers.value, new)
    # Without indices, the nearest center is chosen.
    book.centers.value = centers
    book.cluster_sizes.value = jnp.ones(3)
    np.testing.assert_allclose(book.update(x), expected, rtol=1e-6)


def test_ema_moves_centers_toward_data_and_utilization_rises():
    """Two clusters start on one code; the EMA pulls it away and frees the other cluster."""
    book = Codebook(4, 2, update="ema", decay=0.9)
    book.centers.value = jnp.array([[0.5, 0.5], [-0.5, 0.5], [0.5, -0.5], [-0.5, -0.5]])
    rng = np.random.default_rng(0)
    means = np.array([[0.3, 0.2], [5.0, 5.0], [-5.0, -5.0]])
    data = (means[:, None, :] + 0.05 * rng.normal(size=(3, 100, 2))).reshape(-1, 2).astype(np.float32)
    data = jnp.asarray(data)

    @brainstate.transform.jit
    def step(x):
        _, inter = soft_assign(x, book.centers.value)
        book.update(x, inter["chosen_center_indices"])
        return inter["chosen_center_indices"], inter["commitment_distances"]

    utilization, commitment = [], []
    for _ in range(30):
        chosen, distance = step(data)
        utilization.append(len(np.unique(np.asarray(chosen))) / 4)
        commitment.append(float(jnp.mean(distance)))
    assert utilization[0] == 0.5
    assert utilization[-1] == 0.75 > utilization[0]
    assert commitment[-1] < 0.05 * commitment[0]
    nearest = np.min(np.sum((np.asarray(book.centers.value)[None] - means[:, None]) ** 2, -1), axis=1)
    assert np.all(nearest < 0.05)
    assert book.states(brainstate.ParamState) == {}


def test_ema_update_has_no_gradient_path():
    book = Codebook(3, 2, update="ema")
    w = brainstate.ParamState(jnp.ones(2))

    def loss(x):
        y = x * w.value
        book.update(y)
        return jnp.sum(y)

    grads = brainstate.transform.grad(loss, grad_states={"w": w})(jnp.ones((4, 2)))
    np.testing.assert_array_equal(grads["w"], jnp.full(2, 4.0))


def test_deferred_code_dim_is_built_on_first_update_inside_jit():
    eager = Codebook(5, 3, update="ema", seed=2)
    lazy = Codebook(5, None, update="ema", seed=2)
    assert not lazy.is_built and lazy.centers.value.shape == (5, 0)
    x = jnp.asarray(np.random.default_rng(0).normal(size=(7, 3)), jnp.float32)
    step = brainstate.transform.jit(lambda x: lazy.update(x))
    np.testing.assert_array_equal(step(x), eager.update(x))
    assert lazy.code_dim == 3 and lazy.centers.value.shape == (5, 3)
    np.testing.assert_array_equal(lazy.centers.value, eager.centers.value)
    np.testing.assert_array_equal(step(x), eager.update(x))  # the state carries over between calls
    with pytest.raises(ValueError, match="codes 3 features; got points with 4"):
        lazy.build(4)


def test_ema_states_keep_their_shape():
    book = Codebook(4, 2, update="ema")
    with pytest.raises(ValueError, match=r"shape \(4, 2\); got a value of shape \(4, 3\)"):
        book.centers.value = jnp.zeros((4, 3))
    with pytest.raises(braintrace.NotSupportedError, match="per lane"):
        book.cluster_sizes.value = jnp.ones((8, 4))
    fixed = Codebook(4, 2)  # a fixed codebook may be copied (e.g. per lane)
    fixed.centers.value = jnp.zeros((3, 4, 2))
    unbuilt = Codebook(4, None)
    with pytest.raises(braintrace.NotSupportedError, match="not known yet"):
        unbuilt.centers.value = jnp.zeros((3, 4, 0))
