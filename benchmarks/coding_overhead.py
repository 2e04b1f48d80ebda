"""Overhead of coding statistics on an online training step (K=16 codes, N=256 units).

Times one jitted ``etrace_grad`` over a sequence with and without
``braintrace.coding.monitor_hidden`` (EMA codebook update included).
"""

from __future__ import annotations

import argparse

import brainstate
import jax
import jax.numpy as jnp

import braintrace

try:
    from ._common import Readout, best_time, loss_fn, machine, table
except ImportError:  # run as a script
    from _common import Readout, best_time, loss_fn, machine, table


def build(method, n_hidden, batch, length, monitored, options):
    model = Readout("gru", 32, n_hidden)
    learner = braintrace.compile(model, method, jnp.zeros((batch, 32)), batch_size=batch, **options)
    if monitored:
        monitor = braintrace.coding.monitor_hidden(learner, K=16)

        def run(xs):
            return monitor.etrace_grad(xs, step_fn=lambda x: loss_fn(learner(x)))
    else:
        def run(xs):
            return learner.etrace_grad(xs, step_fn=lambda x: loss_fn(learner(x)))
    return brainstate.transform.jit(run)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--length", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    xs = jax.random.normal(jax.random.PRNGKey(0), (args.length, args.batch, 32))
    rows = []
    for label, method, options in [("D-RTRL", "d_rtrl", {}), ("ES-D-RTRL", "es_d_rtrl", {"decay_or_rank": 0.9})]:
        plain = best_time(build(method, args.hidden, args.batch, args.length, False, options), xs, args.repeats)
        watched = best_time(build(method, args.hidden, args.batch, args.length, True, options), xs, args.repeats)
        rows.append((label, f"{plain * 1e3:.1f}", f"{watched * 1e3:.1f}", f"{100 * (watched / plain - 1):+.1f}%"))
    print(f"Machine: {machine()}; GRU N={args.hidden}, batch={args.batch}, T={args.length}, K=16")
    print(table(["method", "without monitor (ms)", "with monitor (ms)", "overhead"], rows))
    return rows


if __name__ == "__main__":
    main()
