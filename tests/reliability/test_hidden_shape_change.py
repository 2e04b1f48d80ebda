"""Item 7: a HiddenState that changes shape in the step fails at compile, naming it."""

import brainstate
import jax.numpy as jnp
import pytest

import braintrace

from ._helpers import Leaky, assert_unchanged, snapshot

X = jnp.linspace(-1.0, 1.0, 3)


class Tiles(Leaky):
    def update(self, x):
        self.h.value = jnp.tile(0.8 * self.h.value + jnp.tanh(braintrace.matmul(x, self.w.value)), 2)
        return self.h.value


class Casts(Leaky):
    def update(self, x):
        self.h.value = (0.8 * self.h.value + jnp.tanh(braintrace.matmul(x, self.w.value))).astype(jnp.float16)
        return self.h.value


def test_hidden_state_growing_in_the_step_raises_compilation_error():
    model = Tiles()
    brainstate.nn.init_all_states(model)
    learner = braintrace.ParamDimVjpAlgorithm(model)
    before = snapshot(model, learner)
    with pytest.raises(braintrace.CompilationError,
                       match=r"HiddenState `h` enters the step as float32\[4\] and leaves it as float32\[8\]"):
        learner.compile_graph(X)
    assert not learner.is_compiled
    assert_unchanged(before, model, learner)


def test_hidden_state_changing_dtype_in_the_step_raises_compilation_error():
    model = Casts()
    brainstate.nn.init_all_states(model)
    before = snapshot(model)
    with pytest.raises(braintrace.CompilationError, match=r"float32\[4\] and leaves it as float16\[4\]"):
        braintrace.compile(model, "es_d_rtrl", X)
    assert_unchanged(before, model)
