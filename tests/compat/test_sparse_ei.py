"""Research script 6: a sparse excitatory/inhibitory rate network trained online.

The recurrent (and input) connectivity is a random ``brainunit.sparse.CSR`` with 20 %
connection probability; rows of excitatory units carry positive weights, rows of inhibitory
units negative ones (80 % E / 20 % I). It is wrapped in ``braintrace.nn.SparseLinear``, so
only the ``nnz`` stored values are parameters and their traces cost ``O(nnz)``. The rates are
``relu`` of a leaky membrane; a ``braintrace.nn.Linear`` reads out which of two noisy input
channels is stronger. ``braintools.optim.Adam``, D-RTRL, batched and ``vmap=True``.
"""

import brainstate
import braintools
import brainunit as u
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import braintrace

T, B, N_IN, N = 20, 16, 2, 40
N_E = int(0.8 * N)
ITERATIONS = 40


def ei_connectivity(key, p=0.2):
    """CSR ``(N_IN + N, N)``: random sparse pattern, E rows >= 0, I rows <= 0, inputs signed."""
    k_mask, k_w, k_in = jax.random.split(key, 3)
    n_pre = N_IN + N
    mask = jax.random.bernoulli(k_mask, p, (n_pre, N))
    magnitude = jnp.abs(jax.random.normal(k_w, (n_pre, N))) / jnp.sqrt(p * n_pre)
    sign_rec = jnp.where(jnp.arange(N) < N_E, 1.0, -N_E / (N - N_E))      # balanced E/I
    sign_in = jnp.where(jax.random.bernoulli(k_in, 0.5, (N_IN,)), 1.0, -1.0) * 3.0
    sign = jnp.concatenate([sign_in, sign_rec])[:, None]
    dense = jnp.where(mask, magnitude * sign, 0.0)
    return u.sparse.CSR.fromdense(dense), np.asarray(sign[:, 0])


class SparseEINet(brainstate.nn.Module):
    def __init__(self, key):
        super().__init__()
        csr, self.pre_sign = ei_connectivity(key)
        self.rec = braintrace.nn.SparseLinear(csr, b_init=braintools.init.ZeroInit())
        self.readout = braintrace.nn.Linear(N, 2)

    def init_state(self, batch_size=None, **kwargs):
        self.v = brainstate.HiddenState(braintools.init.param(braintools.init.ZeroInit(), N, batch_size))

    def update(self, x):
        rates = jax.nn.relu(self.v.value)
        self.v.value = 0.8 * self.v.value + 0.2 * self.rec(jnp.concatenate([x, rates], axis=-1))
        return self.readout(jax.nn.relu(self.v.value))


def two_channel_task(key):
    """Inputs ``(T, B, 2)``: channel means 0.7 and 0.3 under noise 0.5; label = stronger one."""
    k_label, k_noise = jax.random.split(key)
    labels = jax.random.bernoulli(k_label, 0.5, (B,)).astype(jnp.int32)
    means = jnp.where(jax.nn.one_hot(labels, 2) > 0, 0.7, 0.3)
    xs = means[None] + 0.5 * jax.random.normal(k_noise, (T, B, 2))
    return xs, labels


def ce(logits, labels):
    return braintools.metric.softmax_cross_entropy_with_integer_labels(logits, labels).mean()


@pytest.mark.parametrize("vmap", [False, True], ids=["batched", "vmap"])
def test_sparse_ei_network(vmap, compat_record):
    brainstate.random.seed(0)
    model = SparseEINet(jax.random.PRNGKey(7))
    nnz = model.rec.weight.value['weight'].shape[0]
    xs0, _ = two_channel_task(jax.random.PRNGKey(0))
    learner = braintrace.compile(model, 'D_RTRL', xs0[0], batch_size=B, vmap=vmap)
    opt = braintools.optim.Adam(lr=1e-2)
    opt.register_trainable_weights(model.states(brainstate.ParamState))
    mask = (jnp.arange(T) >= T // 2).astype(jnp.float32)

    def run(key, train):
        xs, labels = two_channel_task(key)
        brainstate.nn.reset_all_states(learner, B)

        def step(x):
            logits = learner(x)
            return ce(logits, labels), jnp.mean(jnp.argmax(logits, -1) == labels)

        grads, losses, accs = learner.etrace_grad(xs, step_fn=step, mask=mask, reduction='sum',
                                                  return_value=True, has_aux=True)
        if train:
            opt.update(brainstate.nn.clip_grad_norm(grads, 1.0))
        window = jnp.sum(mask)
        return jnp.sum(losses * mask) / window, jnp.sum(accs * mask) / window, grads

    train_step = brainstate.transform.jit(lambda key: run(key, True)[:2])
    eval_step = brainstate.transform.jit(lambda key: run(key, False))
    eval_keys = jax.random.split(jax.random.PRNGKey(99), 3)

    def evaluate():
        return np.array([[float(v) for v in eval_step(k)[:2]] for k in eval_keys]).mean(0)

    sparse_grad = eval_step(eval_keys[0])[2][('rec', 'weight')]
    assert sparse_grad['weight'].shape == (nnz,)              # one gradient per stored synapse
    assert float(jnp.linalg.norm(sparse_grad['weight'])) > 1e-4
    values_before = np.asarray(model.rec.weight.value['weight'])
    before, acc_before = evaluate()
    history = [float(train_step(k)[0]) for k in jax.random.split(jax.random.PRNGKey(1), ITERATIONS)]
    after, acc_after = evaluate()
    values_after = np.asarray(model.rec.weight.value['weight'])
    flipped = float(np.mean(np.sign(values_after) != np.sign(values_before)))
    compat_record("vmap" if vmap else "batched", float(before), float(after), acc_before=float(acc_before),
                  acc_after=float(acc_after), nnz=nnz, sign_flips=flipped)
    assert np.all(np.isfinite(history))
    assert after < 0.4 * before, (before, after)
    assert acc_after >= 0.8, acc_after
