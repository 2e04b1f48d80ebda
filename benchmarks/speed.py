"""Time per sequence: plain forward pass, BPTT, D-RTRL and ES-D-RTRL, in one process.

For every (cell, N, T) the four functions are jitted, warmed up and then timed round-robin
(``--repeats`` rounds, median), so load drift on a shared machine hits all four alike and
the ratios of one row are comparable. Times are ms per sequence of ``T`` steps at batch
``B`` (input ``I = 32``, readout ``O = 8``); the gradient methods include their forward pass.

The default is a quick grid (Elman and GRU, N in {64, 256}, T = 100). ``--full`` runs the
grid of issue 14: Elman, GRU, LSTM and a recurrent LIF SNN at N in {64, 256, 1024} and
T in {100, 1000}. D-RTRL keeps a ``(B, I, O)`` trace per dense relation, so at large N it is
slow on a CPU (tens of seconds per sequence at N=1024, T=1000); ``--skip-large-drtrl N``
leaves D-RTRL out for N at or above ``N`` and the table says so.

Run ``python -m benchmarks.speed [--full] [--cells gru] [--hidden 256] [--lengths 200]``.
"""

from __future__ import annotations

import argparse

import brainstate
import jax

try:
    from ._common import CELLS, interleaved_medians, machine, make_runner, table
except ImportError:  # run as a script
    from _common import CELLS, interleaved_medians, machine, make_runner, table

METHODS = [("forward", "forward", {}), ("BPTT", "bptt", {}), ("D-RTRL", "d_rtrl", {}),
           ("ES-D-RTRL", "es_d_rtrl", {"decay_or_rank": 0.9})]
HEADERS = ["cell", "N", "T", "forward", "BPTT", "D-RTRL", "ES-D-RTRL",
           "D-RTRL/BPTT", "ES/BPTT", "ES/forward"]


def time_row(cell, n_hidden, length, batch, repeats, skip_drtrl_at=0, n_in=32, n_out=8,
             per_step_too=False) -> dict:
    """Median ms per sequence of every method for one (cell, N, T), timed interleaved.

    ``per_step_too`` adds ES-D-RTRL with ``gradient_window=1`` (one weight outer product per
    step, the behaviour before the windowed factor pairs) under the label ``'ES (K=1)'``.
    """
    fns = {}
    methods = list(METHODS)
    if per_step_too:
        methods.append(("ES (K=1)", "es_d_rtrl", {"decay_or_rank": 0.9, "grad_options": {"gradient_window": 1}}))
    for label, method, options in methods:
        if method == "d_rtrl" and skip_drtrl_at and n_hidden >= skip_drtrl_at:
            continue
        runner = make_runner(method, cell, n_hidden, batch, n_in=n_in, n_out=n_out, **options)
        fns[label] = brainstate.transform.jit(runner)
    xs = jax.random.normal(jax.random.PRNGKey(0), (length, batch, n_in))
    return {label: seconds * 1e3 for label, seconds in interleaved_medians(fns, xs, repeats).items()}


def format_row(cell, n_hidden, length, ms: dict, skip_drtrl_at=0) -> list:
    def cell_of(label):
        if label not in ms:
            return f"skipped (N>={skip_drtrl_at})"
        return f"{ms[label]:.1f}"

    def ratio(a, b):
        return f"{ms[a] / ms[b]:.2f}" if a in ms and b in ms else "-"

    return [cell, n_hidden, length, *(cell_of(label) for label, _, _ in METHODS),
            ratio("D-RTRL", "BPTT"), ratio("ES-D-RTRL", "BPTT"), ratio("ES-D-RTRL", "forward")]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--full", action="store_true",
                        help="the issue-14 grid: all cells, N in {64, 256, 1024}, T in {100, 1000}")
    parser.add_argument("--cells", nargs="+", choices=CELLS, default=None)
    parser.add_argument("--hidden", type=int, nargs="+", default=None)
    parser.add_argument("--lengths", type=int, nargs="+", default=None)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=5, help="timed rounds per row (median)")
    parser.add_argument("--skip-large-drtrl", type=int, default=0,
                        help="skip D-RTRL for N at or above this size (0: never)")
    parser.add_argument("--per-step-too", action="store_true",
                        help="also time ES-D-RTRL with gradient_window=1 (one outer product per step)")
    args = parser.parse_args(argv)
    cells = args.cells or (list(CELLS) if args.full else ["elman", "gru"])
    hidden = args.hidden or ([64, 256, 1024] if args.full else [64, 256])
    lengths = args.lengths or ([100, 1000] if args.full else [100])
    rows = []
    for cell in cells:
        for n in hidden:
            for t in lengths:
                ms = time_row(cell, n, t, args.batch, args.repeats, args.skip_large_drtrl,
                              per_step_too=args.per_step_too)
                row = format_row(cell, n, t, ms, args.skip_large_drtrl)
                if args.per_step_too:
                    row += [f"{ms['ES (K=1)']:.1f}", f"{ms['ES (K=1)'] / ms['BPTT']:.2f}"]
                rows.append(row)
                print(row, flush=True)
    print(f"Machine: {machine()}; batch={args.batch}, I=32, O=8; ms per sequence, median of "
          f"{args.repeats} interleaved runs per row")
    print(table(HEADERS + (["ES K=1", "ES K=1/BPTT"] if args.per_step_too else []), rows))
    return rows


if __name__ == "__main__":
    main()
