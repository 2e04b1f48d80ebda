"""while_loop in a step: weight-free loops run as opaque forward code; weights inside are refused."""

import brainstate
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import braintrace
from tests._support.oracle import assert_grads_close, bptt_grads, online_grads, restore_states, snapshot_states

K = braintrace.DiagnosticKind


def _settle_sqrt(a):
    """Newton iterations for sqrt(a) until converged: a data-dependent trip count."""

    def cond(state):
        s, k = state
        return jnp.logical_and(jnp.max(jnp.abs(s * s - a)) > 1e-6, k < 50)

    def body(state):
        s, k = state
        return 0.5 * (s + a / s), k + 1

    return jax.lax.while_loop(cond, body, (jnp.ones_like(a), 0))[0]


class SettledInput(brainstate.nn.Module):
    """A weight-free while settles the input before a leaky recurrent update with two ETP ops."""

    def __init__(self, n_in=3, n=4):
        super().__init__()
        self.w_in = brainstate.ParamState(brainstate.random.randn(n_in, n) * 0.5)
        self.gain = brainstate.ParamState(jnp.linspace(0.5, 1.5, n))
        self.n = n

    def init_state(self, *args, **kwargs):
        self.h = brainstate.HiddenState(jnp.zeros(self.n))

    def update(self, x):
        settled = _settle_sqrt(x * x + 1.0)
        drive = braintrace.matmul(settled, self.w_in.value)
        self.h.value = 0.8 * self.h.value + braintrace.element_wise(self.gain.value) * jnp.tanh(drive)
        return self.h.value


class WeightInWhile(brainstate.nn.Module):
    def __init__(self, n_in=3, n=4):
        super().__init__()
        self.w = brainstate.ParamState(jnp.full((n_in, n), 0.1))
        self.decay = brainstate.ParamState(jnp.full((n,), 0.5))
        self.n = n

    def init_state(self, *args, **kwargs):
        self.h = brainstate.HiddenState(jnp.full((self.n,), 0.3))

    def update(self, x):
        drive = braintrace.matmul(x, self.w.value)
        decay = self.decay.value

        def body(state):
            v, k = state
            return v * decay + drive, k + 1

        self.h.value = jax.lax.while_loop(lambda s: s[1] < 3, body, (self.h.value, 0))[0]
        return self.h.value


def test_weight_free_while_trains_the_other_weights_exactly():
    brainstate.random.seed(0)
    model = SettledInput()
    brainstate.nn.init_all_states(model)
    xs = brainstate.random.randn(12, 3)
    snap = snapshot_states(model)
    expected = bptt_grads(model, xs)
    restore_states(model, snap)
    learner = braintrace.D_RTRL(model)
    learner.compile_graph(xs[0])
    actual = online_grads(learner, xs)
    for path in (("w_in",), ("gain",)):
        assert np.abs(np.asarray(expected[path])).max() > 1e-2
    assert_grads_close(expected, actual, rtol=1e-4, atol=1e-6)
    (record,) = learner.graph.explain(kind=K.CONTROL_FLOW_OPAQUE_FWD)
    assert record.context == {"touches_hidden": False}
    assert sorted(r.weight_path for r in learner.graph.explain(kind=K.RELATION_INCLUDED)) == [("gain",), ("w_in",)]


def test_weight_inside_while_is_refused_and_nothing_is_mutated():
    model = WeightInWhile()
    brainstate.nn.init_all_states(model)
    before = {path: np.asarray(st.value) for path, st in model.states().items()}
    learner = braintrace.D_RTRL(model)
    with pytest.raises(braintrace.NotSupportedError, match=r"ParamState `decay` is used inside a `while_loop`"):
        learner.compile_graph(jnp.ones(3))
    assert not learner.is_compiled
    with pytest.raises(braintrace.NotSupportedError, match="`decay`"):
        braintrace.compile_etrace_graph(model, jnp.ones(3))
    after = {path: np.asarray(st.value) for path, st in model.states().items()}
    assert before.keys() == after.keys()
    for path in before:
        np.testing.assert_array_equal(before[path], after[path])


def test_while_on_hidden_state_can_be_refused_by_policy():
    class HiddenWhile(SettledInput):
        def update(self, x):
            drive = braintrace.matmul(x, self.w_in.value)
            self.h.value = _settle_sqrt(self.h.value * self.h.value + 1.0) * 0.5 + drive
            return self.h.value

    model = HiddenWhile()
    brainstate.nn.init_all_states(model)
    graph = braintrace.compile_etrace_graph(model, jnp.ones(3))
    assert graph.explain(kind=K.CONTROL_FLOW_OPAQUE_FWD)[0].context == {"touches_hidden": True}
    with pytest.raises(braintrace.NotSupportedError, match="while_hidden='error'"):
        braintrace.compile_etrace_graph(model, jnp.ones(3),
                                        control_flow=braintrace.ControlFlowPolicy(while_hidden="error"))
