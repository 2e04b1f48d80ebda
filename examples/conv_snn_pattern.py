# Copyright 2026 The braintrace authors. Licensed under the Apache License, Version 2.0.
"""A convolutional spiking network learns to tell vertical from horizontal bars, online.

Each sample is an 8x8 image holding one bar, vertical or horizontal, at a random position,
plus noise; it is shown for ``--length`` steps as spike trains (pixel intensity = firing
probability). The network is a channel-last convolution (:func:`braintrace.conv` with
``dimension_numbers=('NHWC', 'HWIO', 'NHWC')``, a 3x3 kernel stored in a ``ParamState``)
driving ``brainpy.state.LIF`` neurons (plain-number constants, run under
``brainstate.environ.context(dt=1.0)``) whose membrane potentials have shape ``(B, 8, 8, C)``, and a linear
readout of the flattened potentials. Every LIF neuron is its own position of one hidden
group, the convolution feeds it through an element-wise tail, so D-RTRL's gradient equals BPTT's; the script prints what the compiler found, checks the
gradient against BPTT on one batch, and trains.

Run ``python examples/conv_snn_pattern.py`` (about ten seconds on two CPU cores) or
``--smoke`` for a reduced size.
"""

from __future__ import annotations

import argparse
import time
import warnings

import brainstate
import braintools
import jax
import jax.numpy as jnp
import numpy as np
import optax

import braintrace
import braintrace.nn as bnn

SIZE = 8
CHANNEL_LAST = ("NHWC", "HWIO", "NHWC")  # the layout of the input, the kernel and the output


def bar_images(key, batch: int, noise: float = 0.1):
    """``(images (B, 8, 8, 1) in [0, 1], labels (B,))``: label 0 is vertical, 1 horizontal."""
    k_label, k_pos, k_noise = jax.random.split(key, 3)
    labels = jax.random.bernoulli(k_label, 0.5, (batch,)).astype(jnp.int32)
    position = jax.random.randint(k_pos, (batch,), 0, SIZE)
    line = jax.nn.one_hot(position, SIZE)                                  # (B, 8)
    vertical = jnp.broadcast_to(line[:, None, :], (batch, SIZE, SIZE))       # a column
    horizontal = jnp.broadcast_to(line[:, :, None], (batch, SIZE, SIZE))     # a row
    images = jnp.where(labels[:, None, None] == 0, vertical, horizontal)
    images = jnp.clip(0.8 * images + noise * jax.random.uniform(k_noise, images.shape), 0.0, 1.0)
    return images[..., None], labels


def spike_trains(key, images, length: int):
    """Bernoulli spikes ``(T, B, 8, 8, 1)`` with the pixel intensity as probability."""
    return jax.random.bernoulli(key, images, (length, *images.shape)).astype(jnp.float32)


class ConvSNN(brainstate.nn.Module):
    """``conv 3x3 (1 -> C) -> LIF (8, 8, C) -> Linear(64 C -> 2)`` on the membrane potential."""

    def __init__(self, channels: int = 4, n_out: int = 2):
        super().__init__()
        kernel = brainstate.random.randn(3, 3, 1, channels) * 0.8
        self.conv = brainstate.ParamState({"kernel": kernel, "bias": jnp.zeros(channels)})
        self.neu = bnn.LIF((SIZE, SIZE, channels), R=1.0, tau=10.0, V_th=1.0, V_reset=0.0, V_rest=0.0,
                           V_initializer=braintools.init.Constant(0.0),
                           spk_fun=braintools.surrogate.Sigmoid(alpha=4.0))
        self.out = bnn.Linear(SIZE * SIZE * channels, n_out)

    def update(self, x):
        p = self.conv.value
        self.neu(braintrace.conv(x, p["kernel"], p["bias"], padding="SAME", dimension_numbers=CHANNEL_LAST))
        V = self.neu.V.value
        return self.out(V.reshape(V.shape[:-3] + (-1,)))


def cross_entropy(logits, labels):
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()


