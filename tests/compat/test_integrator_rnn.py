"""Research script 1: a tanh RNN learns to integrate a noisy input (D-RTRL and BPTT).

Written the way a braintrace 0.2.8 user writes it: a ``ValinaRNNCell`` with a ``Linear``
readout, ``braintrace.compile(model, 'D_RTRL', x0, batch_size=B)``, ``braintools.optim.Adam``,
``braintools.metric.squared_error``, ``learner.etrace_grad(inputs, targets, step_fn=...,
reduction='sum', return_value=True)`` and ``brainstate.nn.clip_grad_norm`` inside
``brainstate.transform.jit``. The BPTT baseline trains the same layers with
``init_all_states`` + ``for_loop`` + ``brainstate.transform.grad``.
"""

import brainstate
import braintools
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import braintrace

T, B, N = 16, 16, 32
ITERATIONS = 60


class IntegratorRNN(brainstate.nn.Module):
    def __init__(self, n_hidden=N):
        super().__init__()
        self.rnn = braintrace.nn.ValinaRNNCell(in_size=1, out_size=n_hidden, activation='tanh')
        self.out = braintrace.nn.Linear(n_hidden, 1)

    def update(self, x):
        return self.out(self.rnn(x))


def integration_task(key):
    """Inputs ``(T, B, 1)``: a per-sequence drift in [-1, 1] plus noise; target: the running mean."""
    k_mu, k_noise = jax.random.split(key)
    mu = jax.random.uniform(k_mu, (1, B, 1), minval=-1., maxval=1.)
    xs = mu + 0.5 * jax.random.normal(k_noise, (T, B, 1))
    ys = jnp.cumsum(xs, axis=0) / T
    return xs, ys


def mse(pred, target):
    return braintools.metric.squared_error(pred, target).mean()


def evaluate(model, keys):
    """Mean squared error of the model (forward only) over fresh batches."""
    errors = []
    for key in keys:
        xs, ys = integration_task(key)
        brainstate.nn.init_all_states(model, B)
        pred = brainstate.transform.for_loop(model, xs)
        errors.append(float(mse(pred, ys)))
    return float(np.mean(errors))


EVAL_KEYS = list(jax.random.split(jax.random.PRNGKey(123), 2))


@pytest.mark.parametrize("vmap", [False, True], ids=["batched", "vmap"])
def test_integrator_rnn_d_rtrl(vmap, compat_record):
    brainstate.random.seed(0)
    model = IntegratorRNN()
    xs0, _ = integration_task(jax.random.PRNGKey(0))
    learner = braintrace.compile(model, 'D_RTRL', xs0[0], batch_size=B, vmap=vmap)
    opt = braintools.optim.Adam(lr=1e-2)
    opt.register_trainable_weights(model.states(brainstate.ParamState))

    @brainstate.transform.jit
    def train_step(key):
        xs, ys = integration_task(key)
        brainstate.nn.reset_all_states(learner, B)
        grads, losses = learner.etrace_grad(
            xs, ys, step_fn=lambda x, y: mse(learner(x), y), reduction='sum', return_value=True)
        grads = brainstate.nn.clip_grad_norm(grads, 1.0)
        opt.update(grads)
        return losses.mean()

    before = evaluate(model, EVAL_KEYS)
    train_losses = [float(train_step(k)) for k in jax.random.split(jax.random.PRNGKey(1), ITERATIONS)]
    after = evaluate(model, EVAL_KEYS)
    compat_record("vmap" if vmap else "batched", before, after,
                  train_first=train_losses[0], train_last=train_losses[-1])
    assert np.all(np.isfinite(train_losses))
    # Predicting zero costs E[y^2] (about 0.15 here); the trained RNN must do far better.
    assert after < 0.2 * before, (before, after)
    assert np.mean(train_losses[-5:]) < 0.4 * np.mean(train_losses[:5])


def test_integrator_rnn_bptt_baseline(compat_record):
    brainstate.random.seed(0)
    model = IntegratorRNN()
    brainstate.nn.init_all_states(model, B)
    weights = model.states(brainstate.ParamState)
    opt = braintools.optim.Adam(lr=1e-2)
    opt.register_trainable_weights(weights)

    @brainstate.transform.jit
    def train_step(key):
        xs, ys = integration_task(key)
        brainstate.nn.init_all_states(model, B)

        def loss_fn():
            pred = brainstate.transform.for_loop(model, xs)
            return mse(pred, ys)

        grads, loss = brainstate.transform.grad(loss_fn, grad_states=weights, return_value=True)()
        grads = brainstate.nn.clip_grad_norm(grads, 1.0)
        opt.update(grads)
        return loss

    before = evaluate(model, EVAL_KEYS)
    train_losses = [float(train_step(k)) for k in jax.random.split(jax.random.PRNGKey(1), ITERATIONS)]
    after = evaluate(model, EVAL_KEYS)
    compat_record("bptt", before, after, train_first=train_losses[0], train_last=train_losses[-1])
    assert np.all(np.isfinite(train_losses))
    assert after < 0.2 * before, (before, after)
