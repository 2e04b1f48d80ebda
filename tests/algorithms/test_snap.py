"""SnAp-n: saturation equals within-group RTRL, hence BPTT on one group with element-wise
tails (GRU Wz/Wh, tanh RNN); n=1 is the coupled scope; the widened trace layout; bad n;
config resolution; learning."""

import warnings

import brainstate
import jax.numpy as jnp
import numpy as np
import pytest

import braintrace
from tests._support import models
from tests._support.mixing_models import LeakyTanhRNN, TanhRNN
from tests._support.oracle import bptt_grads, flat, online_grads, restore_states, snapshot_states
from tests._support.tasks import train

T = 6


def _grads(model, xs, cls, **options):
    snap = snapshot_states(model)
    learner = cls(model, **options)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # GRU's weight-to-weight record is not under test here
        learner.compile_graph(xs[0])
    grads = online_grads(learner, xs)
    restore_states(model, snap)
    return grads, learner


def _close(actual, expected, path, rtol=1e-5):
    a, e = flat(actual)[path], flat(expected)[path]
    np.testing.assert_allclose(a, e, rtol=rtol, atol=rtol * np.abs(e).max(), err_msg=str(path))


@pytest.mark.parametrize("n", [2, 3])
def test_saturated_snap_equals_bptt_on_gru_wz_wh(n):
    brainstate.random.seed(0)
    model = models.gru(3, 4, 2)
    brainstate.nn.init_all_states(model)
    xs = brainstate.random.randn(T, 3)
    reference = bptt_grads(model, xs)
    grads, learner = _grads(model, xs, braintrace.SnAp, n=n)
    pattern = learner.graph.hidden_groups[0].snap
    assert pattern.precise and pattern.num_neighbours == 4  # dense recurrence: saturated at n = 2
    for path in (("cell", "Wz", "weight"), ("cell", "Wh", "weight"), ("out", "weight")):
        _close(grads, reference, path)
    # Wr reaches h only through Wh (weight-to-weight): no trace, so it differs from BPTT.
    wr = ("cell", "Wr", "weight")
    assert np.linalg.norm(flat(grads)[wr] - flat(reference)[wr]) > 0.05 * np.linalg.norm(flat(reference)[wr])


def test_saturated_snap_equals_bptt_on_tanh_rnn_and_beats_the_coupled_scope():
    brainstate.random.seed(0)
    model = TanhRNN(3, 5, 2)
    brainstate.nn.init_all_states(model)
    xs = brainstate.random.randn(8, 3)
    reference = bptt_grads(model, xs)
    snap, _ = _grads(model, xs, braintrace.SnAp, n=2)
    for path in reference:
        _close(snap, reference, path)
    coupled, _ = _grads(model, xs, braintrace.SnAp, n=1)
    ostl, _ = _grads(model, xs, braintrace.OSTLRecurrent)
    for path in reference:  # n = 1 is the coupled scope, exactly
        np.testing.assert_allclose(flat(coupled)[path], flat(ostl)[path], rtol=1e-6, atol=1e-8)
    w = ("w", "weight")
    assert np.linalg.norm(flat(coupled)[w] - flat(reference)[w]) > 0.2 * np.linalg.norm(flat(reference)[w])


def test_saturated_snap_with_an_elementwise_op_equals_bptt():
    # the element-wise time constant τ has a (*V, K·S) trace next to the dense matmuls
    brainstate.random.seed(4)
    model = LeakyTanhRNN(3, 5, 2)
    brainstate.nn.init_all_states(model)
    xs = brainstate.random.randn(8, 3)
    reference = bptt_grads(model, xs)
    grads, learner = _grads(model, xs, braintrace.SnAp, n=2)
    assert learner.graph.hidden_groups[0].snap.num_neighbours == 5
    for path in reference:
        _close(grads, reference, path)


def test_saturated_snap_through_finite_windows_equals_bptt():
    # within-group RTRL carries the exact credit across windows (one group, element-wise tails)
    brainstate.random.seed(5)
    model = TanhRNN(3, 4, 2)
    brainstate.nn.init_all_states(model)
    xs = brainstate.random.randn(8, 3)
    reference = bptt_grads(model, xs)
    snap = snapshot_states(model)
    learner = braintrace.SnAp(model, n=2, vjp_method="multi-step")
    learner.compile_graph(xs[0])
    grads = learner.etrace_grad(xs, step_fn=lambda w: jnp.sum(learner(braintrace.MultiStepData(w)) ** 2, axis=-1),
                                chunk_size=2, reduction="sum")
    restore_states(model, snap)
    for path in reference:
        _close(grads, reference, path)