def gradient_gap_vs_bptt(learner, xs, labels) -> float:
    """Largest ``|online - BPTT| / max|BPTT|`` over the parameters, for one sequence."""
    batch = xs.shape[1]
    params = learner.param_states

    def bptt_loss():
        logits = brainstate.transform.for_loop(learner.model, xs)
        return jnp.sum(jax.vmap(cross_entropy, in_axes=(0, None))(logits, labels))

    brainstate.nn.reset_all_states(learner, batch)
    bptt = brainstate.transform.grad(bptt_loss, grad_states=params)()
    brainstate.nn.reset_all_states(learner, batch)
    online = learner.etrace_grad(xs, step_fn=lambda x: cross_entropy(learner(x), labels), reduction="sum")
    gaps = jax.tree.map(lambda b, o: float(jnp.max(jnp.abs(b - o)) / (jnp.max(jnp.abs(b)) + 1e-12)), bptt, online)
    return max(jax.tree.leaves(gaps))


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--smoke", action="store_true", help="a reduced size for a quick check")
    parser.add_argument("--iterations", type=int, default=150)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--length", type=int, default=12, help="time steps per image")
    parser.add_argument("--channels", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.smoke:
        args.iterations, args.batch, args.length, args.channels = 20, 8, 8, 2
    warnings.filterwarnings("ignore", message=r"\[warning\]")
    with brainstate.environ.context(dt=1.0):  # tau=10.0 is in steps of dt
        return _run(args)


def _run(args) -> dict:
    started = time.perf_counter()

    brainstate.random.seed(args.seed)
    example = jnp.zeros((args.batch, SIZE, SIZE, 1))

    # What the compiler sees: one hidden group of (B, 8, 8, C) neurons, the conv feeding it.
    model = ConvSNN(args.channels)
    brainstate.nn.init_all_states(model, args.batch)
    graph = braintrace.compile_etrace_graph(model, example)
    (group,) = graph.hidden_groups
    print(f"compiled: hidden group {[('.'.join(p)) for p in group.hidden_paths]} with varshape "
          f"{tuple(group.varshape)}; online weights "
          f"{sorted('.'.join(r.trainable_paths['kernel']) for r in graph.hidden_param_op_relations)}")

    learner = braintrace.compile(model, "d_rtrl", example, batch_size=args.batch)
    params = learner.param_states
    optimizer = optax.adam(1e-2)
    opt_state = optimizer.init({p: s.value for p, s in params.items()})
    mask = (jnp.arange(args.length) >= args.length // 2).astype(jnp.float32)
    k_img, k_spk = jax.random.split(jax.random.PRNGKey(args.seed + 1))
    images, labels = bar_images(k_img, args.batch)
    gap = gradient_gap_vs_bptt(learner, spike_trains(k_spk, images, args.length), labels)
    print(f"online gradient vs BPTT on one batch: max relative difference {gap:.1e}")

    @brainstate.transform.jit
    def train_step(opt_state, key):
        k_img, k_spk = jax.random.split(key)
        images, labels = bar_images(k_img, args.batch)
        xs = spike_trains(k_spk, images, args.length)
        brainstate.nn.reset_all_states(learner, args.batch)

        def step_loss(x):
            logits = learner(x)
            return cross_entropy(logits, labels), jnp.mean(jnp.argmax(logits, axis=-1) == labels)

        grads, losses, accs = learner.etrace_grad(xs, step_fn=step_loss, mask=mask,
                                                  return_value=True, has_aux=True)
        updates, opt_state = optimizer.update(grads, opt_state)
        new = optax.apply_updates({p: s.value for p, s in params.items()}, updates)
        for p, s in params.items():
            s.value = new[p]
        window = jnp.sum(mask)
        return opt_state, jnp.sum(losses * mask) / window, jnp.sum(accs * mask) / window

    losses, accs = [], []
    for key in jax.random.split(jax.random.PRNGKey(args.seed), args.iterations):
        opt_state, loss, acc = train_step(opt_state, key)
        losses.append(float(loss))
        accs.append(float(acc))

    n = max(1, min(10, args.iterations // 3))
    result = {
        "varshape": tuple(group.varshape),
        "gradient_gap_vs_bptt": gap,
        "loss_start": float(np.mean(losses[:n])),
        "loss_end": float(np.mean(losses[-n:])),
        "accuracy_end": float(np.mean(accs[-n:])),
        "seconds": time.perf_counter() - started,
    }
    print(f"conv SNN, vertical vs horizontal bars, D-RTRL: {args.iterations} iterations, batch {args.batch}, "
          f"T={args.length}, {args.channels} channels")
    print(f"  loss {result['loss_start']:.3f} -> {result['loss_end']:.3f}, accuracy {result['accuracy_end']:.2f} "
          f"(chance 0.50), {result['seconds']:.0f} s")
    return result


if __name__ == "__main__":
    main()
