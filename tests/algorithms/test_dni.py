"""DNI: an untrained synthesizer is multi-step D-RTRL exactly; a trained one brings windowed
gradients closer to BPTT on a delayed-reward task; the full window is BPTT; bad input raises;
it learns; compile() builds it."""

import brainstate
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import braintrace
import braintrace.nn as bnn
from braintrace.algorithms.dni import SyntheticGradient
from tests._support import models
from tests._support.oracle import assert_grads_close, bptt_grads, flat, restore_states, snapshot_states
from tests._support.tasks import train

B, N, T, K = 8, 6, 8, 2


class PlainRecurrent(brainstate.nn.Module):
    """``h = tanh(W x + h U)`` with ``U`` a plain (not ETP) weight: windows truncate its
    gradient, which is what a synthetic gradient repairs."""

    def __init__(self):
        super().__init__()
        self.W = bnn.Linear(1, N)
        self.U = brainstate.ParamState(brainstate.random.randn(N, N) * 0.3 / np.sqrt(N) + 0.6 * jnp.eye(N))
        self.out = bnn.Linear(N, 1)

    def init_state(self, batch_size=None, **kwargs):
        self.h = brainstate.HiddenState(jnp.zeros((batch_size, N)))

    def update(self, x):
        self.h.value = jnp.tanh(self.W(x) + self.h.value @ self.U.value)
        return self.out(self.h.value)


def _delayed_reward():
    """A cue at step 0 (its sign is the target), the loss at the last step only."""
    sign = jnp.where(jax.random.bernoulli(jax.random.PRNGKey(0), 0.5, (B,)), 1.0, -1.0)
    xs = jnp.zeros((T, B, 1)).at[0, :, 0].set(sign)
    return xs, jnp.broadcast_to(sign, (T, B)), jnp.zeros(T).at[-1].set(1.0)


def _window_loss(out, x, y, mask):
    return jnp.sum(mask[:, None] * (out[..., 0] - y) ** 2)


def _rel(grads, ref, path) -> float:
    a, b = flat(grads)[path], flat(ref)[path]
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def test_trained_synthesizer_is_closer_to_bptt_on_a_delayed_reward():
    brainstate.random.seed(0)
    model = PlainRecurrent()
    brainstate.nn.init_all_states(model, B)
    xs, ys, ms = _delayed_reward()
    snap = snapshot_states(model)
    params = dict(model.states(brainstate.ParamState))

    def total():
        outs = brainstate.transform.for_loop(model, xs)
        return jnp.sum(ms[:, None] * (outs[..., 0] - ys) ** 2)

    ref = brainstate.transform.grad(total, grad_states=params)()
    restore_states(model, snap)
    learner = braintrace.DNI(model)
    learner.compile_graph(xs[0])

    def windowed():
        restore_states(model, snap)
        learner.reset_state()
        grads = learner.etrace_grad(
            xs, ys, ms, chunk_size=K, reduction="sum",
            step_fn=lambda x, y, m: _window_loss(learner(braintrace.MultiStepData(x)), x, y, m))
        restore_states(model, snap)
        return grads

    before = _rel(windowed(), ref, ("U",))
    history = braintrace.train_synthetic_gradient(learner, (xs, ys, ms), chunk_size=K, loss_fn=_window_loss,
                                                  optimizer=optax.adam(2e-2), epochs=300)
    after = _rel(windowed(), ref, ("U",))
    # Measured: 0.81 without a synthesizer, 0.03 after 300 epochs.
    assert before > 0.5
    assert after < 0.25 * before, f"relative deviation of U from BPTT: {before:.3f} -> {after:.3f}"
    assert history[-1] < history[0]


