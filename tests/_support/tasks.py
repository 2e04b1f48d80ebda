"""A small evidence-accumulation task and a short training loop for the learning-rule tests."""

import brainstate
import jax
import jax.numpy as jnp
import numpy as np
import optax

import braintrace
from tests._support import models


def evidence_task(key, batch, length):
    """Sign of the sum of noisy evidence, reported at every step from the midpoint on.

    Returns ``xs (T, B, 1)``, ``target (T, B)`` and ``mask (T,)``.
    """
    k1, k2 = jax.random.split(key)
    sign = jnp.where(jax.random.bernoulli(k1, 0.5, (batch,)), 1.0, -1.0)
    xs = sign[None, :, None] * 0.3 + jax.random.normal(k2, (length, batch, 1))
    target = jnp.broadcast_to(sign[None, :], (length, batch))
    mask = (jnp.arange(length) >= length // 2).astype(jnp.float32)
    return xs, target, mask


def task_loss(out, y):
    """Per-step loss of the readout ``out (B, 1)`` against ``y (B,)``."""
    return jnp.mean((out[:, 0] - y) ** 2)


def train(algorithm, steps=40, batch=16, length=12, n_hidden=8, lr=3e-2, step_fn_factory=None, **options):
    """Adam on a GRU with a linear readout; returns (mean loss of the first 5, of the last 5 steps).

    ``step_fn_factory(learner, model)`` may return a custom ``step_fn(x, y, m)`` (``m`` is the
    step's mask value); by default it is the masked mean squared error of the readout.
    """
    brainstate.random.seed(0)
    model = models.gru(1, n_hidden, 1)
    learner = braintrace.compile(model, algorithm, jnp.zeros((batch, 1)), batch_size=batch, **options)
    params = dict(model.states(brainstate.ParamState))
    opt = optax.adam(lr)
    opt_state = opt.init({p: st.value for p, st in params.items()})
    if step_fn_factory is None:
        step_fn = lambda x, y, m: m * task_loss(learner(x), y)  # noqa: E731
    else:
        step_fn = step_fn_factory(learner, model)

    @brainstate.transform.jit
    def step(key):
        xs, target, mask = evidence_task(key, batch, length)
        for st in model.states(brainstate.HiddenState).values():
            st.value = jnp.zeros_like(st.value)
        learner.reset_state()
        grads, losses = learner.etrace_grad(xs, target, mask, step_fn=step_fn, return_value=True)
        return grads, jnp.sum(losses) / mask.sum()  # step_fn returns the masked loss

    losses = []
    for i in range(steps):
        grads, loss = step(jax.random.PRNGKey(i))
        updates, opt_state = opt.update(grads, opt_state)
        new = optax.apply_updates({p: st.value for p, st in params.items()}, updates)
        for p, st in params.items():
            st.value = new[p]
        losses.append(float(loss))
    return float(np.mean(losses[:5])), float(np.mean(losses[-5:]))
