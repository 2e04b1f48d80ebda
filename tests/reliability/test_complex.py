"""Item 6: complex inputs or parameters raise a named error instead of a VJP dtype error."""

import brainstate
import jax.numpy as jnp
import pytest

import braintrace

from ._helpers import Leaky, assert_unchanged, snapshot

X = jnp.linspace(-1.0, 1.0, 3)


def test_complex_example_input_raises_naming_the_input():
    model = Leaky()
    brainstate.nn.init_all_states(model)
    learner = braintrace.ParamDimVjpAlgorithm(model)
    before = snapshot(model, learner)
    with pytest.raises(braintrace.NotSupportedError, match=r"input leaf 0 of `Leaky.update`.*complex64"):
        learner.compile_graph(X.astype(jnp.complex64))
    assert not learner.is_compiled
    assert_unchanged(before, model, learner)


def test_complex_parameter_raises_naming_the_path():
    model = Leaky()
    model.w.value = model.w.value.astype(jnp.complex64)
    brainstate.nn.init_all_states(model)
    before = snapshot(model)
    with pytest.raises(braintrace.NotSupportedError, match=r"ParamState `w` has the complex dtype complex64"):
        braintrace.compile(model, "d_rtrl", X)
    assert_unchanged(before, model)


def test_complex_input_to_a_real_learner_raises_type_error():
    model = Leaky()
    learner = braintrace.compile(model, "d_rtrl", X)
    before = snapshot(model, learner)
    with pytest.raises(TypeError, match=r"complex64.*compiled for float32"):
        learner(X.astype(jnp.complex64))
    assert_unchanged(before, model, learner)
