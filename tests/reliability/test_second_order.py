"""Item 1: differentiating the online gradient raises instead of returning zeros."""

import brainstate
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import braintrace

from ._helpers import Leaky, assert_unchanged, bptt, online, snapshot, squared

XS = jnp.linspace(-1.0, 1.0, 15).reshape(5, 3)


def fresh():
    model = Leaky()
    return model, braintrace.compile(model, "d_rtrl", XS[0])


def test_grad_of_online_gradient_wrt_input_scale_raises():
    model, learner = fresh()
    before = snapshot(model, learner)

    def summed_gradient(scale):
        grads = online(learner, XS * scale)
        return jnp.sum(grads[("w",)])

    with pytest.raises(braintrace.NotSupportedError, match="second derivative"):
        jax.grad(summed_gradient)(1.0)
    assert_unchanged(before, model, learner)


def test_jacfwd_of_online_gradient_raises():
    model, learner = fresh()
    before = snapshot(model, learner)
    with pytest.raises(braintrace.NotSupportedError, match="jacfwd"):
        jax.jacfwd(lambda s: jnp.sum(online(learner, XS * s)[("w",)]))(1.0)
    assert_unchanged(before, model, learner)


def test_grad_of_step_gradient_wrt_parameter_raises():
    # Reverse over reverse w.r.t. the same ParamState (a Hessian-vector product).
    model, learner = fresh()
    before = snapshot(model, learner)
    weights = {("w",): model.w}

    def grad_norm():
        g = brainstate.transform.grad(lambda: squared(learner(XS[0])), grad_states=weights)()
        return jnp.sum(g[("w",)] ** 2)

    with pytest.raises(braintrace.NotSupportedError, match="not supported"):
        brainstate.transform.grad(grad_norm, grad_states=weights)()
    assert_unchanged(before, model, learner)


def _pure_bptt_gradient(w, xs):
    """``∂/∂W Σ_t |h_t|²`` of ``Leaky`` in plain JAX (an independent oracle)."""

    def loss(w):
        def step(h, x):
            h = 0.8 * h + jnp.tanh(x @ w)
            return h, jnp.sum(h ** 2)

        return jnp.sum(jax.lax.scan(step, jnp.zeros(w.shape[1]), xs)[1])

    return jax.grad(loss)(w)


def test_bptt_second_derivative_is_nonzero_so_zero_would_be_wrong():
    # The case the guard protects: the true derivative is far from zero. The pure oracle's
    # first-order gradient equals the learner's (D-RTRL is exact here).
    model, learner = fresh()
    w = model.w.value
    np.testing.assert_allclose(online(learner, XS)[("w",)], _pure_bptt_gradient(w, XS), rtol=1e-4, atol=1e-6)

    def summed_gradient(scale):
        return jnp.sum(_pure_bptt_gradient(w, XS * scale))

    exact = float(jax.grad(summed_gradient)(1.0))
    step = 1e-2
    fd = (float(summed_gradient(1.0 + step)) - float(summed_gradient(1.0 - step))) / (2 * step)
    np.testing.assert_allclose(exact, fd, rtol=1e-2)
    assert abs(exact) > 1.0
