# Copyright 2026 The braintrace authors. Licensed under the Apache License, Version 2.0.
"""A GRU learns a delayed copy task online with D-RTRL or ES-D-RTRL.

Each sequence shows ``--symbols`` random symbols (one-hot, one per step), then ``--delay``
blank steps, then a recall cue for as many steps; during the cue the network must output
the symbols in their order. The model is a ``braintrace.nn.GRUCell`` with a linear readout,
compiled with :func:`braintrace.compile` and trained with optax's Adam on online gradients
(memory constant in the sequence length).

Run ``python examples/gru_copy_task.py [--method es_d_rtrl]`` (about ten seconds on two CPU
cores), or ``--smoke`` for a reduced size.
"""

from __future__ import annotations

import argparse
import time
import warnings

import brainstate
import jax
import jax.numpy as jnp
import numpy as np
import optax

import braintrace
import braintrace.nn as bnn


def copy_task(key, batch: int, n_symbols: int, n_classes: int, delay: int):
    """``(inputs (T, B, n_classes + 1), targets (T, B), mask (T,))`` of the delayed copy task.

    Input channels are the one-hot symbols and a recall cue; ``T = 2 * n_symbols + delay``.
    ``mask`` selects the recall steps, where ``targets`` holds the symbol to output.
    """
    length = 2 * n_symbols + delay
    symbols = jax.random.randint(key, (batch, n_symbols), 0, n_classes)
    inputs = jnp.zeros((length, batch, n_classes + 1))
    shown = jnp.moveaxis(jax.nn.one_hot(symbols, n_classes), 1, 0)           # (n_symbols, B, C)
    inputs = inputs.at[:n_symbols, :, :n_classes].set(shown)
    recall = n_symbols + delay
    inputs = inputs.at[recall:, :, n_classes].set(1.0)
    targets = jnp.zeros((length, batch), jnp.int32).at[recall:].set(symbols.T)
    mask = (jnp.arange(length) >= recall).astype(jnp.float32)
    return inputs, targets, mask


class GRUReadout(brainstate.nn.Module):
    """A GRU cell with a linear readout of its hidden state."""

    def __init__(self, n_in: int, n_hidden: int, n_out: int):
        super().__init__()
        self.cell = bnn.GRUCell(n_in, n_hidden)
        self.out = bnn.Linear(n_hidden, n_out)

    def update(self, x):
        return self.out(self.cell(x))


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--smoke", action="store_true", help="a reduced size for a quick check")
    parser.add_argument("--method", default="d_rtrl", choices=["d_rtrl", "es_d_rtrl"])
    parser.add_argument("--iterations", type=int, default=1500)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--symbols", type=int, default=2, help="symbols to copy")
    parser.add_argument("--classes", type=int, default=4, help="size of the alphabet")
    parser.add_argument("--delay", type=int, default=5, help="blank steps before the recall cue")
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--lr", type=float, default=1e-2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.smoke:
        args.iterations, args.batch, args.hidden = 30, 16, 32
    warnings.filterwarnings("ignore", message=r"\[warning\]")
    started = time.perf_counter()

    brainstate.random.seed(args.seed)
    n_in = args.classes + 1
    options = {"decay_or_rank": 0.9} if args.method == "es_d_rtrl" else {}
    learner = braintrace.compile(GRUReadout(n_in, args.hidden, args.classes), args.method,
                                 jnp.zeros((args.batch, n_in)), batch_size=args.batch, **options)
    params = learner.param_states
    optimizer = optax.adam(args.lr)
    opt_state = optimizer.init({p: s.value for p, s in params.items()})

    @brainstate.transform.jit
    def train_step(opt_state, key):
        xs, targets, mask = copy_task(key, args.batch, args.symbols, args.classes, args.delay)
        brainstate.nn.reset_all_states(learner, args.batch)

        def step_loss(x, target):
            logits = learner(x)
            loss = optax.softmax_cross_entropy_with_integer_labels(logits, target).mean()
            return loss, jnp.mean(jnp.argmax(logits, axis=-1) == target)

        grads, losses, accs = learner.etrace_grad(xs, targets, step_fn=step_loss, mask=mask,
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

    n = max(1, min(20, args.iterations // 3))
    result = {
        "method": args.method,
        "loss_start": float(np.mean(losses[:n])),
        "loss_end": float(np.mean(losses[-n:])),
        "accuracy_end": float(np.mean(accs[-n:])),
        "chance": 1.0 / args.classes,
        "seconds": time.perf_counter() - started,
    }
    print(f"GRU delayed copy, {args.method}: {args.symbols} symbols of {args.classes}, delay {args.delay}, "
          f"{args.hidden} units, {args.iterations} iterations")
    print(f"  recall loss {result['loss_start']:.3f} -> {result['loss_end']:.3f}, recall accuracy "
          f"{result['accuracy_end']:.2f} (chance {result['chance']:.2f}), {result['seconds']:.0f} s")
    return result


if __name__ == "__main__":
    main()
