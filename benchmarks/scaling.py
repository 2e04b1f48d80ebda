"""Data-parallel throughput against the number of devices (``compile(..., sharding=...)``).

Each device count runs in its own process: on CPU the host is split into N devices with
``XLA_FLAGS=--xla_force_host_platform_device_count=N`` (which must be set before jax is
imported); on a GPU machine ``--platform gpu`` uses the first N real devices. The batch is
split over a 1-D ``'batch'`` mesh; the time is one jitted ``etrace_grad`` over a sequence.

Forced host devices share the same CPU cores, so on a 2-core machine the table shows the
overhead of the partitioning rather than a speed-up.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))


def _worker(args) -> dict:
    import brainstate
    import jax
    import jax.numpy as jnp
    from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

    import braintrace

    sys.path.insert(0, os.path.dirname(HERE))
    from benchmarks._common import Readout, best_time, loss_fn

    devices = jax.devices()[:args.worker]
    assert len(devices) == args.worker, f"asked for {args.worker} devices, found {jax.devices()}"
    mesh = Mesh(devices, ("batch",))
    brainstate.random.seed(0)
    model = Readout(args.cell, 32, args.hidden)
    options = {"decay_or_rank": 0.9} if args.method == "es_d_rtrl" else {}
    learner = braintrace.compile(model, args.method, jnp.zeros((args.batch, 32)), batch_size=args.batch,
                                 sharding=NamedSharding(mesh, P("batch")), **options)
    fn = brainstate.transform.jit(lambda xs: learner.etrace_grad(xs, step_fn=lambda x: loss_fn(learner(x))))
    xs = jax.random.normal(jax.random.PRNGKey(0), (args.length, args.batch, 32))
    xs = jax.device_put(xs, NamedSharding(mesh, P(None, "batch")))
    seconds = best_time(fn, xs, args.repeats)
    return {"devices": args.worker, "seconds": seconds, "platform": devices[0].platform,
            "kind": devices[0].device_kind}


def run_one(n_devices: int, argv: list, platform: str) -> dict:
    env = dict(os.environ)
    if platform == "cpu":
        env["XLA_FLAGS"] = f"{env.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count={n_devices}".strip()
        env["JAX_PLATFORMS"] = "cpu"
    out = subprocess.run([sys.executable, os.path.abspath(__file__), "--worker", str(n_devices), *argv],
                         env=env, capture_output=True, text=True, cwd=os.path.dirname(HERE))
    if out.returncode != 0:
        raise RuntimeError(f"the {n_devices}-device run failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--devices", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--platform", choices=["cpu", "gpu"], default="cpu")
    parser.add_argument("--method", default="es_d_rtrl", choices=["d_rtrl", "es_d_rtrl"])
    parser.add_argument("--cell", default="gru", choices=["elman", "gru"])
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--length", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--worker", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(_worker(args)), flush=True)
        return None
    passed = ["--method", args.method, "--cell", args.cell, "--hidden", str(args.hidden), "--batch",
              str(args.batch), "--length", str(args.length), "--repeats", str(args.repeats)]
    rows, first = [], None
    for n in args.devices:
        r = run_one(n, passed, args.platform)
        throughput = args.batch / r["seconds"]
        first = first or throughput
        rows.append([n, f"{r['seconds'] * 1e3:.1f}", f"{throughput:.1f}", f"{throughput / first:.2f}"])
        print(rows[-1], flush=True)
    sys.path.insert(0, os.path.dirname(HERE))
    from benchmarks._common import table

    print(f"Machine: {os.cpu_count()} cores, {r['platform']}:{r['kind']}; {args.method}, {args.cell} N={args.hidden}, "
          f"batch={args.batch}, T={args.length}; best of {args.repeats}")
    print(table(["devices", "ms / batch of sequences", "sequences / s", "vs 1 device"], rows))
    return rows


if __name__ == "__main__":
    main()
