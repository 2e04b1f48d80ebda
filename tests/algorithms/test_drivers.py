"""Sequence drivers, batching both ways, jit, optax loops and bad input."""

import brainstate
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import braintrace
from tests._support import models
from tests._support.oracle import assert_grads_close, squared_loss


def test_etrace_evolve_matches_stepping():
    brainstate.random.seed(0)
    xs = brainstate.random.randn(7, 3)
    model = models.gru()
    learner = braintrace.compile(model, "d_rtrl", xs[0])
    outs = learner.etrace_evolve(xs, return_outputs=True)
    h_online = np.asarray(model.cell.h.value)
    brainstate.nn.init_all_states(model)
    expected = [model(x) for x in xs]
    np.testing.assert_allclose(outs, np.stack(expected), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(h_online, model.cell.h.value, rtol=1e-5, atol=1e-6)
    assert int(learner.running_index.value) == 7


@pytest.mark.parametrize("algorithm", ["d_rtrl", "es_d_rtrl"])
def test_batched_equals_vmap_equals_sum_of_single(algorithm):
    brainstate.random.seed(1)
    xs = brainstate.random.randn(9, 4, 3)
    results = []
    for vmap in (False, True):
        brainstate.random.seed(7)
        model = models.gru()
        learner = braintrace.compile(model, algorithm, xs[0], batch_size=4, vmap=vmap)
        results.append(learner.etrace_grad(xs, step_fn=lambda x: squared_loss(learner(x)), reduction="sum"))
    assert_grads_close(results[0], results[1], rtol=1e-4, atol=1e-5)
    single = None
    for b in range(4):
        brainstate.random.seed(7)
        model = models.gru()
        learner = braintrace.compile(model, algorithm, xs[0, b])
        g = learner.etrace_grad(xs[:, b], step_fn=lambda x: squared_loss(learner(x)), reduction="sum")
        single = g if single is None else jax.tree.map(jnp.add, single, g)
    assert_grads_close(single, results[0], rtol=1e-4, atol=1e-5)


def test_jit_equals_eager_and_mean_reduction():
    brainstate.random.seed(2)
    xs = brainstate.random.randn(6, 3)
    mask = jnp.array([0, 1, 1, 0, 1, 1], jnp.float32)
    model = models.LeakyRNN()
    learner = braintrace.compile(model, "d_rtrl", xs[0])
    eager = learner.etrace_grad(xs, step_fn=lambda x: squared_loss(learner(x)), mask=mask)
    learner.reset_state()
    brainstate.nn.init_all_states(model)
    jitted = brainstate.transform.jit(
        lambda xs: learner.etrace_grad(xs, step_fn=lambda x: squared_loss(learner(x)), mask=mask))(xs)
    assert_grads_close(eager, jitted, rtol=1e-5, atol=1e-6)
    learner.reset_state()
    brainstate.nn.init_all_states(model)
    summed = learner.etrace_grad(xs, step_fn=lambda x: squared_loss(learner(x)), mask=mask, reduction="sum")
    assert_grads_close(jax.tree.map(lambda g: g / 4.0, summed), eager, rtol=1e-5, atol=1e-6)


def test_return_value_and_aux():
    xs = jnp.ones((5, 3))
    learner = braintrace.compile(models.LeakyRNN(), "d_rtrl", xs[0])

    def step(x):
        out = learner(x)
        return squared_loss(out), out

    grads, losses, aux = learner.etrace_grad(xs, step_fn=step, return_value=True, has_aux=True)
    assert losses.shape == (5,) and aux.shape == (5, 2)
    assert set(grads) == set(learner.param_states)


def test_user_jitted_optax_loop_reduces_loss():
    brainstate.random.seed(3)
    model = models.LeakyRNN(2, 6, 1)
    learner = braintrace.compile(model, "es_d_rtrl", jnp.zeros(2), decay_or_rank=0.8)
    params = learner.param_states
    opt = optax.adam(5e-2)
    opt_state = opt.init({p: s.value for p, s in params.items()})
    xs = brainstate.random.randn(12, 2)
    target = jnp.sin(jnp.arange(12.0))[:, None]

    @brainstate.transform.jit
    def train_step(opt_state):
        learner.reset_state()
        model.h.value = jnp.zeros_like(model.h.value)
        grads, losses = learner.etrace_grad(
            xs, target, step_fn=lambda x, y: jnp.sum((learner(x) - y) ** 2), return_value=True)
        updates, opt_state = opt.update(grads, opt_state)
        new = optax.apply_updates({p: s.value for p, s in params.items()}, updates)
        for p, s in params.items():
            s.value = new[p]
        return opt_state, losses.mean()

    losses = []
    for _ in range(40):
        opt_state, loss = train_step(opt_state)
        losses.append(float(loss))
    assert losses[-1] < 0.5 * losses[0]


def test_get_etrace_of_and_report():
    learner = braintrace.compile(models.gru(), "d_rtrl", jnp.ones(3))
    traces = learner.get_etrace_of(("cell", "Wz", "weight"))
    assert list(traces) == [(0, 0)]
    assert traces[(0, 0)]["weight"].shape == (5, 8, 1)
    with pytest.raises(ValueError, match="no eligibility trace"):
        learner.get_etrace_of(("cell", "Wr", "weight"))
    assert "Wz" in learner.show_graph()
    assert learner.report().counts["etrace_weights"] == 4


def test_bad_input():
    model = models.gru()
    brainstate.nn.init_all_states(model)
    learner = braintrace.D_RTRL(model)
    with pytest.raises(ValueError, match="compile_graph"):
        learner.etrace_grad(jnp.ones((3, 3)), step_fn=lambda x: squared_loss(learner(x)))
    learner.compile_graph(jnp.ones(3))
    with pytest.raises(ValueError, match="leading time length"):
        learner.etrace_grad(jnp.ones((4, 3)), jnp.ones((5, 3)), step_fn=lambda x, y: squared_loss(learner(x)))
    with pytest.raises(ValueError, match="scalar loss"):
        learner.etrace_grad(jnp.ones((4, 3)), step_fn=lambda x: learner(x))
    with pytest.raises(ValueError, match="reduction"):
        learner.etrace_grad(jnp.ones((4, 3)), step_fn=lambda x: squared_loss(learner(x)), reduction="max")
    with pytest.raises(ValueError, match="unknown algorithm"):
        braintrace.compile(models.gru(), "bptt_please", jnp.ones(3))
    with pytest.raises(ValueError, match="batch_size"):
        braintrace.compile(models.gru(), "d_rtrl", jnp.ones((2, 3)), vmap=True)


def test_model_without_relations_raises():
    class PlainRNN(brainstate.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = brainstate.ParamState(jnp.ones((3, 4)))

        def init_state(self, batch_size=None, **kwargs):
            self.h = brainstate.HiddenState(jnp.zeros(4))

        def update(self, x):
            self.h.value = 0.5 * self.h.value + x @ self.w.value
            return self.h.value

    with pytest.warns(UserWarning):
        with pytest.raises(braintrace.CompilationError, match="no ETP op"):
            braintrace.compile(PlainRNN(), "d_rtrl", jnp.ones(3))
