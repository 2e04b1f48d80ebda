"""Run every benchmark and write ``benchmarks/results.md`` (plus a memory plot).

``python -m benchmarks`` runs the quick grid (minutes on a laptop CPU); ``--full`` runs the
speed grid of issue 14 (Elman, GRU, LSTM, LIF; N in {64, 256, 1024}, T in {100, 1000}, batch 16;
D-RTRL skipped at N=1024).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import io
import pathlib

from . import coding_overhead, compile_time, memory, scaling, scan_descent, speed
from ._common import machine

HERE = pathlib.Path(__file__).parent


def _capture(fn, argv):
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        fn(argv)
    text = buffer.getvalue()
    print(text, flush=True)
    return "\n".join(line for line in text.splitlines() if line.startswith("|") or line.startswith("Machine"))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--full", action="store_true", help="the full speed grid (slow on CPU)")
    parser.add_argument("--output", default=str(HERE / "results.md"))
    args = parser.parse_args(argv)
    speed_args = (["--full", "--repeats", "3", "--skip-large-drtrl", "1024"] if args.full
                  else ["--hidden", "64", "256", "--lengths", "100", "--repeats", "3"])
    sections = [
        ("Compile time (2-layer GRU, 256 units)", compile_time.main, []),
        ("Long sub-stepping scan inside a step: descended vs unrolled (LIF 20->30)", scan_descent.main, []),
        ("Compiled memory of one gradient over a sequence (Elman, N=128, batch 16)", memory.main,
         ["--plot", str(HERE / "memory.png")]),
        ("Time per sequence, forward + gradient", speed.main, speed_args),
        ("Overhead of coding statistics (GRU N=256, K=16)", coding_overhead.main, []),
        ("Data-parallel throughput against forced host devices (ES-D-RTRL, GRU N=128, batch 64)",
         scaling.main, []),
    ]
    parts = [f"# Benchmark results\n\nMeasured {datetime.date.today().isoformat()} on: {machine()}.\n"
             "Regenerate with `python -m benchmarks` (add `--full` for the whole speed grid).\n"]
    for title, fn, fn_args in sections:
        parts.append(f"## {title}\n\n{_capture(fn, fn_args)}\n")
    parts.append("![memory vs sequence length](memory.png)\n")
    output = pathlib.Path(args.output)
    existing = output.read_text() if output.exists() else ""
    output.write_text(merge_results("\n".join(parts), existing))
    print(f"wrote {args.output}")


#: Everything from this line on in ``results.md`` is written by hand (profiles, the issue
#: write-ups, grids run with other options) and survives ``python -m benchmarks``.
KEEP_MARKER = "<!-- Sections below are kept by `python -m benchmarks`; it regenerates only those above. -->"


def merge_results(generated: str, existing: str) -> str:
    """``generated`` followed by the part of ``existing`` from :data:`KEEP_MARKER` on.

    Without the marker in ``existing`` the result is ``generated`` and the marker.

    >>> merge_results("# new", "# old\\n" + KEEP_MARKER + "\\n## kept").splitlines()[-1]
    '## kept'
    """
    kept = existing[existing.index(KEEP_MARKER):] if KEEP_MARKER in existing else KEEP_MARKER + "\n"
    return generated.rstrip("\n") + "\n\n" + kept


if __name__ == "__main__":
    main()
