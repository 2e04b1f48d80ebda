"""Item 2: ``etrace_grad`` checks that ``step_fn`` calls the learner exactly once."""

import jax.numpy as jnp
import pytest

import braintrace

from ._helpers import Leaky, assert_unchanged, snapshot, squared

XS = jnp.linspace(-1.0, 1.0, 15).reshape(5, 3)


def fresh():
    model = Leaky()
    return model, braintrace.compile(model, "d_rtrl", XS[0])


def test_step_fn_calling_the_raw_model_raises():
    # Before: a silent one-step gradient, far from BPTT.
    model, learner = fresh()
    before = snapshot(model, learner)
    with pytest.raises(ValueError, match=r"never called this learner.*ParamDimVjpAlgorithm.*Leaky"):
        learner.etrace_grad(XS, step_fn=lambda x: squared(model(x)))
    assert_unchanged(before, model, learner)


def test_step_fn_calling_another_learner_raises_our_error():
    model, learner = fresh()
    other_model, other = fresh()
    before = snapshot(model, learner, other_model, other)
    with pytest.raises(ValueError, match="never called this learner") as info:
        learner.etrace_grad(XS, step_fn=lambda x: squared(other(x)))
    assert "state trace" not in str(info.value)
    assert_unchanged(before, model, learner, other_model, other)


def test_step_fn_calling_no_learner_raises_our_error():
    model, learner = fresh()
    before = snapshot(model, learner)
    with pytest.raises(ValueError, match="exactly once"):
        learner.etrace_grad(XS, step_fn=lambda x: jnp.sum(x ** 2))
    assert_unchanged(before, model, learner)


def test_step_fn_calling_the_learner_twice_raises():
    model, learner = fresh()
    before = snapshot(model, learner)
    with pytest.raises(ValueError, match="called this learner 2 times"):
        learner.etrace_grad(XS, step_fn=lambda x: squared(learner(x)) + squared(learner(x)))
    assert_unchanged(before, model, learner)


def test_step_fn_calling_the_learner_once_with_aux_works():
    _, learner = fresh()
    grads, aux = learner.etrace_grad(XS, step_fn=lambda x: (squared(learner(x)), jnp.sum(x)), has_aux=True)
    assert grads[("w",)].shape == (3, 4) and aux.shape == (5,)
