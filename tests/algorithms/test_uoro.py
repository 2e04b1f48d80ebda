"""UORO: unbiased for the within-group recursion (mean over projection keys -> BPTT with
the deviation shrinking like 1/sqrt(seeds)), the full window is BPTT, it learns, options are
validated, compile() builds it."""

import warnings

import brainstate
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import braintrace
import braintrace.nn as bnn
from tests._support import models
from tests._support.oracle import assert_grads_close, bptt_grads, online_grads, restore_states, snapshot_states
from tests._support.tasks import train

T = 6


class RollRNN(brainstate.nn.Module):
    """``h = tanh(W x + 0.9 roll(h))``: one hidden group, an element-wise tail, and a
    recurrence that mixes positions *inside* the group transition (no weight in it).

    Within-group RTRL is BPTT here; D-RTRL keeps only the per-position diagonal of the
    transition's Jacobian (zero for a roll), so it is biased.
    """

    def __init__(self, n_in=3, n=5, n_out=2):
        super().__init__()
        self.n = n
        self.W = bnn.Linear(n_in, n)
        self.out = bnn.Linear(n, n_out)

    def init_state(self, batch_size=None, **kwargs):
        self.h = brainstate.HiddenState(jnp.zeros((self.n,)))

    def update(self, x):
        self.h.value = jnp.tanh(self.W(x) + 0.9 * jnp.roll(self.h.value, 1, axis=-1))
        return self.out(self.h.value)


def _roll_setup():
    brainstate.random.seed(1)
    model = RollRNN()
    brainstate.nn.init_all_states(model)
    xs = brainstate.random.randn(T, 3)
    return model, xs, snapshot_states(model)


def _learner(model, xs, cls, **options):
    with warnings.catch_warnings():  # the roll is reported as a non-element-wise transition
        warnings.simplefilter("ignore")
        learner = cls(model, **options)
        learner.compile_graph(xs[0])
    return learner


def _samples(model, xs, snap, n, vjp_method):
    learner = _learner(model, xs, braintrace.UORO, vjp_method=vjp_method)

    @brainstate.transform.jit
    def grad_for(key):
        for path, value in snap.items():
            model.states()[path].value = value
        learner.reset_state()
        learner.etrace.value = learner.etrace.value._replace(key=key)
        return online_grads(learner, xs)[("W", "weight")]["weight"]

    keys = jax.vmap(lambda i: jax.random.key_data(jax.random.key(i)))(jnp.arange(n))
    out = np.stack([np.asarray(grad_for(k)) for k in keys]).reshape(n, -1)
    restore_states(model, snap)
    return out


@pytest.mark.parametrize("vjp_method", ["multi-step", pytest.param("single-step", marks=pytest.mark.slow)])
def test_uoro_is_unbiased_for_the_within_group_recursion(vjp_method):
    model, xs, snap = _roll_setup()
    ref = np.ravel(np.asarray(bptt_grads(model, xs)[("W", "weight")]["weight"]))
    restore_states(model, snap)
    d_rtrl = _learner(model, xs, braintrace.D_RTRL)
    restore_states(model, snap)
    biased = np.ravel(np.asarray(online_grads(d_rtrl, xs)[("W", "weight")]["weight"]))
    restore_states(model, snap)
    samples = _samples(model, xs, snap, 2048, vjp_method)
    norm = np.linalg.norm(ref)

    # The trend: the mean squared deviation of a mean of n samples falls like 1/n.
    def msd(n):
        means = samples.reshape(-1, n, samples.shape[1]).mean(axis=1)
        return float(np.mean(np.sum((means - ref) ** 2, axis=1)))

    ratio = msd(16) / msd(256)
    assert 8.0 < ratio < 32.0, f"MSD(16)/MSD(256) = {ratio:.1f}, expected about 16 for an unbiased estimator"
    # Unbiased: the 2048-sample mean is within 3.5 standard errors of BPTT, and that error is small.
    mean = samples.mean(axis=0)
    standard_error = float(np.sqrt(np.sum(samples.var(axis=0)) / len(samples)))
    assert np.linalg.norm(mean - ref) <= 3.5 * standard_error
    assert standard_error <= 0.25 * norm
    # One sample is far off (high variance), and D-RTRL's diagonal is biased on this model.
    assert np.linalg.norm(samples[0] - ref) > 0.3 * norm
    assert np.linalg.norm(biased - ref) > 0.5 * norm > 10 * np.linalg.norm(mean - ref)


