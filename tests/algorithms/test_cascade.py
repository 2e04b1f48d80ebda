"""Cascade traces: D-RTRL carries a weight's influence through a downstream group with memory.

The model is plain JAX on ``ParamState`` values: an element-wise leaky group ``u`` driven
by ``x @ W``, read out by a leaky group ``d = α d + (1 - α) tanh(u) @ W_out``. Without the
cascade the input weight's online gradient drops ``W -> u_t -> d_t -> d_{t+1}...``; with it
D-RTRL equals BPTT for every weight.
"""

import warnings

import brainstate
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import braintrace
from braintrace import DiagnosticKind as K
from braintrace.algorithms.cascade import CascadeKey
from tests._support.oracle import assert_grads_close, bptt_grads, flat, online_grads, restore_states, snapshot_states

N_IN, N_U, N_D, STEPS = 3, 4, 2, 12


def _shape(batch_size, n):
    return (batch_size, n) if batch_size else (n,)


class LeakyWithReadout(brainstate.nn.Module):
    """``u = 0.8 u + x @ W``; ``d = α d + (1 - α) tanh(u) @ W_out`` (``d`` reads ``u``'s new value)."""

    def __init__(self, n_out=N_D, alpha=0.9, old_output=False, counter=False):
        super().__init__()
        self.n_out, self.alpha, self.old_output, self.counter = n_out, alpha, old_output, counter
        self.w = brainstate.ParamState(jnp.linspace(-0.9, 1.1, N_IN * N_U).reshape(N_IN, N_U))
        self.w_out = brainstate.ParamState(jnp.linspace(0.8, -0.7, N_U * n_out).reshape(N_U, n_out))

    def init_state(self, batch_size=None, **kwargs):
        self.u = brainstate.HiddenState(jnp.zeros(_shape(batch_size, N_U)))
        self.d = brainstate.HiddenState(jnp.zeros(_shape(batch_size, self.n_out)))
        if self.counter:  # an integer state: its cotangent in the Jacobian VJPs is float0
            self.count = brainstate.ShortTermState(jnp.asarray(0, jnp.int32))

    def update(self, x):
        if self.counter:
            self.count.value = self.count.value + 1
        old_d = self.d.value
        self.u.value = 0.8 * self.u.value + braintrace.matmul(x, self.w.value)
        drive = braintrace.matmul(jnp.tanh(self.u.value), self.w_out.value)
        self.d.value = self.alpha * self.d.value + (1.0 - self.alpha) * drive
        # old_output: the loss also reads d's old value (the output-bypass signal pairs with
        # the previous cascade trace).
        return self.d.value + 0.5 * jnp.sin(old_d) if self.old_output else self.d.value


class StackedGRU(brainstate.nn.Module):
    """Two GRU layers: the upper one's recurrence mixes positions (not element-wise)."""

    def __init__(self):
        super().__init__()
        self.lower = braintrace.nn.GRUCell(N_IN, N_U)
        self.upper = braintrace.nn.GRUCell(N_U, N_D)

    def update(self, x):
        return self.upper(self.lower(x))


def _inputs(batch, seed=0):
    return jax.random.uniform(jax.random.PRNGKey(seed), (STEPS,) + _shape(batch, N_IN), minval=-1.0, maxval=2.0)


def _bptt_and_online(model, xs, batch=None, *, vmap=False, **options):
    brainstate.nn.init_all_states(model, batch) if batch else brainstate.nn.init_all_states(model)
    snap = snapshot_states(model)
    expected = bptt_grads(model, xs)
    restore_states(model, snap)
    # vmap: the graph is compiled for one unbatched lane, the lanes run under jax.vmap.
    learner = braintrace.D_RTRL(model, vmap=vmap, **options)
    learner.compile_graph(xs[0])
    return learner, expected, online_grads(learner, xs)


def _group(graph, name) -> int:
    return graph.hid_path_to_group[(name,)].index


def _relative(expected, actual, path):
    e, a = flat(expected)[path], flat(actual)[path]
    return float(np.linalg.norm(a - e) / np.linalg.norm(e))


@pytest.mark.parametrize("batch", [None, 3])
def test_d_rtrl_with_a_cascade_equals_bptt_for_every_weight(batch):
    learner, expected, actual = _bptt_and_online(LeakyWithReadout(), _inputs(batch), batch)
    (plan,) = learner.graph.cascades
    u, d = _group(learner.graph, "u"), _group(learner.graph, "d")
    assert (plan.upstream, plan.downstream, plan.num_elements, plan.batch_axis) == (u, d, N_D, batch is not None)
    assert np.linalg.norm(flat(expected)[("w",)]) > 0.1
    assert_grads_close(expected, actual, rtol=1e-4, atol=1e-6)
    # The cascade trace has layout (*V_u, *C, N_d) next to the group trace (*V_u, *C, S_u).
    traces = learner.etrace.value
    group_trace = traces[(plan.relation, u)]["weight"]
    cascade_trace = traces[CascadeKey(plan.relation, u, d)]["weight"]
    assert cascade_trace.shape == group_trace.shape[:-1] + (N_D,)


def test_vmap_lanes_equal_bptt_with_a_cascade():
    learner, expected, actual = _bptt_and_online(LeakyWithReadout(), _inputs(2, seed=1), 2, vmap=True)
    assert learner.graph.cascades and not learner.graph.cascades[0].batch_axis
    assert_grads_close(expected, actual, rtol=1e-4, atol=1e-6)