def test_vmap_lanes_equal_the_batched_graph():
    brainstate.random.seed(6)
    xs = brainstate.random.randn(T, 2, 3)
    results = []
    for vmap in (False, True):
        brainstate.random.seed(7)
        model = TanhRNN(3, 4, 2)
        learner = braintrace.compile(model, braintrace.SnAp, xs[0], batch_size=2, vmap=vmap, n=2)
        results.append(online_grads(learner, xs))
    for path in results[0]:
        np.testing.assert_allclose(flat(results[1])[path], flat(results[0])[path], rtol=1e-5, atol=1e-6)


def test_batched_snap_keeps_the_batch_axis_independent():
    brainstate.random.seed(3)
    model = TanhRNN(3, 4, 2)
    brainstate.nn.init_all_states(model, 2)
    xs = brainstate.random.randn(T, 2, 3)
    reference = bptt_grads(model, xs)
    grads, learner = _grads(model, xs, braintrace.SnAp, n=2)
    pattern = learner.graph.hidden_groups[0].snap
    assert pattern.num_neighbours == 4  # K = width, not batch × width
    assert set(pattern.neighbours[5][pattern.valid[5]]) == {4, 5, 6, 7}  # row 1 reaches row 1 only
    for path in reference:
        _close(grads, reference, path)


def test_widened_trace_layout():
    brainstate.random.seed(0)
    learner = braintrace.SnAp(TanhRNN(3, 4, 2), n=2)
    brainstate.nn.init_all_states(learner.model)
    learner.compile_graph(jnp.ones(3))
    (_, trace), = learner.get_etrace_of(("w", "weight")).items()
    assert trace["weight"].shape == (4, 4, 4 * 1)  # (*V, *C, K·S)
    assert learner.graph.hidden_groups[0].trace_state_width == 4


@pytest.mark.parametrize("n", [0, -1, True, 2.0, "2", None])
def test_invalid_order_raises_naming_n(n):
    with pytest.raises(ValueError, match=r"`n`.*got n="):
        braintrace.SnAp(TanhRNN(3, 4, 2), n=n)


def test_config_selects_snap_with_its_order():
    learner = braintrace.compile(TanhRNN(3, 4, 2), braintrace.ETraceConfig(recurrence_scope="sparse_n", sparse_n=3),
                                 jnp.ones(3))
    assert type(learner) is braintrace.SnAp and learner.n == 3
    assert learner.graph.hidden_groups[0].snap.n == 3
    # sparse_n = 1 canonicalises to the coupled scope
    coupled = braintrace.compile(TanhRNN(3, 4, 2), braintrace.ETraceConfig(recurrence_scope="sparse_n", sparse_n=1),
                                 jnp.ones(3))
    assert type(coupled) is braintrace.OSTLRecurrent


def test_snap_name_is_class_only():
    with pytest.raises(ValueError, match="unknown algorithm"):
        braintrace.compile(TanhRNN(3, 4, 2), "snap", jnp.ones(3))


@pytest.mark.slow
def test_learns_the_evidence_task():
    first, last = train(braintrace.SnAp, n=2)
    # Measured: 0.728 -> 0.538 (D-RTRL 0.741 -> 0.607); see benchmarks/results.md.
    assert last < 0.9 * first, f"SnAp did not learn: {first:.3f} -> {last:.3f}"


def test_memory_is_constant_in_length():
    from tests._support.oracle import squared_loss
    from tests.algorithms.test_memory import compiled_bytes

    def memory(cls, length, **options):
        learner = braintrace.compile(models.elman(16, 8, 4), cls, jnp.zeros((8, 16)), batch_size=8, **options)
        return compiled_bytes(lambda xs: learner.etrace_grad(xs, step_fn=lambda x: squared_loss(learner(x))), length)

    for cls, options in [(braintrace.SnAp, {"n": 2}), (braintrace.OSTLRecurrent, {})]:
        short, long = memory(cls, 100, **options), memory(cls, 1000, **options)
        assert long <= short * 1.05 + 4096, (cls.__name__, short, long)
