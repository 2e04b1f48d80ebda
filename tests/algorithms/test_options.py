"""The published learner options: accepted with their defaults, unsupported ones named."""

import inspect
import logging

import brainstate
import jax
import jax.numpy as jnp
import pytest

import braintrace
from braintrace.algorithms.options import LearnerOptions


def _cell():
    return braintrace.nn.GRUCell(3, 4)


@pytest.mark.parametrize("cls", [braintrace.D_RTRL, braintrace.ES_D_RTRL])
def test_published_option_names_are_accepted(cls):
    params = inspect.signature(cls.__init__).parameters
    for name in ("name", "vjp_method", "fast_solve", "control_flow", "config", "random_feedback_key"):
        assert name in params or "options" in params, name
    learner = cls(_cell(), vjp_method="single-step", fast_solve=False, control_flow=None, config=None,
                  random_feedback_key=None)
    assert learner.options.vjp_method == "single-step"
    assert learner.options.fast_solve is False
    assert cls(_cell(), vjp_method="multi-step").options.vjp_method == "multi-step"


def test_name_is_the_second_positional_argument():
    assert braintrace.D_RTRL(_cell(), "my_learner").name == "my_learner"
    assert braintrace.ES_D_RTRL(_cell(), 0.5, "es").name == "es"


@pytest.mark.parametrize("option, value, error, words", [
    ("vjp_method", "two-step", ValueError, "single-step"),
    ("trace_dtype", jnp.int32, ValueError, "trace_dtype"),
    ("config", object(), braintrace.NotSupportedError, "config"),
    ("control_flow", object(), braintrace.NotSupportedError, "control_flow"),
    ("fast_solve", "yes", TypeError, "fast_solve"),
    ("snap_max_jacobian_elements", 0, ValueError, "snap_max_jacobian_elements"),
])
def test_unsupported_options_are_named(option, value, error, words):
    with pytest.raises(error, match=words):
        LearnerOptions(**{option: value})


def test_compile_rejects_an_option_before_touching_the_model():
    cell = _cell()
    brainstate.nn.init_all_states(cell)
    before = cell.h.value
    with pytest.raises(braintrace.NotSupportedError):
        braintrace.compile(cell, "D_RTRL", jnp.ones((2, 3)), batch_size=2, config=object())
    assert cell.h.value.shape == before.shape == (4,)


def test_compile_accepts_seed_and_verbose(caplog):
    cell = braintrace.nn.ValinaRNNCell(3, 4, activation=jnp.tanh)
    with caplog.at_level(logging.INFO, logger="braintrace"):
        learner = braintrace.compile(cell, "D_RTRL", jnp.ones((2, 3)), batch_size=2, seed=0, verbose=1)
    assert learner(jnp.ones((2, 3))).shape == (2, 4)
    assert any("relation" in r.getMessage().lower() or "group" in r.getMessage().lower() for r in caplog.records)
    with pytest.raises(ValueError, match="verbose"):
        braintrace.compile(_cell(), "D_RTRL", jnp.ones(3), verbose=-1)



def _option_grads(cls, options, chunk_size, **flags):
    brainstate.random.seed(0)
    cell = braintrace.nn.GRUCell(3, 4)
    brainstate.nn.init_all_states(cell)
    xs = jnp.linspace(-1.0, 1.0, 18).reshape(6, 3)
    learner = cls(cell, vjp_method="multi-step" if chunk_size else "single-step", **flags, **options)
    learner.compile_graph(xs[0])
    if chunk_size:
        step_fn = lambda w: jnp.sum(learner(braintrace.MultiStepData(w)) ** 2, axis=-1)  # noqa: E731
    else:
        step_fn = lambda x: jnp.sum(learner(x) ** 2)  # noqa: E731
    return learner.etrace_grad(xs, step_fn=step_fn, chunk_size=chunk_size, reduction="sum")


@pytest.mark.parametrize("chunk_size", [None, 3])
@pytest.mark.parametrize("cls, options", [(braintrace.D_RTRL, {}), (braintrace.ES_D_RTRL, {"decay_or_rank": 0.9})])
def test_fast_solve_and_chunked_trace_change_nothing(cls, options, chunk_size):
    """Documented no-ops in this version: both values give bit-identical gradients."""
    default = _option_grads(cls, options, chunk_size, fast_solve=True, chunked_trace=True)
    other = _option_grads(cls, options, chunk_size, fast_solve=False, chunked_trace=False)
    assert set(default) == set(other)
    for path in default:
        for a, b in zip(jax.tree.leaves(default[path]), jax.tree.leaves(other[path]), strict=True):
            assert jnp.array_equal(a, b) and float(jnp.max(jnp.abs(a))) > 0, path
