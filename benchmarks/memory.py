"""Compiled XLA memory of one jitted gradient over a sequence: BPTT vs D-RTRL vs ES-D-RTRL.

Online methods keep O(1) memory in the sequence length; BPTT stores every step.
``--plot out.png`` also draws memory against sequence length. A second table compares
D-RTRL on a leaky layer fed by a dense ``Linear`` with the same layer fed by a
``SparseLinear`` (``--sparse-density`` of the ``N x N`` entries): the sparse trace is
``B·nnz`` instead of ``B·N·N``.
"""

from __future__ import annotations

import argparse

import brainstate
import brainunit as u
import jax
import jax.numpy as jnp
import numpy as np

import braintrace
import braintrace.nn as bnn

try:
    from ._common import compiled_memory, loss_fn, machine, table
except ImportError:  # run as a script
    from _common import compiled_memory, loss_fn, machine, table

METHODS = [("BPTT", "bptt", {}), ("D-RTRL", "d_rtrl", {}), ("ES-D-RTRL", "es_d_rtrl", {"decay_or_rank": 0.9})]


def measure(cell="elman", n_hidden=128, batch=16, lengths=(100, 300, 1000)):
    results = {}
    for label, method, options in METHODS:
        results[label] = [compiled_memory(method, cell, n_hidden, batch, t, **options) for t in lengths]
    return results


class LeakyLayer(brainstate.nn.Module):
    """``h = 0.9 h + tanh(layer(x))`` with a linear readout (D-RTRL is exact here)."""

    def __init__(self, layer, n: int, n_out: int = 4):
        super().__init__()
        self.layer = layer
        self.n = n
        self.out = bnn.Linear(n, n_out)

    def init_state(self, batch_size=None, **kwargs):
        self.h = brainstate.HiddenState(jnp.zeros((batch_size, self.n)))

    def update(self, x):
        self.h.value = 0.9 * self.h.value + jnp.tanh(self.layer(x))
        return self.out(self.h.value)


def _leaky_d_rtrl_memory(layer, n, batch, length) -> int:
    learner = braintrace.compile(LeakyLayer(layer, n), "d_rtrl", jnp.zeros((batch, n)), batch_size=batch)

    def grads(xs):
        return learner.etrace_grad(xs, step_fn=lambda x: loss_fn(learner(x)))

    xs = jax.ShapeDtypeStruct((length, batch, n), jnp.float32)
    stats = brainstate.transform.jit(grads).lower(xs).compile().memory_analysis()
    return int(stats.temp_size_in_bytes + stats.output_size_in_bytes)


def measure_sparse(n_hidden=128, batch=16, lengths=(100, 300, 1000), density=0.1):
    """D-RTRL memory with a dense vs a sparse ``N -> N`` input layer (same N, same pattern size)."""
    rng = np.random.RandomState(0)
    dense = rng.randn(n_hidden, n_hidden) * (rng.rand(n_hidden, n_hidden) < density) / np.sqrt(density * n_hidden)
    csr = u.sparse.CSR.fromdense(jnp.asarray(dense, jnp.float32))
    layers = {
        f"D-RTRL, dense Linear {n_hidden}x{n_hidden}": lambda: bnn.Linear(n_hidden, n_hidden),
        f"D-RTRL, SparseLinear {density:.0%} (nnz={csr.nse})": lambda: bnn.SparseLinear(csr),
    }
    return {label: [_leaky_d_rtrl_memory(make(), n_hidden, batch, t) for t in lengths]
            for label, make in layers.items()}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cell", default="elman", choices=["elman", "gru"])
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--lengths", type=int, nargs="+", default=[100, 300, 1000])
    parser.add_argument("--plot", default=None, help="write a PNG of memory vs sequence length")
    parser.add_argument("--sparse-density", type=float, default=0.1,
                        help="density of the SparseLinear layer in the sparse-vs-dense table")
    args = parser.parse_args(argv)
    results = measure(args.cell, args.hidden, args.batch, tuple(args.lengths))
    rows = [(label, *[f"{b / 2**20:.2f}" for b in values]) for label, values in results.items()]
    print(f"Machine: {machine()}; {args.cell}, N={args.hidden}, batch={args.batch}")
    print(table(["method", *[f"T={t} (MiB)" for t in args.lengths]], rows))
    sparse = measure_sparse(args.hidden, args.batch, tuple(args.lengths), args.sparse_density)
    sparse_rows = [(label, *[f"{b / 2**20:.2f}" for b in values]) for label, values in sparse.items()]
    print(f"Leaky layer h = 0.9 h + tanh(layer(x)), N={args.hidden}, batch={args.batch}")
    print(table(["input layer", *[f"T={t} (MiB)" for t in args.lengths]], sparse_rows))
    if args.plot:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(5, 3.5))
        for label, values in results.items():
            ax.plot(args.lengths, [v / 2**20 for v in values], marker="o", label=label)
        ax.set_xlabel("sequence length T")
        ax.set_ylabel("compiled memory (MiB)")
        ax.set_title(f"{args.cell} N={args.hidden} batch={args.batch}")
        ax.legend()
        fig.tight_layout()
        fig.savefig(args.plot, dpi=120)
    return {**results, **sparse}


if __name__ == "__main__":
    main()