def test_untrained_synthesizer_is_plain_multi_step_d_rtrl():
    brainstate.random.seed(0)
    model = models.gru(3, 5, 2)
    brainstate.nn.init_all_states(model)
    xs = brainstate.random.randn(T, 3)
    snap = snapshot_states(model)
    results = []
    for cls in (braintrace.D_RTRL, braintrace.DNI):
        options = {"vjp_method": "multi-step"} if cls is braintrace.D_RTRL else {}
        learner = cls(model, **options)
        learner.compile_graph(xs[0])
        restore_states(model, snap)
        results.append(flat(learner.etrace_grad(
            xs, chunk_size=2, reduction="sum",
            step_fn=lambda x, learner=learner: jnp.sum(learner(braintrace.MultiStepData(x)) ** 2))))
        restore_states(model, snap)
    for path in results[0]:
        np.testing.assert_array_equal(results[1][path], results[0][path], err_msg=str(path))


def test_full_window_is_bptt_with_a_nonzero_synthesizer():
    brainstate.random.seed(0)
    model = models.lstm(3, 5, 2)
    brainstate.nn.init_all_states(model)
    xs = brainstate.random.randn(T, 3)
    snap = snapshot_states(model)
    expected = bptt_grads(model, xs)
    learner = braintrace.DNI(model)
    learner.compile_graph(xs[0])
    restore_states(model, snap)
    grads = learner.etrace_grad(xs, chunk_size=T, reduction="sum",
                                step_fn=lambda x: jnp.sum(learner(braintrace.MultiStepData(x)) ** 2))
    assert_grads_close(expected, grads, rtol=1e-5, atol=1e-6)


def test_a_synthesizer_reaches_plain_parameters_only():
    brainstate.random.seed(0)
    model = PlainRecurrent()
    brainstate.nn.init_all_states(model, B)
    xs, ys, ms = _delayed_reward()
    snap = snapshot_states(model)
    results = []
    for scale in (0.0, 1.0):
        learner = braintrace.DNI(model)
        learner.compile_graph(xs[0])
        learner.attach_synthesizer(SyntheticGradient(learner.group_signal_shapes, scale=scale, seed=3))
        restore_states(model, snap)
        results.append(flat(learner.etrace_grad(
            xs, ys, ms, chunk_size=K, reduction="sum",
            step_fn=lambda x, y, m, learner=learner: _window_loss(learner(braintrace.MultiStepData(x)), x, y, m))))
        restore_states(model, snap)
    np.testing.assert_array_equal(results[0][("W", "weight")], results[1][("W", "weight")])
    assert np.linalg.norm(results[0][("U",)] - results[1][("U",)]) > 1e-3


def test_bad_input():
    cell = braintrace.nn.GRUCell(3, 4)
    with pytest.raises(ValueError, match="multi-step"):
        braintrace.DNI(cell, vjp_method="single-step")
    with pytest.raises(TypeError, match="SyntheticGradient"):
        braintrace.DNI(cell, synthesizer=object())
    learner = braintrace.compile(cell, "dni", jnp.ones(3))
    with pytest.raises(ValueError, match="group shapes"):
        learner.attach_synthesizer(SyntheticGradient([(5, 1)]))
    with pytest.raises(ValueError, match="does not divide"):
        braintrace.train_synthetic_gradient(learner, jnp.ones((5, 3)), chunk_size=2)
    with pytest.raises(ValueError, match="epochs"):
        braintrace.train_synthetic_gradient(learner, jnp.ones((4, 3)), chunk_size=2, epochs=0)
    with pytest.raises(TypeError, match="DNI"):
        braintrace.train_synthetic_gradient(braintrace.compile(cell, "d_rtrl", jnp.ones(3)), jnp.ones((4, 3)))
    with pytest.raises(ValueError, match="hidden_width"):
        SyntheticGradient([(4, 1)], hidden_width=0)


def test_dni_lowers_the_loss():
    first, last = train("dni", steps=40)
    assert last < 0.9 * first, f"DNI did not learn: {first:.3f} -> {last:.3f}"


def test_dni_memory_is_flat_in_length():
    from tests.algorithms.test_memory import online_memory

    short, long = online_memory("dni", 100), online_memory("dni", 1000)
    assert long <= short * 1.05 + 4096, (short, long)
