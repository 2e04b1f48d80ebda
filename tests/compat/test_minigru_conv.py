"""Research script 5: a MiniGRU accumulates evidence from Conv1d features of noisy frames.

Every time step shows a noisy 1-D frame (length ``L``, one channel, channel-last) holding a
weak rising or falling ramp. ``braintrace.nn.Conv1d`` extracts features, a
``braintrace.nn.MiniGRU`` integrates them over time and a ``braintrace.nn.Linear`` reads the
class out. Trained online (D-RTRL), batched and ``vmap=True``.
"""

import brainstate
import braintools
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import braintrace

T, B, L, C, N = 12, 16, 16, 4, 32
ITERATIONS = 40


class ConvMiniGRU(brainstate.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = braintrace.nn.Conv1d((L, 1), C, kernel_size=3, b_init=braintools.init.ZeroInit())
        self.rnn = braintrace.nn.MiniGRU(L * C, N)
        self.readout = braintrace.nn.Linear(N, 2)

    def update(self, frame):
        features = jax.nn.relu(self.conv(frame))
        return self.readout(self.rnn(features.reshape(features.shape[:-2] + (-1,))))


def ramp_frames(key):
    """Frames ``(T, B, L, 1)``: a ±0.6-amplitude ramp under unit noise; label 1 = rising."""
    k_label, k_noise = jax.random.split(key)
    labels = jax.random.bernoulli(k_label, 0.5, (B,)).astype(jnp.int32)
    ramp = jnp.linspace(-0.6, 0.6, L)
    signal = jnp.where(labels[:, None] == 1, ramp[None], -ramp[None])
    frames = signal[None, :, :, None] + jax.random.normal(k_noise, (T, B, L, 1))
    return frames, labels


def ce(logits, labels):
    return braintools.metric.softmax_cross_entropy_with_integer_labels(logits, labels).mean()


@pytest.mark.parametrize("vmap", [False, True], ids=["batched", "vmap"])
def test_minigru_over_conv_features(vmap, compat_record):
    brainstate.random.seed(0)
    model = ConvMiniGRU()
    xs0, _ = ramp_frames(jax.random.PRNGKey(0))
    # The conv output reaches the hidden state only through the MiniGRU's own projections, so
    # the compiler says it trains the kernel from its exact same-step gradient only.
    with pytest.warns(UserWarning, match=r"relation_excluded_weight_to_weight \(weight conv\.weight\)"):
        learner = braintrace.compile(model, 'D_RTRL', xs0[0], batch_size=B, vmap=vmap)
    opt = braintools.optim.Adam(lr=5e-3)
    opt.register_trainable_weights(model.states(brainstate.ParamState))
    mask = (jnp.arange(T) >= T // 2).astype(jnp.float32)

    def run(key, train):
        xs, labels = ramp_frames(key)
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

    conv_grad = eval_step(eval_keys[0])[2][('conv', 'weight')]['weight']
    before, acc_before = evaluate()
    history = [float(train_step(k)[0]) for k in jax.random.split(jax.random.PRNGKey(1), ITERATIONS)]
    after, acc_after = evaluate()
    compat_record("vmap" if vmap else "batched", float(before), float(after), acc_before=float(acc_before),
                  acc_after=float(acc_after), conv_grad_norm=float(jnp.linalg.norm(conv_grad)))
    # The conv kernel still gets its (same-step) gradient, not a silent zero.
    assert float(jnp.linalg.norm(conv_grad)) > 1e-3
    assert np.all(np.isfinite(history))
    assert after < 0.2 * before, (before, after)
    assert acc_after >= 0.9, acc_after
