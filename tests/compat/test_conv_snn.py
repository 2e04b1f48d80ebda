"""Research script 3: a convolutional spiking network classifies small rate-coded images.

``braintrace.nn.Conv2d`` (channel-last, weights in ``u.mA``) drives a grid of
``brainpy.state.LIF`` neurons of shape ``(H, W, C)``; a ``braintrace.nn.LeakyRateReadout``
reads the flattened spikes. Each image (a vertical or a horizontal bar in noise) is shown for
``T`` steps as Bernoulli spikes. Trained online with D-RTRL, batched and ``vmap=True``.
"""

import brainpy
import brainstate
import braintools
import brainunit as u
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import braintrace

T, B, H, W, C = 10, 16, 8, 8, 8
ITERATIONS = 40


class ConvSNN(brainstate.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = braintrace.nn.Conv2d((H, W, 1), C, kernel_size=3,
                                         w_init=braintools.init.XavierNormal(scale=30.0, unit=u.mA),
                                         b_init=braintools.init.ZeroInit(unit=u.mA))
        self.neu = brainpy.state.LIF(self.conv.out_size, tau=5. * u.ms, V_th=1. * u.mV,
                                     spk_fun=braintools.surrogate.ReluGrad())
        self.out = braintrace.nn.LeakyRateReadout(H * W * C, 2, tau=5. * u.ms,
                                                  w_init=braintools.init.KaimingNormal())

    def update(self, image_spikes):
        spk = self.neu(self.conv(image_spikes))
        return self.out(spk.reshape(spk.shape[:-3] + (-1,)))


def bar_images(key):
    """Rate-coded spikes ``(T, B, H, W, 1)`` and labels: 0 = vertical bar, 1 = horizontal bar."""
    k_label, k_pos, k_spk = jax.random.split(key, 3)
    labels = jax.random.bernoulli(k_label, 0.5, (B,)).astype(jnp.int32)
    pos = jax.random.randint(k_pos, (B,), 1, H - 1)
    cols = jnp.arange(W)[None, None, :] == pos[:, None, None]
    rows = jnp.arange(H)[None, :, None] == pos[:, None, None]
    bar = jnp.where(labels[:, None, None] == 0, cols, rows)
    rates = jnp.where(bar, 0.8, 0.1)[..., None]
    spikes = jax.random.bernoulli(k_spk, rates, (T, B, H, W, 1)).astype(jnp.float32)
    return spikes, labels


def ce(logits, labels):
    return braintools.metric.softmax_cross_entropy_with_integer_labels(logits, labels).mean()


@pytest.mark.parametrize("vmap", [False, True], ids=["batched", "vmap"])
def test_conv_snn_d_rtrl(vmap, compat_record):
    with brainstate.environ.context(dt=1.0 * u.ms):
        brainstate.random.seed(0)
        model = ConvSNN()
        xs0, _ = bar_images(jax.random.PRNGKey(0))
        learner = braintrace.compile(model, 'D_RTRL', xs0[0], batch_size=B, vmap=vmap)
        opt = braintools.optim.Adam(lr=1e-2)
        opt.register_trainable_weights(model.states(brainstate.ParamState))
        mask = (jnp.arange(T) >= T // 2).astype(jnp.float32)

        def run(key, train):
            xs, labels = bar_images(key)
            brainstate.nn.reset_all_states(learner, B)

            def step(x):
                logits = learner(x)
                return ce(logits, labels), jnp.mean(jnp.argmax(logits, -1) == labels)

            grads, losses, accs = learner.etrace_grad(xs, step_fn=step, mask=mask, reduction='sum',
                                                      return_value=True, has_aux=True)
            if train:
                opt.update(brainstate.nn.clip_grad_norm(grads, 1.0))
            window = jnp.sum(mask)
            return jnp.sum(losses * mask) / window, jnp.sum(accs * mask) / window

        train_step = brainstate.transform.jit(lambda key: run(key, True))
        eval_step = brainstate.transform.jit(lambda key: run(key, False))
        eval_keys = jax.random.split(jax.random.PRNGKey(99), 3)

        def evaluate():
            return np.array([[float(v) for v in eval_step(k)] for k in eval_keys]).mean(0)

        before, acc_before = evaluate()
        history = [float(train_step(k)[0]) for k in jax.random.split(jax.random.PRNGKey(1), ITERATIONS)]
        after, acc_after = evaluate()
        rate = float(jnp.mean(model.neu.get_spike()))
    compat_record("vmap" if vmap else "batched", float(before), float(after),
                  acc_before=float(acc_before), acc_after=float(acc_after), last_rate=rate)
    assert np.all(np.isfinite(history))
    assert after < 0.4 * before, (before, after)
    assert acc_after >= 0.9, acc_after
