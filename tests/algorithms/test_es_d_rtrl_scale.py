"""ES-D-RTRL's scale is pinned by a hand-written reference of the factorised recursion.

The cosine tests in ``test_approximation.py`` only see the gradient's direction. Here a
three-step run of :class:`tests._support.models.LeakyRNN` is recomputed in plain JAX with

* the input trace ``x̄_t = α x̄_{t-1} + x_t`` (no ``(1 - α)``),
* the output trace ``ε_f,t = α D_t ε_f,t-1 + (1 - α) ∂h_t/∂y_t``,
* the bias correction ``1 - α^(k+1)`` after ``k`` earlier steps,
* ``∇W = Σ_t x̄_tᵀ s_t`` and ``∇b = Σ_t Σ_batch s_t`` with ``s_t = ε_f,t ⊙ ∂L_t/∂h_t / (1 - α^(t+1))``,

and the learner's gradient must equal it to round-off. Changing the correction exponent or
dropping the ``(1 - α)`` factor in the library changes ``∇W`` by far more than the tolerance.
"""

import brainstate
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import braintrace
from tests._support import models
from tests._support.oracle import online_grads


def reference_grads(params, xs, alpha, correction_power=1, output_factor=True):
    """Plain-JAX ES-D-RTRL gradients of ``Σ_t Σ (h_t W_o + b_o)²`` for ``LeakyRNN``.

    ``correction_power`` and ``output_factor`` give the two plausible slips (bias correction
    ``1 - α^(k+2)``, output trace without ``(1 - α)``); the defaults are the right recursion.
    """
    w, b, tau, w_out, b_out = (params[k] for k in ("W", "b", "tau", "W_out", "b_out"))
    decay = jax.nn.sigmoid(tau)                       # D_t = ∂h_t/∂h_{t-1}, per position
    batch, n_hidden = xs.shape[1], w.shape[1]
    h = jnp.zeros((batch, n_hidden))
    x_bar = jnp.zeros_like(xs[0])
    eps_f = jnp.zeros((batch, n_hidden))
    eps_tau = jnp.zeros((batch, n_hidden))            # element-wise op: exact D-RTRL trace
    g = {k: jnp.zeros_like(v) for k, v in params.items()}
    for k, x in enumerate(xs):
        y = x @ w + b
        h_old = h
        h = decay * h_old + jnp.tanh(y)
        out = h @ w_out + b_out
        signal = 2.0 * out @ w_out.T                  # ∂L_k/∂h_k
        df = 1.0 - jnp.tanh(y) ** 2                   # ∂h_k/∂y_k
        x_bar = alpha * x_bar + x
        eps_f = alpha * decay * eps_f + ((1.0 - alpha) if output_factor else 1.0) * df
        s = eps_f * signal / (1.0 - alpha ** (k + correction_power))
        g["W"] = g["W"] + x_bar.T @ s
        g["b"] = g["b"] + s.sum(0)
        eps_tau = decay * eps_tau + h_old
        g["tau"] = g["tau"] + jnp.sum(eps_tau * signal, 0) * decay * (1.0 - decay)
        g["W_out"] = g["W_out"] + h.T @ (2.0 * out)
        g["b_out"] = g["b_out"] + (2.0 * out).sum(0)
    return g


def setup(alpha, steps=3, batch=2, seed=0):
    brainstate.random.seed(seed)
    model = models.LeakyRNN(n_in=3, n_hidden=5, n_out=2)
    brainstate.nn.init_all_states(model, batch)
    xs = brainstate.random.randn(steps, batch, 3)
    params = {
        "W": model.W.weight.value["weight"], "b": model.W.weight.value["bias"], "tau": model.tau.value,
        "W_out": model.out.weight.value["weight"], "b_out": model.out.weight.value["bias"],
    }
    learner = braintrace.ES_D_RTRL(model, decay_or_rank=alpha)
    learner.compile_graph(xs[0])
    got = online_grads(learner, xs)
    actual = {
        "W": got[("W", "weight")]["weight"], "b": got[("W", "weight")]["bias"], "tau": got[("tau",)],
        "W_out": got[("out", "weight")]["weight"], "b_out": got[("out", "weight")]["bias"],
    }
    return params, xs, actual


@pytest.mark.parametrize("alpha", [0.6, 0.9])
def test_three_steps_equal_hand_written_recursion(alpha):
    params, xs, actual = setup(alpha)
    expected = reference_grads(params, xs, alpha)
    for name in expected:
        assert float(jnp.linalg.norm(expected[name])) > 1e-2, f"{name}: the reference gradient must be live"
        np.testing.assert_allclose(actual[name], expected[name], rtol=1e-5, atol=1e-6, err_msg=name)


@pytest.mark.parametrize("slip", [dict(correction_power=2), dict(output_factor=False)])
def test_learner_is_far_from_the_wrong_scales(slip):
    """The learner's ∇W and ∇b differ from each slipped recursion by more than 5 %."""
    alpha = 0.6
    params, xs, actual = setup(alpha)
    wrong = reference_grads(params, xs, alpha, **slip)
    for name in ("W", "b"):
        rel = float(jnp.linalg.norm(actual[name] - wrong[name]) / jnp.linalg.norm(wrong[name]))
        assert rel > 0.05, (name, rel)


@pytest.mark.parametrize("window", [1, 4, 5])
def test_gru_equals_hand_written_es_d_rtrl(window):
    """The benchmark GRU's learner gradient equals ``benchmarks.handwritten``'s plain-JAX recursion.

    That reference writes out the GRU's two traced gates (``x̄``, ``ε_f`` with the diagonal
    Jacobian ``1 - z``, the bias correction), the reset gate's same-step gradient through
    ``W_h`` and the readout's, so the factored windows (``window`` 4: three windows; 5: two and
    a remainder of 2; 1: per step) are pinned against an independent computation, not only
    against each other. The pairs are 20 + 24 wide, so they really stack.
    """
    from benchmarks._common import Readout, loss_fn
    from benchmarks.handwritten import gru_es_d_rtrl, gru_params, learner_grads_by_name

    alpha, batch, n_in = 0.8, 3, 20
    brainstate.random.seed(1)
    model = Readout("gru", n_in, 24, 2)
    brainstate.nn.init_all_states(model, batch)
    params = gru_params(model)
    with pytest.warns(UserWarning, match="relation_excluded_weight_to_weight"):  # the reset gate
        learner = braintrace.compile(model, "es_d_rtrl", jnp.zeros((batch, n_in)), batch_size=batch,
                                     decay_or_rank=alpha)
    xs = jax.random.normal(jax.random.PRNGKey(2), (12, batch, n_in))
    got = learner_grads_by_name(learner.etrace_grad(xs, step_fn=lambda x: loss_fn(learner(x)),
                                                    gradient_window=window, reduction="sum"))
    expected = gru_es_d_rtrl(params, xs, alpha, window=4)
    for name, pair in expected.items():
        for label, want, have in zip(("weight", "bias"), pair, got[name], strict=True):
            assert float(jnp.linalg.norm(want)) > 1e-3, f"{name}.{label}: the reference gradient must be live"
            np.testing.assert_allclose(have, want, rtol=2e-5, atol=2e-6, err_msg=f"{name}.{label}")
