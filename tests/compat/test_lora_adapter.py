"""Research script 4: a LoRA adapter on a frozen recurrent network, trained online.

A tanh RNN whose recurrent/input projection is a frozen ``braintrace.nn.Linear`` (the
"pretrained" base) wrapped by ``braintrace.nn.LoRA(in_features, lora_rank, out_features,
base_module=base)``. Only the adapter factors are registered with ``braintools.optim.Adam``;
the base and the readout stay fixed. D-RTRL gradients, batched and ``vmap=True``.
"""

import brainstate
import braintools
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import braintrace

T, B, N, RANK = 16, 16, 32, 4
ITERATIONS = 50


class AdaptedRNN(brainstate.nn.Module):
    def __init__(self, n_in=1, n_hidden=N, rank=RANK):
        super().__init__()
        self.n_hidden = n_hidden
        base = braintrace.nn.Linear(n_in + n_hidden, n_hidden, w_init=braintools.init.XavierNormal())
        self.lora = braintrace.nn.LoRA(n_in + n_hidden, rank, n_hidden, base_module=base)
        self.readout = braintrace.nn.Linear(n_hidden, 1)

    def init_state(self, batch_size=None, **kwargs):
        self.h = brainstate.HiddenState(braintools.init.param(braintools.init.ZeroInit(), self.n_hidden, batch_size))

    def update(self, x):
        self.h.value = jnp.tanh(self.lora(jnp.concatenate([x, self.h.value], axis=-1)))
        return self.readout(self.h.value)


def integration_task(key):
    k_mu, k_noise = jax.random.split(key)
    mu = jax.random.uniform(k_mu, (1, B, 1), minval=-1., maxval=1.)
    xs = mu + 0.5 * jax.random.normal(k_noise, (T, B, 1))
    return xs, jnp.cumsum(xs, axis=0) / T


def mse(pred, target):
    return braintools.metric.squared_error(pred, target).mean()


@pytest.mark.parametrize("vmap", [False, True], ids=["batched", "vmap"])
def test_lora_adapter_online(vmap, compat_record):
    brainstate.random.seed(0)
    model = AdaptedRNN()
    xs0, _ = integration_task(jax.random.PRNGKey(0))
    learner = braintrace.compile(model, 'D_RTRL', xs0[0], batch_size=B, vmap=vmap)
    params = model.states(brainstate.ParamState)
    adapter = {path: st for path, st in params.items() if path[0] == 'lora' and path[1] == 'weight'}
    assert len(adapter) == 1 and len(params) == 3      # lora factors, frozen base, frozen readout
    frozen_before = {path: jax.tree.map(np.asarray, st.value) for path, st in params.items() if path not in adapter}
    opt = braintools.optim.Adam(lr=1e-2)
    opt.register_trainable_weights(adapter)

    def run(key, train):
        xs, ys = integration_task(key)
        brainstate.nn.reset_all_states(learner, B)
        grads, losses = learner.etrace_grad(xs, ys, step_fn=lambda x, y: mse(learner(x), y),
                                            reduction='sum', return_value=True)
        if train:
            opt.update(brainstate.nn.clip_grad_norm({path: grads[path] for path in adapter}, 1.0))
        return losses.mean()

    train_step = brainstate.transform.jit(lambda key: run(key, True))
    eval_step = brainstate.transform.jit(lambda key: run(key, False))
    eval_keys = jax.random.split(jax.random.PRNGKey(123), 3)
    before = float(np.mean([eval_step(k) for k in eval_keys]))
    history = [float(train_step(k)) for k in jax.random.split(jax.random.PRNGKey(1), ITERATIONS)]
    after = float(np.mean([eval_step(k) for k in eval_keys]))
    lora_a = np.asarray(model.lora.weight.value['lora_a'])
    compat_record("vmap" if vmap else "batched", before, after, lora_a_norm=float(np.linalg.norm(lora_a)))
    assert np.all(np.isfinite(history))
    assert after < 0.5 * before, (before, after)
    # The adapter moved away from its zero start; the frozen weights did not move at all.
    assert np.linalg.norm(lora_a) > 0.1
    for path, value in frozen_before.items():
        jax.tree.map(np.testing.assert_array_equal, value, jax.tree.map(np.asarray, params[path].value))
