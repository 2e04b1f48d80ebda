# Copyright 2026 The braintrace authors. Licensed under the Apache License, Version 2.0.
"""A spiking network learns evidence accumulation online with D-RTRL.

Two input channels emit random spikes; one fires more often. After watching the whole
sequence the network must say which, in the last quarter of the steps. The network is
``Linear -> LIF -> Linear`` (``braintrace.nn.LIF`` is ``brainpy.state.LIF``; weights in mA,
potentials in mV, run under ``brainstate.environ.context(dt=1 ms)``) and the readout reads
the membrane potential ``V``, which integrates the evidence. The neuron dynamics are element-wise, so D-RTRL's online gradient
equals BPTT's here; the script checks that on one batch before training.

Run ``python examples/lif_evidence_accumulation.py`` (under ten seconds on two CPU cores) or
``--smoke`` for a reduced size. ``--method es_d_rtrl`` trains with ES-D-RTRL instead.
"""

from __future__ import annotations

import argparse
import time
import warnings

import brainstate
import braintools
import brainunit as u
import jax
import jax.numpy as jnp
import numpy as np
import optax

import braintrace
import braintrace.nn as bnn


def evidence_task(key, batch: int, length: int):
    """``(spikes (T, B, 2), labels (B,), mask (T,))``: the label is the busier channel.

    The mask selects the last quarter of the sequence, where the decision is read.
    """
    k_label, k_spikes = jax.random.split(key)
    labels = jax.random.bernoulli(k_label, 0.5, (batch,)).astype(jnp.int32)
    rates = jnp.where(jax.nn.one_hot(labels, 2) > 0, 0.6, 0.4)
    spikes = jax.random.bernoulli(k_spikes, rates, (length, batch, 2)).astype(jnp.float32)
    mask = (jnp.arange(length) >= (3 * length) // 4).astype(jnp.float32)
    return spikes, labels, mask


class SpikingClassifier(brainstate.nn.Module):
    """``Linear (mA) -> LIF -> Linear`` with the readout on the membrane potential (in mV)."""

    def __init__(self, n_in: int = 2, n_hidden: int = 32, n_out: int = 2):
        super().__init__()
        self.inp = bnn.Linear(n_in, n_hidden, w_init=braintools.init.KaimingNormal(scale=2.0, unit=u.mA),
                              b_init=braintools.init.ZeroInit(unit=u.mA))
        self.neu = bnn.LIF(n_hidden, tau=20.0 * u.ms, V_th=1.0 * u.mV,
                           spk_fun=braintools.surrogate.Sigmoid(alpha=4.0))
        self.out = bnn.Linear(n_hidden, n_out)

    def update(self, x):
        self.neu(self.inp(x))
        return self.out(self.neu.V.value / u.mV)


def cross_entropy(logits, labels):
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()


def accuracy(logits, labels):
    return jnp.mean(jnp.argmax(logits, axis=-1) == labels)


def compare_with_bptt(learner, xs, labels) -> tuple[float, float]:
    """``(largest |online - BPTT| / max|BPTT| over the parameters, cosine similarity)``.

    Both gradients are summed over one sequence, from the same initial states.
    """
    model = learner.model
    batch = xs.shape[1]
    params = learner.param_states

    def bptt_loss():
        logits = brainstate.transform.for_loop(model, xs)
        return jnp.sum(jax.vmap(cross_entropy, in_axes=(0, None))(logits, labels))

    brainstate.nn.reset_all_states(learner, batch)
    bptt = brainstate.transform.grad(bptt_loss, grad_states=params)()
    brainstate.nn.reset_all_states(learner, batch)
    online = learner.etrace_grad(xs, step_fn=lambda x: cross_entropy(learner(x), labels), reduction="sum")
    gaps = jax.tree.map(lambda b, o: float(jnp.max(jnp.abs(b - o)) / (jnp.max(jnp.abs(b)) + 1e-12)), bptt, online)
    b = np.concatenate([np.ravel(g) for g in jax.tree.leaves(bptt)])
    o = np.concatenate([np.ravel(g) for g in jax.tree.leaves(online)])
    cosine = float(b @ o / (np.linalg.norm(b) * np.linalg.norm(o) + 1e-12))
    return max(jax.tree.leaves(gaps)), cosine


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--smoke", action="store_true", help="a reduced size for a quick check")
    parser.add_argument("--method", default="d_rtrl", choices=["d_rtrl", "es_d_rtrl"])
    parser.add_argument("--iterations", type=int, default=150)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--length", type=int, default=60)
    parser.add_argument("--hidden", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.smoke:
        args.iterations, args.batch, args.length, args.hidden = 25, 16, 30, 16
    warnings.filterwarnings("ignore", message=r"\[warning\]")
    with brainstate.environ.context(dt=1.0 * u.ms):
        return _run(args)


def _run(args) -> dict:
    started = time.perf_counter()

    brainstate.random.seed(args.seed)
    options = {"decay_or_rank": 0.95} if args.method == "es_d_rtrl" else {}
    learner = braintrace.compile(SpikingClassifier(n_hidden=args.hidden), args.method,
                                 jnp.zeros((args.batch, 2)), batch_size=args.batch, **options)
    params = learner.param_states

    key = jax.random.PRNGKey(args.seed)
    xs, labels, _ = evidence_task(key, args.batch, args.length)
    gap, cosine = compare_with_bptt(learner, xs, labels)

    optimizer = optax.sgd(0.05, momentum=0.9)
    opt_state = optimizer.init({p: s.value for p, s in params.items()})

    @brainstate.transform.jit
    def train_step(opt_state, key):
        xs, labels, mask = evidence_task(key, args.batch, args.length)
        brainstate.nn.reset_all_states(learner, args.batch)

        def step_loss(x):
            logits = learner(x)
            return cross_entropy(logits, labels), accuracy(logits, labels)

        grads, losses, accs = learner.etrace_grad(xs, step_fn=step_loss, mask=mask,
                                                  return_value=True, has_aux=True)
        updates, opt_state = optimizer.update(grads, opt_state)
        new = optax.apply_updates({p: s.value for p, s in params.items()}, updates)
        for p, s in params.items():
            s.value = new[p]
        window = jnp.sum(mask)
        return opt_state, jnp.sum(losses * mask) / window, jnp.sum(accs * mask) / window

    losses, accs = [], []
    for k in jax.random.split(jax.random.PRNGKey(args.seed + 1), args.iterations):
        opt_state, loss, acc = train_step(opt_state, k)
        losses.append(float(loss))
        accs.append(float(acc))

    n = max(1, min(10, args.iterations // 3))
    result = {
        "method": args.method,
        "gradient_gap_vs_bptt": gap,
        "gradient_cosine_vs_bptt": cosine,
        "loss_start": float(np.mean(losses[:n])),
        "loss_end": float(np.mean(losses[-n:])),
        "accuracy_end": float(np.mean(accs[-n:])),
        "seconds": time.perf_counter() - started,
    }
    print(f"LIF evidence accumulation, {args.method}: {args.iterations} iterations, batch {args.batch}, "
          f"T={args.length}, {args.hidden} neurons")
    print(f"  online gradient vs BPTT on one batch: max relative difference {gap:.1e}, cosine {cosine:.4f}")
    print(f"  loss {result['loss_start']:.3f} -> {result['loss_end']:.3f}, "
          f"decision accuracy {result['accuracy_end']:.2f} (chance 0.50), {result['seconds']:.0f} s")
    return result


if __name__ == "__main__":
    main()
