"""Time per sequence (forward + gradient) for BPTT, D-RTRL and ES-D-RTRL.

Default: Elman and GRU, N in {64, 256, 1024}, T in {100, 1000}, batch 16. D-RTRL at
N=1024 holds a (B, I, O) trace per relation (several GiB for a GRU); ``--skip-large-drtrl``
leaves it out on small machines.
"""

from __future__ import annotations

import argparse

try:
    from ._common import machine, table, time_per_sequence
except ImportError:  # run as a script
    from _common import machine, table, time_per_sequence

METHODS = [("BPTT", "bptt", {}), ("D-RTRL", "d_rtrl", {}), ("ES-D-RTRL", "es_d_rtrl", {"decay_or_rank": 0.9})]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cells", nargs="+", default=["elman", "gru"])
    parser.add_argument("--hidden", type=int, nargs="+", default=[64, 256, 1024])
    parser.add_argument("--lengths", type=int, nargs="+", default=[100, 1000])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--skip-large-drtrl", type=int, default=0,
                        help="skip D-RTRL for N at or above this size (0: never)")
    args = parser.parse_args(argv)
    rows = []
    for cell in args.cells:
        for n in args.hidden:
            for t in args.lengths:
                row = [cell, n, t]
                times = {}
                for label, method, options in METHODS:
                    if method == "d_rtrl" and args.skip_large_drtrl and n >= args.skip_large_drtrl:
                        row.append("skipped")
                        continue
                    times[label] = time_per_sequence(method, cell, n, args.batch, t, repeats=args.repeats, **options)
                    row.append(f"{times[label] * 1e3:.1f}")
                ratio = times.get("ES-D-RTRL", float("nan")) / times["BPTT"]
                row.append(f"{ratio:.2f}")
                rows.append(row)
                print(row, flush=True)
    print(f"Machine: {machine()}; batch={args.batch}; times in ms per sequence (best of {args.repeats})")
    print(table(["cell", "N", "T", "BPTT", "D-RTRL", "ES-D-RTRL", "ES/BPTT"], rows))
    return rows


if __name__ == "__main__":
    main()
