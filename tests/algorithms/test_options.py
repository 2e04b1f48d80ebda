"""The published learner options: accepted with their defaults, unsupported ones named."""

import inspect
import logging

import brainstate
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