def test_an_integer_state_next_to_a_cascade():
    learner, expected, actual = _bptt_and_online(LeakyWithReadout(counter=True), _inputs(None, seed=4))
    assert learner.graph.cascades
    assert_grads_close(expected, actual, rtol=1e-4, atol=1e-6)


def test_the_old_state_signal_pairs_with_the_previous_cascade_trace():
    """The output also reads ``d_{t-1}``: its cotangent is contracted without the same-step correction."""
    learner, expected, actual = _bptt_and_online(LeakyWithReadout(old_output=True), _inputs(None, seed=2))
    assert learner.graph.hidden_perturb.bypass_hidden_paths
    assert_grads_close(expected, actual, rtol=1e-4, atol=1e-6)


def test_without_the_cascade_the_input_weight_is_approximate_and_the_coupling_warned():
    """``cascade_max_elements=0``: today's behaviour, pinned so the cascade test above cannot be vacuous."""
    model = LeakyWithReadout()
    with pytest.warns(UserWarning, match="cross_group_coupling_dropped"):
        learner, expected, actual = _bptt_and_online(model, _inputs(None), cascade_max_elements=0)
    assert learner.graph.cascades == ()
    assert _relative(expected, actual, ("w",)) > 0.3
    assert_grads_close(expected, actual, rtol=1e-4, atol=1e-6, paths=[("w_out",)])


def test_the_cascade_is_an_info_record_and_the_warning_is_gone():
    model = LeakyWithReadout()
    brainstate.nn.init_all_states(model)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no cross_group_coupling_dropped warning
        graph = braintrace.compile_etrace_graph(model, jnp.ones(N_IN), cascade_max_elements=64)
    (record,) = graph.explain(kind=K.CROSS_GROUP_CASCADE)
    assert record.level is braintrace.DiagnosticLevel.INFO
    assert (record.weight_path, record.hidden_paths) == (("w",), (("u",), ("d",)))
    assert record.context == {"group": _group(graph, "u"), "downstream_group": _group(graph, "d"),
                              "num_elements": N_D, "batch_axis": False}
    assert graph.explain(kind=K.CROSS_GROUP_COUPLING_DROPPED) == ()


def test_the_size_guard_keeps_the_warning_for_a_large_downstream_group():
    model = LeakyWithReadout(n_out=5)
    brainstate.nn.init_all_states(model)
    with pytest.warns(UserWarning, match="cross_group_coupling_dropped"):
        learner = braintrace.D_RTRL(model, cascade_max_elements=4)
        learner.compile_graph(jnp.ones(N_IN))
    assert learner.graph.cascades == ()
    assert all(not isinstance(k, CascadeKey) for k in learner.etrace.value)


def test_a_downstream_recurrence_that_mixes_positions_keeps_the_warning():
    """Stacked GRUs: the upper layer's old value enters an ETP op, so its diagonal Jacobian is not exact."""
    model = StackedGRU()
    brainstate.nn.init_all_states(model)
    with pytest.warns(UserWarning, match="cross_group_coupling_dropped"):
        learner = braintrace.D_RTRL(model)
        learner.compile_graph(jnp.ones(N_IN))
    assert learner.graph.cascades == ()


def test_eprop_and_three_factor_do_not_plan_cascades():
    for make in (lambda m: braintrace.EProp(m), lambda m: braintrace.ThreeFactor(m)):
        model = LeakyWithReadout()
        brainstate.nn.init_all_states(model)
        with pytest.warns(UserWarning, match="cross_group_coupling_dropped"):
            learner = make(model)
            learner.compile_graph(jnp.ones(N_IN))
        assert learner.graph.cascades == ()


def test_multi_step_windows_with_a_cascade_equal_bptt():
    """Exact traces make every window size exact: the entry cotangents pair with the cascade trace."""
    from braintrace import MultiStepData

    model = LeakyWithReadout()
    brainstate.nn.init_all_states(model)
    xs = _inputs(None, seed=3)
    snap = snapshot_states(model)
    expected = bptt_grads(model, xs)
    restore_states(model, snap)
    learner = braintrace.D_RTRL(model, vjp_method="multi-step")
    learner.compile_graph(xs[0])
    actual = learner.etrace_grad(xs, step_fn=lambda x: jnp.sum(learner(MultiStepData(x)) ** 2, axis=-1),
                                 chunk_size=4, reduction="sum")
    assert_grads_close(expected, actual, rtol=1e-4, atol=1e-6)


def test_cascade_max_elements_is_checked():
    with pytest.raises(ValueError, match="cascade_max_elements"):
        braintrace.D_RTRL(LeakyWithReadout(), cascade_max_elements=-1)


def test_stored_trace_dtype_keeps_the_cascade():
    """``trace_dtype`` wraps the rule (StoredTraceRule): the wrapper reports the inner rule's cascade flag."""
    learner, expected, actual = _bptt_and_online(LeakyWithReadout(), _inputs(None, seed=5), trace_dtype=jnp.float32)
    assert learner.graph.cascades and any(isinstance(k, CascadeKey) for k in learner.etrace.value)
    assert_grads_close(expected, actual, rtol=1e-4, atol=1e-6)
    _, expected, actual = _bptt_and_online(LeakyWithReadout(), _inputs(None, seed=5), trace_dtype=jnp.bfloat16)
    assert _relative(expected, actual, ("w",)) < 3e-2  # bfloat16 storage: rounding only, the coupling is kept
