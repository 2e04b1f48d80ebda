"""Compile time of the eligibility-trace graph for a 2-layer GRU with 256 units."""

from __future__ import annotations

import argparse
import time

import brainstate
import jax.numpy as jnp

import braintrace
import braintrace.nn as bnn

try:
    from ._common import machine, table
except ImportError:  # run as a script
    from _common import machine, table


class TwoLayerGRU(brainstate.nn.Module):
    def __init__(self, n_in, n_hidden):
        super().__init__()
        self.l1 = bnn.GRUCell(n_in, n_hidden)
        self.l2 = bnn.GRUCell(n_hidden, n_hidden)
        self.out = bnn.Linear(n_hidden, 10)

    def update(self, x):
        return self.out(self.l2(self.l1(x)))


def measure(n_hidden=256, batch=16, repeats=5):
    model = TwoLayerGRU(64, n_hidden)
    brainstate.nn.init_all_states(model, batch)
    x = jnp.zeros((batch, 64))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        graph = braintrace.compile_etrace_graph(model, x)
        times.append(time.perf_counter() - start)
    return times, graph


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    times, graph = measure(args.hidden, repeats=args.repeats)
    rows = [("2-layer GRU", args.hidden, len(graph.module_info.closed_jaxpr.eqns),
             len(graph.hidden_param_op_relations), f"{times[0]:.3f}", f"{min(times[1:] or times):.3f}")]
    print(f"Machine: {machine()}")
    print(table(["model", "units", "jaxpr eqns", "relations", "first compile (s)", "best of rest (s)"], rows))
    return rows


if __name__ == "__main__":
    main()
