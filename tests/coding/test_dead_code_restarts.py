"""Dead-code restarts of the EMA codebook: the rule, and a training run with and without it."""

import brainstate
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import braintrace
from braintrace.coding import Codebook, CodingLayer, soft_assign


# ---------------------------------------------------------------- the rule
def test_off_by_default():
    book = Codebook(4, 2, update="ema")
    assert book.restart_after is None
    assert set(book.states()) == {("centers",), ("cluster_sizes",)}


def test_restart_rule_step_by_step():
    """Idle counters, the re-seeding point (farthest from its center), the reset cluster size."""
    book = Codebook(4, 1, update="ema", decay=0.5, restart_after=2)
    book.centers.value = jnp.array([[0.0], [1.0], [10.0], [20.0]])
    first = book.update(jnp.array([[0.5], [1.0], [3.0]]), jnp.array([0, 1, 1]))  # codes 2, 3 idle
    np.testing.assert_array_equal(book.unused_steps.value, [0, 0, 1, 1])
    np.testing.assert_array_equal(first[2:, 0], [10.0, 20.0])  # not yet due
    # c_0 = (0.5 * 0 + 0.5 * 0.5) / 1 = 0.25, c_1 = (0.5 * 1 + 0.5 * 4) / 1.5 = 5/3.
    np.testing.assert_allclose(first[:2, 0], [0.25, 5.0 / 3.0], rtol=1e-6)
    sizes = np.asarray(book.cluster_sizes.value)
    np.testing.assert_allclose(sizes, [1.0, 1.5, 0.5, 0.5])
    # Second update: codes 2 and 3 are due; code 2 (the lower index) takes the point farthest
    # from its chosen center: 7.0 at (7 - 5/3)² = 28.4 (vs 4.25² = 18.1 and 0.05²).
    second = np.asarray(book.update(jnp.array([[0.2], [7.0], [-4.0]]), jnp.array([0, 1, 0])))
    assert second[2, 0] == np.float32(7.0)
    np.testing.assert_array_equal(second[3, 0], 20.0)
    np.testing.assert_array_equal(book.unused_steps.value, [0, 0, 0, 2])
    np.testing.assert_allclose(book.cluster_sizes.value, [0.5 * 1.0 + 0.5 * 2, 0.5 * 1.5 + 0.5, 1.0, 0.25])
    # Third update: code 3 (idle 3 updates) goes next, at the worst-coded point -4.0.
    third = np.asarray(book.update(jnp.array([[0.0], [-4.0]]), jnp.array([0, 0])))
    assert third[3, 0] == np.float32(-4.0)
    np.testing.assert_array_equal(book.unused_steps.value, [0, 1, 1, 0])


def test_longest_idle_code_goes_first():
    book = Codebook(4, 1, update="ema", decay=0.5, restart_after=1)
    book.centers.value = jnp.array([[0.0], [5.0], [6.0], [7.0]])
    book.unused_steps.value = jnp.array([0, 1, 4, 2], jnp.int32)
    new = np.asarray(book.update(jnp.array([[0.1], [0.3]]), jnp.array([0, 0])))
    # One restart per update: code 2 (idle longest) at 0.3; codes 1 and 3 wait, counting on.
    np.testing.assert_array_equal(new[1:, 0], np.array([5.0, 0.3, 7.0], np.float32))
    np.testing.assert_array_equal(book.unused_steps.value, [0, 2, 0, 3])


def test_restart_needs_ema_and_a_positive_count():
    with pytest.raises(ValueError, match="update='ema'"):
        Codebook(4, 2, restart_after=3)
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="restart_after"):
            Codebook(4, 2, update="ema", restart_after=bad)


def test_restart_inside_jit_and_outside_gradients():
    book = Codebook(3, 2, update="ema", restart_after=1)
    w = brainstate.ParamState(jnp.ones(2))

    @brainstate.transform.jit
    def grads(x):
        def loss(x):
            y = x * w.value
            _, inter = soft_assign(y, book.centers.value)
            book.update(y, inter["chosen_center_indices"])
            return jnp.sum(y ** 2)

        return brainstate.transform.grad(loss, grad_states={"w": w})(x)

    x = jnp.full((4, 2), 3.0)
    g = grads(x)
    np.testing.assert_array_equal(g["w"], jnp.full(2, 4 * 2 * 9.0))
    # One of the two idle codes was re-seeded at the (identical) points.
    assert np.sum(np.all(np.asarray(book.centers.value) == 3.0, axis=-1)) == 1
    np.testing.assert_array_equal(np.sort(np.asarray(book.unused_steps.value)), [0, 0, 1])
    assert book.states(brainstate.ParamState) == {}


