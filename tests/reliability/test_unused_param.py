"""Item 4: a ParamState the step never reads gets an exact zero gradient."""

import brainstate
import jax.numpy as jnp
import numpy as np

import braintrace
from braintrace import DiagnosticKind as K

from ._helpers import Leaky, bptt, online

XS = jnp.linspace(-1.0, 1.0, 18).reshape(6, 3)


class WithSpare(Leaky):
    def __init__(self):
        super().__init__()
        self.spare = brainstate.ParamState({"a": jnp.ones(4), "b": jnp.ones((2, 2), jnp.float32)})


def test_unused_param_state_gets_zero_and_used_one_matches_bptt():
    model = WithSpare()
    learner = braintrace.compile(model, "d_rtrl", XS[0])
    assert [r.message for r in learner.graph.explain(kind=K.STATE_MISMATCH)] == [
        "State `spare` is not used by the step; it is ignored."]
    expected = bptt(model, XS, paths={("w",)})
    grads = online(learner, XS)
    assert set(grads) == {("w",), ("spare",)}
    np.testing.assert_allclose(grads[("w",)], expected[("w",)], rtol=1e-4, atol=1e-6)
    assert float(jnp.max(jnp.abs(expected[("w",)]))) > 0.1
    np.testing.assert_array_equal(grads[("spare",)]["a"], np.zeros(4))
    np.testing.assert_array_equal(grads[("spare",)]["b"], np.zeros((2, 2)))


def test_unused_param_state_es_d_rtrl_and_mean_reduction():
    model = WithSpare()
    learner = braintrace.compile(model, "es_d_rtrl", XS[0])
    grads = learner.etrace_grad(XS, step_fn=lambda x: jnp.sum(learner(x) ** 2))
    assert grads[("spare",)]["a"].shape == (4,) and float(jnp.sum(jnp.abs(grads[("spare",)]["a"]))) == 0.0
