"""Item 5: non-float HiddenStates raise a named error; a failed compile changes nothing."""

import brainstate
import jax.numpy as jnp
import numpy as np
import pytest

import braintrace

from ._helpers import Leaky, assert_unchanged, bptt, online, snapshot

XS = jnp.linspace(-1.0, 1.0, 15).reshape(5, 3)


class CountingLeaky(Leaky):
    """A Leaky layer that also counts steps in a state of the given class and dtype."""

    def __init__(self, dtype, state_cls=brainstate.HiddenState):
        super().__init__()
        self.dtype, self.state_cls = dtype, state_cls

    def init_state(self, batch_size=None, **kwargs):
        super().init_state(batch_size)
        self.count = self.state_cls(jnp.zeros(4, self.dtype))

    def update(self, x):
        if self.dtype == jnp.bool_:
            self.count.value = jnp.logical_not(self.count.value)
        else:
            self.count.value = self.count.value + 1
        return super().update(x)


@pytest.mark.parametrize("dtype", [jnp.int32, jnp.bool_])
def test_integer_or_bool_hidden_state_raises_and_learner_stays_uncompiled(dtype):
    model = CountingLeaky(dtype)
    brainstate.nn.init_all_states(model)
    learner = braintrace.ParamDimVjpAlgorithm(model)
    before = snapshot(model, learner)
    with pytest.raises(braintrace.NotSupportedError,
                       match=rf"HiddenState `count` has dtype {jnp.dtype(dtype).name}.*ShortTermState"):
        learner.compile_graph(XS[0])
    assert not learner.is_compiled
    with pytest.raises(ValueError, match="needs a compiled graph"):
        learner(XS[0])
    assert_unchanged(before, model, learner)


def test_braintrace_compile_with_int_hidden_state_raises():
    with pytest.raises(braintrace.NotSupportedError, match="must be floating point"):
        braintrace.compile(CountingLeaky(jnp.int32), "es_d_rtrl", XS[0])


def test_suggested_fix_short_term_state_counter_matches_bptt():
    model = CountingLeaky(jnp.int32, brainstate.ShortTermState)
    learner = braintrace.compile(model, "d_rtrl", XS[0])
    expected = bptt(model, XS)
    grads = online(learner, XS)
    np.testing.assert_allclose(grads[("w",)], expected[("w",)], rtol=1e-4, atol=1e-6)
    assert int(model.count.value[0]) == 5


def test_failed_recompile_leaves_a_compiled_learner_as_it_was():
    model = Leaky()
    learner = braintrace.compile(model, "d_rtrl", XS[0])
    learner(XS[0])
    graph = learner.graph
    before = snapshot(model, learner)
    with pytest.raises(braintrace.NotSupportedError, match="complex"):
        learner.compile_graph(XS[0].astype(jnp.complex64))
    assert learner.graph is graph and learner.is_compiled
    assert int(learner.running_index.value) == 1
    assert_unchanged(before, model, learner)
    learner(XS[1])  # still usable
