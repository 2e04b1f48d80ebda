"""Item 8: learner inputs are checked against the compiled example inputs; keywords work."""

import brainstate
import jax.numpy as jnp
import numpy as np
import pytest

import braintrace

from ._helpers import Leaky, assert_unchanged, snapshot

XB = jnp.linspace(-1.0, 1.0, 12).reshape(4, 3)


class TwoInputs(Leaky):
    def update(self, x, gain):
        self.h.value = 0.8 * self.h.value + gain * jnp.tanh(braintrace.matmul(x, self.w.value))
        return self.h.value


def batched(vmap=False):
    model = Leaky()
    return model, braintrace.compile(model, "d_rtrl", XB, batch_size=4, vmap=vmap)


def test_wrong_batch_size_names_the_input_and_both_shapes():
    model, learner = batched()
    before = snapshot(model, learner)
    with pytest.raises(ValueError, match=r"input of `Leaky.update` has shape \(8, 3\); the learner was "
                                         r"compiled for \(4, 3\).*batch_size"):
        learner(jnp.ones((8, 3)))
    assert_unchanged(before, model, learner)


def test_wrong_feature_size_names_the_input():
    model, learner = batched()
    before = snapshot(model, learner)
    with pytest.raises(ValueError, match=r"shape \(4, 5\); the learner was compiled for \(4, 3\).*feature"):
        learner(jnp.ones((4, 5)))
    assert_unchanged(before, model, learner)


def test_wrong_lane_count_in_vmap_mode():
    model, learner = batched(vmap=True)
    before = snapshot(model, learner)
    with pytest.raises(ValueError, match=r"shape \(2, 3\); the learner was compiled for \(4, 3\) \(lane axis first\)"):
        learner(jnp.ones((2, 3)))
    assert_unchanged(before, model, learner)


def test_wrong_number_of_inputs_and_wrong_dtype_kind():
    model = TwoInputs()
    learner = braintrace.compile(model, "d_rtrl", XB[0], jnp.float32(1.0))
    before = snapshot(model, learner)
    with pytest.raises(TypeError, match="tree structure"):
        learner(XB[0])
    with pytest.raises(TypeError, match=r"do not match the signature of `TwoInputs.update`.*extra"):
        learner(XB[0], gain=1.0, extra=1)
    assert_unchanged(before, model, learner)


def test_float_input_to_an_integer_slot_raises_and_integer_to_float_is_cast():
    model = TwoInputs()
    learner = braintrace.compile(model, "d_rtrl", XB[0], jnp.int32(2))
    before = snapshot(model, learner)
    with pytest.raises(TypeError, match=r"input leaf 1 of `TwoInputs.update` has dtype float32; the learner was "
                                        r"compiled for int32"):
        learner(XB[0], jnp.float32(2.0))
    assert_unchanged(before, model, learner)
    learner(XB[0].astype(jnp.int32), 2)  # int -> float32 for x, Python int for gain: same kind, cast


def test_keyword_inputs_bind_to_update_parameters():
    outs = []
    for call in (lambda l: l(XB[0], 0.5), lambda l: l(XB[0], gain=0.5), lambda l: l(gain=0.5, x=XB[0])):
        model = TwoInputs()
        learner = braintrace.compile(model, "d_rtrl", XB[0], jnp.float32(1.0))
        outs.append(np.asarray(call(learner)))
    np.testing.assert_array_equal(outs[0], outs[1])
    np.testing.assert_array_equal(outs[0], outs[2])
    assert float(np.max(np.abs(outs[0]))) > 0.1


def test_keyword_inputs_in_etrace_grad_step_fn():
    model = TwoInputs()
    learner = braintrace.compile(model, "d_rtrl", XB[0], jnp.float32(1.0))
    by_kw = learner.etrace_grad(XB, step_fn=lambda x: jnp.sum(learner(x=x, gain=0.5) ** 2))
    brainstate.nn.init_all_states(model)
    learner.reset_state()
    by_pos = learner.etrace_grad(XB, step_fn=lambda x: jnp.sum(learner(x, 0.5) ** 2))
    np.testing.assert_allclose(by_kw[("w",)], by_pos[("w",)], rtol=1e-6)
