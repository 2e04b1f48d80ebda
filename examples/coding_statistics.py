# Copyright 2026 The braintrace authors. Licensed under the Apache License, Version 2.0.
"""Coding statistics of a GRU's hidden state while it learns online.

A GRU learns a delayed recall task online with D-RTRL: a symbol (one of ``--classes``) is
shown at the first step, and after a delay the network must name it. While it trains,
:func:`braintrace.coding.monitor_hidden` softly assigns every hidden state to a codebook of
``K`` centers fitted online (EMA k-means), inside the jitted step and without touching the
gradients, and reports per step:

* ``utilization``: the fraction of the ``K`` codes used by the batch;
* ``entropy``: the mean entropy of the soft assignment (nats);
* ``code_length``: the mean ``-log p`` of the best code;
* ``commitment``: the mean squared distance to the chosen center.

As the network learns to hold the symbol, its hidden states cluster by symbol.
The script also wraps the readout in a :class:`braintrace.coding.CodingLayer`, which codes
the logits after every call.

Run ``python examples/coding_statistics.py`` (about ten seconds on two CPU cores) or
``--smoke`` for a reduced size.
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
from braintrace.coding import CodingLayer, monitor_hidden

STATISTICS = ("utilization", "entropy", "code_length", "commitment")


def recall_task(key, batch: int, n_classes: int, delay: int):
    """``(inputs (T, B, n_classes + 1), labels (B,), mask (T,))``: name the first symbol.

    ``T = delay + 2``: the symbol at step 0, blanks, then a recall cue at the last step.
    """
    length = delay + 2
    labels = jax.random.randint(key, (batch,), 0, n_classes)
    inputs = jnp.zeros((length, batch, n_classes + 1))
    inputs = inputs.at[0, :, :n_classes].set(jax.nn.one_hot(labels, n_classes))
    inputs = inputs.at[-1, :, n_classes].set(1.0)
    mask = (jnp.arange(length) == length - 1).astype(jnp.float32)
    return inputs, labels, mask


class GRURecall(brainstate.nn.Module):
    """A GRU cell; its readout is wrapped in a ``CodingLayer`` that codes the logits."""

    def __init__(self, n_in: int, n_hidden: int, n_out: int):
        super().__init__()
        self.cell = bnn.GRUCell(n_in, n_hidden)
        self.out = CodingLayer(bnn.Linear(n_hidden, n_out), K=n_out, update="ema", decay=0.9)

    def update(self, x):
        return self.out(self.cell(x))


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--smoke", action="store_true", help="a reduced size for a quick check")
    parser.add_argument("--iterations", type=int, default=300)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--classes", type=int, default=4)
    parser.add_argument("--delay", type=int, default=6)
    parser.add_argument("--hidden", type=int, default=32)
    parser.add_argument("--codes", type=int, default=8, help="K, codes per codebook")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.smoke:
        args.iterations, args.batch, args.hidden = 30, 16, 16
    warnings.filterwarnings("ignore", message=r"\[warning\]")
    started = time.perf_counter()

    brainstate.random.seed(args.seed)
    n_in = args.classes + 1
    model = GRURecall(n_in, args.hidden, args.classes)
    learner = braintrace.compile(model, "d_rtrl", jnp.zeros((args.batch, n_in)), batch_size=args.batch)
    monitor = monitor_hidden(learner, K=args.codes, update="ema", decay=0.95, seed=args.seed)
    params = learner.param_states
    optimizer = optax.adam(1e-2)
    opt_state = optimizer.init({p: s.value for p, s in params.items()})

    @brainstate.transform.jit
    def train_step(opt_state, key):
        xs, labels, mask = recall_task(key, args.batch, args.classes, args.delay)
        brainstate.nn.reset_all_states(learner, args.batch)

        def step_loss(x):
            logits = learner(x)
            loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
            return loss, jnp.mean(jnp.argmax(logits, axis=-1) == labels)

        (grads, losses, accs), stats = monitor.etrace_grad(xs, step_fn=step_loss, mask=mask,
                                                           return_value=True, has_aux=True)
        updates, opt_state = optimizer.update(grads, opt_state)
        new = optax.apply_updates({p: s.value for p, s in params.items()}, updates)
        for p, s in params.items():
            s.value = new[p]
        # The hidden state's statistics at the recall step, and the readout's coding trace.
        recall = {name: values[-1] for name, values in stats[0].items()}
        return opt_state, jnp.sum(losses * mask), jnp.sum(accs * mask), recall

    history = []
    for key in jax.random.split(jax.random.PRNGKey(args.seed), args.iterations):
        opt_state, loss, acc, recall = train_step(opt_state, key)
        history.append({"loss": float(loss), "accuracy": float(acc), **{k: float(v) for k, v in recall.items()}})

    n = max(1, min(20, args.iterations // 3))

    def mean(rows, name):
        return float(np.mean([row[name] for row in rows]))

    start = {name: mean(history[:n], name) for name in ("loss", "accuracy", *STATISTICS)}
    end = {name: mean(history[-n:], name) for name in ("loss", "accuracy", *STATISTICS)}
    readout = {
        "utilization": model.out.utilization(),
        "entropy": model.out.mean_entropy(),
    }
    result = {"start": start, "end": end, "readout": readout, "seconds": time.perf_counter() - started}

    print(f"GRU delayed recall with coding statistics (K={args.codes}): {args.iterations} iterations, "
          f"{args.classes} symbols, delay {args.delay}")
    print(f"  {'':<12}{'loss':>8}{'accuracy':>10}" + "".join(f"{s:>13}" for s in STATISTICS))
    for label, row in (("first steps", start), ("last steps", end)):
        print(f"  {label:<12}{row['loss']:>8.3f}{row['accuracy']:>10.2f}"
              + "".join(f"{row[s]:>13.3f}" for s in STATISTICS))
    shown = {k: "n/a" if v is None else f"{v:.2f}" for k, v in readout.items()}
    print(f"  readout CodingLayer (K={args.classes}), last call: utilization {shown['utilization']}, "
          f"entropy {shown['entropy']}; {result['seconds']:.0f} s")
    return result


if __name__ == "__main__":
    main()
