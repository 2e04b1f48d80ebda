"""Compiling inside ``jit`` raises instead of leaving tracers in the model or learner."""

import brainstate
import jax
import jax.numpy as jnp
import pytest

import braintrace

from ._helpers import Leaky, assert_unchanged, snapshot

X = jnp.linspace(-1.0, 1.0, 3)


def test_braintrace_compile_inside_jit_raises_and_leaves_the_model_alone():
    model = Leaky()
    brainstate.nn.init_all_states(model)
    before = snapshot(model)

    @jax.jit
    def build_and_step(x):
        return braintrace.compile(model, "d_rtrl", x)(x)

    with pytest.raises(braintrace.NotSupportedError, match=r"`braintrace.compile` was called inside `jax.jit`"):
        build_and_step(X)
    assert_unchanged(before, model)


def test_compile_graph_inside_brainstate_jit_with_closed_over_inputs_raises():
    model = Leaky()
    brainstate.nn.init_all_states(model)
    learner = braintrace.ParamDimVjpAlgorithm(model)
    before = snapshot(model, learner)

    @brainstate.transform.jit
    def build():
        learner.compile_graph(X)  # concrete input, but an active trace
        return 0

    with pytest.raises(braintrace.NotSupportedError, match="active JAX trace|traced"):
        build()
    assert not learner.is_compiled
    assert_unchanged(before, model, learner)


def test_compiled_outside_then_called_inside_jit_works():
    model = Leaky()
    learner = braintrace.compile(model, "d_rtrl", X)
    out = brainstate.transform.jit(lambda x: learner(x))(X)
    assert out.shape == (4,) and not isinstance(model.h.value, jax.core.Tracer)
