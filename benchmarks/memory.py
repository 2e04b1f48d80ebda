"""Compiled XLA memory of one jitted gradient over a sequence: BPTT vs D-RTRL vs ES-D-RTRL.

Online methods keep O(1) memory in the sequence length; BPTT stores every step.
``--plot out.png`` also draws memory against sequence length.
"""

from __future__ import annotations

import argparse

try:
    from ._common import compiled_memory, machine, table
except ImportError:  # run as a script
    from _common import compiled_memory, machine, table

METHODS = [("BPTT", "bptt", {}), ("D-RTRL", "d_rtrl", {}), ("ES-D-RTRL", "es_d_rtrl", {"decay_or_rank": 0.9})]


def measure(cell="elman", n_hidden=128, batch=16, lengths=(100, 300, 1000)):
    results = {}
    for label, method, options in METHODS:
        results[label] = [compiled_memory(method, cell, n_hidden, batch, t, **options) for t in lengths]
    return results


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cell", default="elman", choices=["elman", "gru"])
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--lengths", type=int, nargs="+", default=[100, 300, 1000])
    parser.add_argument("--plot", default=None, help="write a PNG of memory vs sequence length")
    args = parser.parse_args(argv)
    results = measure(args.cell, args.hidden, args.batch, tuple(args.lengths))
    rows = [(label, *[f"{b / 2**20:.2f}" for b in values]) for label, values in results.items()]
    print(f"Machine: {machine()}; {args.cell}, N={args.hidden}, batch={args.batch}")
    print(table(["method", *[f"T={t} (MiB)" for t in args.lengths]], rows))
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
    return results


if __name__ == "__main__":
    main()
