"""Where one online-learning step spends its time (issue 14).

For one cell (default GRU, N=256, B=16, I=32, O=8, T=200) this measures, in one process:

* per step (a jitted single step of the learner, or of the plain model): the number of jaxpr
  equations (nested jaxprs counted) and XLA's cost analysis (FLOPs, bytes accessed) of the
  forward, of forward + trace roll, of the full online gradient, and of the gradient with a
  solve that does nothing (so ``backward`` and ``solve`` separate);
* per sequence of T steps (median of ``--repeats`` timed runs after a warm-up): a plain
  forward pass, BPTT, ``etrace_evolve`` (forward + trace roll), the online gradient with a
  zero solve, and the full online gradient. The split is

  - forward = plain forward pass,
  - trace roll = ``etrace_evolve`` - forward,
  - backward = zero-solve gradient - ``etrace_evolve``,
  - solve = full gradient - zero-solve gradient.

Differences of medians are noisy on a shared CPU (a few ms); quote them as such.

Run ``python -m benchmarks.profile_step [--cell gru] [--hidden 256] [--length 200]``.
"""

from __future__ import annotations

import argparse
import dataclasses
import re

import brainstate
import jax
import jax.numpy as jnp

import braintrace

try:
    from ._common import Readout, interleaved_medians, loss_fn, machine, make_runner, table
except ImportError:  # run as a script
    from _common import Readout, interleaved_medians, loss_fn, machine, make_runner, table

ALGORITHMS = [("D-RTRL", braintrace.D_RTRL, {}), ("ES-D-RTRL", braintrace.ES_D_RTRL, {"decay_or_rank": 0.9})]


def _zero_solve(cls):
    """A learner class whose rule's ``solve`` returns zero gradients (isolates the backward pass)."""

    class ZeroSolve(cls):
        def _compile_rule(self, graph):
            rule = super()._compile_rule(graph)

            class ZeroSolveRule(type(rule)):
                def solve(self, ctx, state, signals, q, step):
                    real = super().solve(ctx, state, signals, q, step)
                    return [{k: jnp.zeros_like(g) for k, g in grads.items()} for grads in real]

            fields = {f.name: getattr(rule, f.name) for f in dataclasses.fields(rule)}
            return dataclasses.dataclass(frozen=True)(ZeroSolveRule)(**fields)

    ZeroSolve.__name__ = f"ZeroSolve{cls.__name__}"
    return ZeroSolve


def count_eqns(jaxpr) -> int:
    """Equations of a jaxpr, counting those of nested jaxprs (pjit, custom_vjp, scan bodies)."""
    total = 0
    for eqn in jaxpr.eqns:
        total += 1
        for param in eqn.params.values():
            for sub in param if isinstance(param, (list, tuple)) else (param,):
                inner = getattr(sub, "jaxpr", sub)
                if hasattr(inner, "eqns"):
                    total += count_eqns(inner)
    return total


def step_profile(fn, x) -> dict:
    """Jaxpr equation count and XLA cost analysis of ``fn(x)`` (a brainstate stateful fn)."""
    jaxpr, _ = brainstate.transform.make_jaxpr(fn)(x)
    cost = brainstate.transform.jit(fn).lower(x).compile().cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    return {"eqns": count_eqns(jaxpr.jaxpr if hasattr(jaxpr, "jaxpr") else jaxpr),
            "flops": float(cost.get("flops", float("nan"))),
            "bytes": float(cost.get("bytes accessed", float("nan")))}


def build(cell, n_hidden, batch, n_in, n_out, cls=None, **options):
    """A batched ``Readout`` model and, when ``cls`` is given, its compiled learner."""
    model = Readout(cell, n_in, n_hidden, n_out)
    brainstate.nn.init_all_states(model, batch)
    if cls is None:
        return model, None
    learner = cls(model, **options)
    learner.compile_graph(jnp.zeros((batch, n_in)))
    return model, learner


def _row(label, what, prof):
    return [label, what, prof["eqns"], f"{prof['flops'] / 1e6:.2f}", f"{prof['bytes'] / 1e6:.2f}"]


