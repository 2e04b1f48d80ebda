"""The published learner members: state views by path and the VJP base-class name."""

import brainstate
import jax.numpy as jnp

import braintrace


class Counting(brainstate.nn.Module):
    """A leaky layer with a step counter (a non-hidden, non-parameter state)."""

    def __init__(self):
        super().__init__()
        self.w = brainstate.ParamState(jnp.ones((2, 3)) * 0.1)

    def init_state(self, batch_size=None, **kwargs):
        self.h = brainstate.HiddenState(jnp.zeros(3))
        self.count = brainstate.ShortTermState(jnp.zeros(()))

    def update(self, x):
        self.count.value = self.count.value + 1.0
        self.h.value = 0.5 * self.h.value + braintrace.matmul(x, self.w.value)
        return self.h.value


def test_state_views_partition_the_model_states():
    model = Counting()
    learner = braintrace.compile(model, "d_rtrl", jnp.ones(2))
    assert set(learner.param_states) == {("w",)}
    assert set(learner.hidden_states) == {("h",)}
    assert set(learner.other_states) == {("count",)}
    assert learner.other_states[("count",)] is model.count
    assert learner.path_to_states == dict(model.states())
    assert learner.state_id_to_path[id(model.h)] == ("h",)
    assert len(learner.state_id_to_path) == 3


def test_vjp_base_class_name():
    assert braintrace.ETraceVjpAlgorithm is braintrace.ETraceAlgorithm
    assert isinstance(braintrace.D_RTRL(Counting()), braintrace.ETraceVjpAlgorithm)
    assert issubclass(braintrace.ES_D_RTRL, braintrace.ETraceVjpAlgorithm)