@pytest.mark.parametrize("make", [models.gru, models.lstm, models.elman])
def test_full_window_is_bptt(make):
    brainstate.random.seed(0)
    model = make(3, 5, 2)
    brainstate.nn.init_all_states(model)
    xs = brainstate.random.randn(T, 3)
    snap = snapshot_states(model)
    expected = bptt_grads(model, xs)
    learner = _learner(model, xs, braintrace.UORO)
    restore_states(model, snap)
    grads = learner.etrace_grad(xs, step_fn=lambda x: jnp.sum(learner(braintrace.MultiStepData(x)) ** 2),
                                chunk_size=T, reduction="sum")
    assert_grads_close(expected, grads, rtol=1e-5, atol=1e-6)


def test_key_counter_and_reset():
    model, xs, snap = _roll_setup()
    learner = _learner(model, xs, braintrace.UORO, projection_key=7)
    state = learner.etrace.value
    np.testing.assert_array_equal(state.key, jax.random.PRNGKey(7))
    learner.etrace_evolve(xs)
    assert int(learner.etrace.value.counter) == T
    first = np.asarray(learner.etrace.value.s_tilde[0])
    learner.reset_state()
    np.testing.assert_array_equal(learner.etrace.value.key, jax.random.PRNGKey(7))
    assert int(learner.etrace.value.counter) == 0
    restore_states(model, snap)
    learner.etrace_evolve(xs)
    np.testing.assert_allclose(np.asarray(learner.etrace.value.s_tilde[0]), first, rtol=1e-6)
    other = _learner(model, xs, braintrace.UORO, projection_key=8)
    restore_states(model, snap)
    other.etrace_evolve(xs)
    assert not np.allclose(np.asarray(other.etrace.value.s_tilde[0]), first)
    assert set(learner.get_etrace_of(("W", "weight"))) == {(0, 0)}


@pytest.mark.parametrize("options, error, words", [
    ({"projection_key": "seed"}, ValueError, "projection_key"),
    ({"projection_key": jnp.zeros((3, 2), jnp.uint32)}, ValueError, "projection_key"),
    ({"projection_key": 1.5}, ValueError, "projection_key"),
    ({"projection_eps": 0.0}, ValueError, "projection_eps"),
    ({"projection_eps": -1.0}, ValueError, "projection_eps"),
    ({"vjp_method": "two-step"}, ValueError, "vjp_method"),
])
def test_bad_options(options, error, words):
    with pytest.raises(error, match=words):
        braintrace.UORO(braintrace.nn.GRUCell(3, 4), **options)


def test_uoro_lowers_the_loss():
    first, last = train("uoro", steps=40)  # multi-step, the default
    assert last < 0.9 * first, f"UORO did not learn: {first:.3f} -> {last:.3f}"


def test_uoro_memory_is_flat_in_length():
    from tests.algorithms.test_memory import online_memory

    short, long = online_memory("uoro", 100), online_memory("uoro", 1000)
    assert long <= short * 1.05 + 4096, (short, long)
    # The rank-1 carrier (one param-shaped θ̃ per relation and one s̃ per group) is smaller than
    # D-RTRL's B·I·O traces on the same model. (Compiled step memory is not compared: the D-RTRL
    # solve's per-slice contraction keeps its transient small.)
    def trace_bytes(algorithm):
        learner = braintrace.compile(models.elman(16, 64, 4), algorithm, jnp.zeros((8, 16)), batch_size=8)
        return sum(leaf.nbytes for leaf in jax.tree.leaves(learner.etrace.value))

    assert trace_bytes("uoro") < trace_bytes("d_rtrl") / 4


def test_vmapped_lanes_draw_their_own_projections():
    learner = braintrace.compile(braintrace.nn.GRUCell(2, 3), "uoro", jnp.ones((4, 2)), batch_size=4, vmap=True,
                                 vjp_method="single-step")
    keys = np.asarray(learner.etrace.value.key)
    assert keys.shape == (4, 2) and len({tuple(k) for k in keys}) == 4
    learner.etrace_evolve(jnp.ones((3, 4, 2)))
    s_tilde = np.asarray(learner.etrace.value.s_tilde[0])
    assert not np.allclose(s_tilde[0], s_tilde[1]), "identical inputs, different keys: different carriers"
    learner.reset_state()
    np.testing.assert_array_equal(learner.etrace.value.key, keys)
