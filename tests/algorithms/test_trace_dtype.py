"""``trace_dtype``: traces stored narrower between steps, every roll and solve in float32.

Measured on a GRU(3 -> 8) over 20 steps (relative L2 deviation of the gradient from float32
storage): bfloat16 6e-4 (D-RTRL) to 2e-3 (ES-D-RTRL), float16 about 1e-4; the stored trace
bytes halve (UORO keeps its uint32 key and int32 counter).
"""

import warnings

import brainstate
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import braintrace
from braintrace import MultiStepData
from braintrace.algorithms.options import LearnerOptions
from tests._support import models
from tests._support.oracle import assert_grads_close, bptt_grads, flat, restore_states, snapshot_states

T = 20


def _relative(actual, expected) -> float:
    a, e = flat(actual), flat(expected)
    num = np.sqrt(sum(np.sum((a[p] - e[p]) ** 2) for p in e))
    return float(num / np.sqrt(sum(np.sum(e[p] ** 2) for p in e)))


def _learner(cls=braintrace.D_RTRL, trace_dtype=None, seed=1, **options):
    brainstate.random.seed(seed)
    model = models.gru(3, 8, 2)
    brainstate.nn.init_all_states(model)
    xs = brainstate.random.uniform(0.0, 2.0, (T, 3))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        learner = cls(model, trace_dtype=trace_dtype, **options)
        learner.compile_graph(xs[0])
    return learner, xs


def _grads(learner, xs, chunk_size=None):
    if chunk_size is None:
        return learner.etrace_grad(xs, step_fn=lambda x: jnp.sum(learner(x) ** 2), reduction="sum")
    return learner.etrace_grad(xs, step_fn=lambda w: jnp.sum(learner(MultiStepData(w)) ** 2, axis=-1),
                               chunk_size=chunk_size, reduction="sum")


def _trace_bytes(learner) -> int:
    return sum(leaf.nbytes for leaf in jax.tree.leaves(learner.etrace.value))


def test_bfloat16_storage_halves_the_traces_and_rounds_the_gradient():
    reference, xs = _learner()
    expected = _grads(reference, xs)
    narrow, _ = _learner(trace_dtype=jnp.bfloat16)
    assert {leaf.dtype for leaf in jax.tree.leaves(narrow.etrace.value)} == {jnp.dtype(jnp.bfloat16)}
    assert 2 * _trace_bytes(narrow) == _trace_bytes(reference) > 0
    actual = _grads(narrow, xs)
    # Still bf16 after the steps, and the gradients are float32 (the solve upcasts).
    assert {leaf.dtype for leaf in jax.tree.leaves(narrow.etrace.value)} == {jnp.dtype(jnp.bfloat16)}
    assert {g.dtype for g in flat(actual).values()} == {jnp.dtype(jnp.float32)}
    deviation = _relative(actual, expected)
    assert 1e-5 < deviation < 1e-2, deviation  # it really rounded, at bf16's scale (measured 6e-4)
    # float16 keeps 3 more mantissa bits: closer, but still rounded.
    half, _ = _learner(trace_dtype=jnp.float16)
    assert 1e-6 < _relative(_grads(half, xs), expected) < deviation


@pytest.mark.parametrize("cls, options", [(braintrace.D_RTRL, {}), (braintrace.ES_D_RTRL, {"decay_or_rank": 0.9})])
def test_float32_storage_is_bit_identical_to_none(cls, options):
    a, xs = _learner(cls, None, **options)
    b, _ = _learner(cls, jnp.float32, **options)
    ga, gb = _grads(a, xs), _grads(b, xs)
    for path in flat(ga):
        np.testing.assert_array_equal(flat(gb)[path], flat(ga)[path], err_msg=str(path))
    for x, y in zip(jax.tree.leaves(a.etrace.value), jax.tree.leaves(b.etrace.value), strict=True):
        np.testing.assert_array_equal(np.asarray(y), np.asarray(x))


