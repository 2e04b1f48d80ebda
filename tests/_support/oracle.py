"""The BPTT oracle and gradient comparison helpers."""

import brainstate
import jax
import jax.numpy as jnp
import numpy as np


def squared_loss(y):
    return jnp.sum(y ** 2)


def snapshot_states(model):
    return {path: st.value for path, st in model.states().items() if not isinstance(st, brainstate.ParamState)}


def restore_states(model, snapshot):
    states = model.states()
    for path, value in snapshot.items():
        states[path].value = value


def bptt_grads(model, xs, loss_fn=squared_loss):
    """``jax.grad`` of ``Σ_t loss(model(x_t))`` through the unrolled sequence (true BPTT).

    The model's non-parameter states are restored afterwards.
    """
    snap = snapshot_states(model)
    params = dict(model.states(brainstate.ParamState))

    def total():
        losses = brainstate.transform.for_loop(lambda x: loss_fn(model(x)), xs)
        return jnp.sum(losses)

    grads = brainstate.transform.grad(total, grad_states=params)()
    restore_states(model, snap)
    return grads


def online_grads(learner, xs, loss_fn=squared_loss):
    return learner.etrace_grad(xs, step_fn=lambda x: loss_fn(learner(x)), reduction="sum")


def windowed_grads(learner, xs, window, step_fn=None, **kwargs):
    """Jitted ``etrace_grad`` with ``gradient_window=window`` from reset states (restored after).

    ``step_fn`` defaults to ``squared_loss(learner(x))``; ``kwargs`` go to ``etrace_grad``.
    """
    snap = snapshot_states(learner.model)
    learner.reset_state()
    step_fn = step_fn or (lambda x: squared_loss(learner(x)))
    out = brainstate.transform.jit(lambda xs: learner.etrace_grad(
        xs, step_fn=step_fn, reduction="sum", gradient_window=window, **kwargs))(xs)
    restore_states(learner.model, snap)
    return out


def flat(grads):
    return {path: np.concatenate([np.ravel(np.asarray(leaf)) for leaf in jax.tree.leaves(g)]) for path, g in grads.items()}


def cosine(a, b):
    a, b = np.ravel(a), np.ravel(b)
    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-30))


def assert_grads_close(expected, actual, rtol=1e-4, atol=1e-5, paths=None):
    e, a = flat(expected), flat(actual)
    for path in paths or e:
        np.testing.assert_allclose(a[path], e[path], rtol=rtol, atol=atol, err_msg=f"gradient of {path}")