def profile(cell="gru", n_hidden=256, batch=16, n_in=32, n_out=8, length=200, repeats=7):
    x = jax.random.normal(jax.random.PRNGKey(1), (batch, n_in))
    xs = jax.random.normal(jax.random.PRNGKey(0), (length, batch, n_in))
    step_rows, fns = [], {}

    model, _ = build(cell, n_hidden, batch, n_in, n_out)
    params = dict(model.states(brainstate.ParamState))
    step_rows.append(_row("model", "forward", step_profile(lambda x: model(x), x)))
    step_rows.append(_row("model", "BPTT step grad", step_profile(
        lambda x: brainstate.transform.grad(lambda: loss_fn(model(x)), grad_states=params)(), x)))
    fns["forward"] = brainstate.transform.jit(lambda xs: brainstate.transform.for_loop(model, xs))
    fns["BPTT"] = brainstate.transform.jit(lambda xs: brainstate.transform.grad(
        lambda: jnp.sum(brainstate.transform.for_loop(lambda x: loss_fn(model(x)), xs)), grad_states=params)())

    for label, cls, options in ALGORITHMS:
        for variant, klass in (("full", cls), ("zero solve", _zero_solve(cls))):
            _, learner = build(cell, n_hidden, batch, n_in, n_out, klass, **options)
            params_l = learner.param_states

            def step_grad(x, learner=learner, params=params_l):
                return brainstate.transform.grad(lambda: loss_fn(learner(x)), grad_states=params)()

            def seq_grad(xs, learner=learner):
                return learner.etrace_grad(xs, step_fn=lambda x: loss_fn(learner(x)))

            if variant == "full":
                step_rows.append(_row(label, "forward + roll", step_profile(lambda x, learner=learner: learner(x), x)))
                fns[f"{label} etrace_evolve"] = brainstate.transform.jit(
                    lambda xs, learner=learner: learner.etrace_evolve(xs, return_outputs=True))
            step_rows.append(_row(label, f"step grad ({variant})", step_profile(step_grad, x)))
            fns[f"{label} grad" + ("" if variant == "full" else ", zero solve")] = brainstate.transform.jit(seq_grad)

    t = interleaved_medians(fns, xs, repeats)
    t_fwd, t_bptt = t["forward"], t["BPTT"]
    seq_rows = [[name, f"{v * 1e3:.1f}", f"{v / t_fwd:.2f}", f"{v / t_bptt:.2f}"] for name, v in t.items()]
    results = dict(t)
    split_rows = []
    for label, _, _ in ALGORITHMS:
        split = {
            "forward": t_fwd,
            "trace roll": t[f"{label} etrace_evolve"] - t_fwd,
            "backward": t[f"{label} grad, zero solve"] - t[f"{label} etrace_evolve"],
            "solve": t[f"{label} grad"] - t[f"{label} grad, zero solve"],
        }
        results[f"{label} split"] = split
        split_rows.append([label, *(f"{v * 1e3:.1f}" for v in split.values())])

    header = (f"Machine: {machine()}; {cell} N={n_hidden}, B={batch}, I={n_in}, O={n_out}, T={length}; "
              f"median of {repeats} interleaved runs")
    text = "\n\n".join([
        header,
        "Per step (one jitted step; MFLOP / MB from XLA cost analysis):\n"
        + table(["learner", "function", "jaxpr eqns", "MFLOP", "MB accessed"], step_rows),
        "Per sequence (ms):\n" + table(["what", "ms", "/ forward", "/ BPTT"], seq_rows),
        "Split per sequence (ms; differences of medians):\n"
        + table(["learner", "forward", "trace roll", "backward", "solve"], split_rows),
    ])
    return text, results


def thunk_profile(fn, xs, top: int = 12, runs: int = 3) -> list:
    """The ``top`` XLA:CPU thunks (fusions, dots, loops) by time, ms per sequence.

    Uses ``jax.profiler.trace(create_perfetto_trace=True)``: XLA:CPU records one event per
    executed thunk, named like the optimised HLO instruction (``ynn_fusion.2``, ``dot.12``),
    so a name can be looked up in ``jax.jit(fn).lower(xs).compile().as_text()``.
    """
    import collections
    import gzip
    import json
    import pathlib
    import tempfile

    jax.block_until_ready(fn(xs))
    jax.block_until_ready(fn(xs))
    with tempfile.TemporaryDirectory() as folder:
        with jax.profiler.trace(folder, create_perfetto_trace=True):
            for _ in range(runs):
                jax.block_until_ready(fn(xs))
        path = next(pathlib.Path(folder).rglob("*.json.gz"))
        events = json.load(gzip.open(path))
    events = events["traceEvents"] if isinstance(events, dict) else events
    total, count = collections.Counter(), collections.Counter()
    for event in events:
        name = event.get("name", "")
        # HLO instruction names only (not the runtime's own spans, which are CamelCase/spaced).
        if event.get("ph") == "X" and re.fullmatch(r"[a-z][a-z0-9_\-]*(\.[0-9]+)*", name):
            total[name] += event["dur"]
            count[name] += 1
    return [[name, count[name] // runs, f"{us / runs / 1e3:.1f}"] for name, us in total.most_common(top)]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cell", default="gru", choices=["elman", "gru", "lstm", "lif"])
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--inputs", type=int, default=32)
    parser.add_argument("--outputs", type=int, default=8)
    parser.add_argument("--length", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--thunks", action="store_true",
                        help="also list the slowest XLA thunks of BPTT, D-RTRL and ES-D-RTRL over a sequence")
    args = parser.parse_args(argv)
    text, _ = profile(args.cell, args.hidden, args.batch, args.inputs, args.outputs, args.length, args.repeats)
    print(text)
    if args.thunks:
        xs = jax.random.normal(jax.random.PRNGKey(0), (args.length, args.batch, args.inputs))
        for label, method, options in (("BPTT", "bptt", {}), ("D-RTRL", "d_rtrl", {}),
                                       ("ES-D-RTRL", "es_d_rtrl", {"decay_or_rank": 0.9})):
            fn = brainstate.transform.jit(make_runner(method, args.cell, args.hidden, args.batch,
                                                      n_in=args.inputs, n_out=args.outputs, **options))
            rows = thunk_profile(fn, xs)
            print(f"\nSlowest thunks, {label} (ms per sequence):\n"
                  + table(["thunk", "runs / sequence", "ms"], rows))


if __name__ == "__main__":
    main()
