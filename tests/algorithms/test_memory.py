"""Online learning has O(1) memory in sequence length; BPTT grows linearly."""

import brainstate
import jax
import jax.numpy as jnp
import pytest

import braintrace
from tests._support import models
from tests._support.oracle import squared_loss


def compiled_bytes(fn, length):
    """Temporary + output bytes XLA reserves for ``fn(xs)`` (inputs and states excluded)."""
    xs = jax.ShapeDtypeStruct((length, 8, 16), jnp.float32)
    stats = brainstate.transform.jit(fn).lower(xs).compile().memory_analysis()
    return stats.temp_size_in_bytes + stats.output_size_in_bytes


def online_memory(algorithm, length, **options):
    model = models.elman(16, 64, 4)
    learner = braintrace.compile(model, algorithm, jnp.zeros((8, 16)), batch_size=8, **options)
    return compiled_bytes(lambda xs: learner.etrace_grad(xs, step_fn=lambda x: squared_loss(learner(x))), length)


def bptt_memory(length):
    model = models.elman(16, 64, 4)
    brainstate.nn.init_all_states(model, 8)
    params = dict(model.states(brainstate.ParamState))

    def run(xs):
        total = lambda: jnp.sum(brainstate.transform.for_loop(lambda x: squared_loss(model(x)), xs))  # noqa: E731
        return brainstate.transform.grad(total, grad_states=params)()

    return compiled_bytes(run, length)


def test_online_memory_is_constant_in_length():
    for algorithm, options in [("d_rtrl", {}), ("es_d_rtrl", {"decay_or_rank": 0.9})]:
        short = online_memory(algorithm, 100, **options)
        long = online_memory(algorithm, 1000, **options)
        assert long <= short * 1.05 + 4096, (algorithm, short, long)


def test_bptt_memory_grows_and_es_is_smaller():
    assert bptt_memory(1000) > 5 * bptt_memory(100)
    assert online_memory("es_d_rtrl", 100, decay_or_rank=0.9) < online_memory("d_rtrl", 100)


@pytest.mark.parametrize("algorithm, options", [
    ("eprop", {"kappa_filter_decay": 0.6}),
    ("eprop", {"feedback": "random", "random_feedback_key": 0}),
    ("ostl_feedforward", {}),
])
def test_rule_family_memory_is_constant_in_length(algorithm, options):
    """Measured (Elman 16→64→4, batch 8): 379,676 / 214,652 / 51,140 bytes at T=100 and T=1000."""
    short, long = online_memory(algorithm, 100, **options), online_memory(algorithm, 1000, **options)
    assert long <= short * 1.05 + 4096, (algorithm, short, long)


def test_three_factor_memory_is_constant_in_length():
    def memory(length):
        learner = braintrace.compile(models.elman(16, 64, 4), "three_factor", jnp.zeros((8, 16)), batch_size=8)
        step = lambda x: squared_loss(learner(x, modulator=jnp.ones(())))  # noqa: E731
        return compiled_bytes(lambda xs: learner.etrace_grad(xs, step_fn=step), length)

    short, long = memory(100), memory(1000)
    assert long <= short * 1.05 + 4096, (short, long)
