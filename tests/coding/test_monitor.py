"""monitor_hidden: coding statistics of hidden groups, observe-only, inside jitted training."""

import brainstate
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import braintrace
from tests._support import models
from tests._support.oracle import squared_loss


def fresh_learner(algorithm="d_rtrl", batch=4):
    brainstate.random.seed(0)
    model = models.gru(2, 6, 2)
    return model, braintrace.compile(model, algorithm, jnp.zeros((batch, 2)), batch_size=batch)


def snapshot(learner):
    return [jax.tree.map(np.asarray, st.value) for st in learner.states().values()]


@pytest.mark.parametrize("algorithm", ["d_rtrl", "es_d_rtrl"])
def test_monitor_is_observe_only(algorithm):
    xs = brainstate.random.RandomState(1).randn(7, 4, 2)
    _, plain = fresh_learner(algorithm)
    expected = plain.etrace_grad(xs, step_fn=lambda x: squared_loss(plain(x)))
    expected_states = snapshot(plain)

    _, watched = fresh_learner(algorithm)
    monitor = braintrace.coding.monitor_hidden(watched, K=8)
    actual, stats = monitor.etrace_grad(xs, step_fn=lambda x: squared_loss(watched(x)))
    for path in expected:
        jax.tree.map(np.testing.assert_array_equal, jax.tree.map(np.asarray, actual[path]),
                     jax.tree.map(np.asarray, expected[path]))
    for a, b in zip(snapshot(watched), expected_states):
        jax.tree.map(np.testing.assert_array_equal, a, b)
    assert set(stats) == {0}
    assert stats[0]["utilization"].shape == (7,)
    assert np.all((stats[0]["utilization"] > 0) & (stats[0]["utilization"] <= 1))
    assert np.all(stats[0]["entropy"] >= 0) and np.all(stats[0]["commitment"] >= 0)


def test_return_value_and_aux_pass_through():
    _, learner = fresh_learner()
    monitor = braintrace.coding.monitor_hidden(learner, K=4)
    xs = jnp.ones((5, 4, 2))

    def step(x):
        out = learner(x)
        return squared_loss(out), out

    (grads, losses, aux), stats = monitor.etrace_grad(xs, step_fn=step, has_aux=True, return_value=True)
    assert losses.shape == (5,) and aux.shape == (5, 4, 2)
    assert stats[0]["entropy"].shape == (5,)


def test_codebook_fits_and_utilization_rises():
    model, learner = fresh_learner(batch=16)
    monitor = braintrace.coding.monitor_hidden(learner, K=16)

    @brainstate.transform.jit
    def run(key):
        xs = jax.random.normal(key, (10, 16, 2))
        for st in model.states(brainstate.HiddenState).values():
            st.value = jnp.zeros_like(st.value)
        return monitor.etrace_evolve(xs)

    first = run(jax.random.PRNGKey(0))[0]
    for i in range(1, 15):
        last = run(jax.random.PRNGKey(i))[0]
    assert float(last["commitment"].mean()) < 0.7 * float(first["commitment"].mean())
    assert float(last["utilization"].mean()) > float(first["utilization"].mean())


def test_graph_monitor_and_errors():
    model = models.LeakyRNN()
    brainstate.nn.init_all_states(model, 3)
    graph = braintrace.compile_etrace_graph(model, jnp.ones((3, 3)))
    monitor = braintrace.coding.monitor_hidden(graph, K=4, coding_dim=2, update="none")
    traces = monitor.observe()
    assert traces[0].reduced.shape == (3, 2)
    with pytest.raises(ValueError, match="needs a learner"):
        monitor.etrace_evolve(jnp.ones((2, 3, 3)))
    with pytest.raises(ValueError, match="exceeds"):
        braintrace.coding.monitor_hidden(graph, coding_dim=99)
    with pytest.raises(TypeError, match="compiled online learner"):
        braintrace.coding.monitor_hidden(model)
    assert monitor.states(brainstate.ParamState) == {}