def test_under_jit_equals_eager():
    eager, xs = _learner(trace_dtype=jnp.bfloat16)
    expected = _grads(eager, xs)
    jitted, _ = _learner(trace_dtype=jnp.bfloat16)
    actual = brainstate.transform.jit(lambda seq: _grads(jitted, seq))(xs)
    assert_grads_close(expected, actual, rtol=1e-6, atol=1e-7)
    assert {leaf.dtype for leaf in jax.tree.leaves(jitted.etrace.value)} == {jnp.dtype(jnp.bfloat16)}
    jitted.reset_state()
    assert {leaf.dtype for leaf in jax.tree.leaves(jitted.etrace.value)} == {jnp.dtype(jnp.bfloat16)}


def test_windows_store_narrow_traces():
    reference, xs = _learner(vjp_method="multi-step")
    expected = _grads(reference, xs, chunk_size=4)
    narrow, _ = _learner(trace_dtype=jnp.bfloat16, vjp_method="multi-step")
    actual = _grads(narrow, xs, chunk_size=4)
    assert 1e-5 < _relative(actual, expected) < 1e-2
    assert {leaf.dtype for leaf in jax.tree.leaves(narrow.etrace.value)} == {jnp.dtype(jnp.bfloat16)}
    # One window over the whole sequence starts from zero traces: storage cannot matter, BPTT.
    full, _ = _learner(trace_dtype=jnp.bfloat16, vjp_method="multi-step")
    snap = snapshot_states(full.model)
    bptt = bptt_grads(full.model, xs)
    restore_states(full.model, snap)
    assert_grads_close(bptt, _grads(full, xs, chunk_size=T), rtol=1e-5, atol=1e-6)


def test_integer_leaves_of_a_rule_state_are_untouched():
    reference, xs = _learner(braintrace.UORO, projection_key=7)
    narrow, _ = _learner(braintrace.UORO, jnp.bfloat16, projection_key=7)
    state = narrow.etrace.value
    assert state.key.dtype == reference.etrace.value.key.dtype == jnp.uint32
    assert state.counter.dtype == reference.etrace.value.counter.dtype
    np.testing.assert_array_equal(state.key, jax.random.PRNGKey(7))
    floats = [leaf for leaf in jax.tree.leaves(state) if jnp.issubdtype(leaf.dtype, jnp.floating)]
    assert floats and {leaf.dtype for leaf in floats} == {jnp.dtype(jnp.bfloat16)}
    expected, actual = _grads(reference, xs, chunk_size=4), _grads(narrow, xs, chunk_size=4)
    assert 1e-5 < _relative(actual, expected) < 1e-2
    assert int(narrow.etrace.value.counter) == int(reference.etrace.value.counter) == T


def test_rule_attributes_stay_reachable():
    learner, _ = _learner(braintrace.EProp, jnp.bfloat16, feedback="random", random_feedback_key=0)
    assert type(learner._compiled.rule).__name__ == "StoredTraceRule"
    assert len(learner.feedback_matrices) == len(learner.graph.hidden_groups) == 1


@pytest.mark.parametrize("value", [jnp.int32, jnp.complex64, "not-a-dtype", object()])
def test_a_non_floating_trace_dtype_is_refused(value):
    with pytest.raises(ValueError, match="trace_dtype"):
        LearnerOptions(trace_dtype=value)
    with pytest.raises(ValueError, match="trace_dtype"):
        braintrace.D_RTRL(models.gru(), trace_dtype=value)


def test_compile_passes_trace_dtype():
    learner = braintrace.compile(braintrace.nn.GRUCell(3, 4), "d_rtrl", jnp.ones(3), trace_dtype=jnp.bfloat16)
    assert learner.options.trace_dtype == jnp.bfloat16
    assert {leaf.dtype for leaf in jax.tree.leaves(learner.etrace.value)} == {jnp.dtype(jnp.bfloat16)}