# ---------------------------------------------------------------- a training run
class RateCell(brainstate.nn.Module):
    """Leaky firing-rate cell ``h = h/2 + sigmoid([x, h] W)/2``: activity lives in (0, 1)^N."""

    def __init__(self, n_in, n_hidden, seed=0):
        super().__init__()
        self.in_size = (n_in,)
        self.out_size = (n_hidden,)
        key = jax.random.PRNGKey(seed)
        n_rows = n_in + n_hidden
        self.weight = brainstate.ParamState(jax.random.normal(key, (n_rows, n_hidden)) / np.sqrt(n_rows))

    def init_state(self, batch_size=None, **kwargs):
        shape = self.out_size if batch_size is None else (batch_size, *self.out_size)
        self.h = brainstate.HiddenState(jnp.zeros(shape))

    def update(self, x):
        drive = braintrace.matmul(jnp.concatenate([x, self.h.value], axis=-1), self.weight.value)
        self.h.value = 0.5 * self.h.value + 0.5 * jax.nn.sigmoid(drive)
        return self.h.value


class Net(brainstate.nn.Module):
    def __init__(self, cell, n_hidden, n_out):
        super().__init__()
        self.cell = cell
        self.readout = brainstate.ParamState(jnp.zeros((n_hidden, n_out)))

    def update(self, x):
        return braintrace.matmul(self.cell(x), self.readout.value)


BATCH, LENGTH, N_IN, HIDDEN, K = 64, 8, 4, 8, 16


def train(restart_after, coded=True, iterations=20):
    """Online (D-RTRL) training; per iteration: loss, utilization of the last step, gradients."""
    cell = RateCell(N_IN, HIDDEN, seed=0)
    coder = CodingLayer(cell, K=K, update="ema", decay=0.9, restart_after=restart_after) if coded else cell
    net = Net(coder, HIDDEN, 2)
    learner = braintrace.compile(net, "d_rtrl", jnp.zeros((BATCH, N_IN)), batch_size=BATCH)
    params = learner.param_states

    @brainstate.transform.jit
    def step(key):
        xs = jax.random.normal(key, (LENGTH, BATCH, N_IN))
        targets = jnp.sign(xs[..., :2])
        brainstate.nn.reset_all_states(learner, BATCH)

        def loss(x, target):
            return jnp.mean((learner(x) - target) ** 2)

        grads, losses = learner.etrace_grad(xs, targets, step_fn=loss, return_value=True)
        for path, st in params.items():
            st.value = st.value - 1.0 * grads[path]
        return jnp.mean(losses), grads

    history = []
    for key in jax.random.split(jax.random.PRNGKey(1), iterations):
        loss, grads = step(key)
        history.append((float(loss), coder.utilization() if coded else None,
                        {tuple(p for p in path if p != "layer"): g for path, g in grads.items()}))
    return history


def test_restarts_raise_utilization_and_leave_training_unchanged():
    bare = train(None, coded=False)
    plain = train(None)
    restarted = train(4)
    for runs in (plain, restarted):
        for (loss_a, _, grads_a), (loss_b, _, grads_b) in zip(bare, runs, strict=True):
            assert loss_a == loss_b
            assert grads_a.keys() == grads_b.keys()
            for path in grads_a:
                np.testing.assert_array_equal(grads_a[path], grads_b[path])
    losses = [row[0] for row in bare]
    assert losses[-1] < 0.8 * losses[0]  # the network does learn
    u_plain = np.array([row[1] for row in plain])
    u_restart = np.array([row[1] for row in restarted])
    # Rates live in (0, 1)^8, the initial centers in [-0.35, 0.35]^8: a single code is
    # nearest to all activity, and without restarts the others never move.
    assert np.all(u_plain == 1 / K)
    assert u_restart[-5:].mean() > 0.75
    print(f"utilization, mean of the last 5 of 20 iterations: {u_plain[-5:].mean():.3f} without restarts, "
          f"{u_restart[-5:].mean():.3f} with restart_after=4; loss {losses[0]:.3f} -> {losses[-1]:.3f}")
