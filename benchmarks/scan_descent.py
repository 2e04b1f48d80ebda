"""Compile time and compiled memory of a step holding a long sub-stepping ``scan`` (issue 11).

A LIF layer (20 inputs, 30 neurons) whose membrane is advanced ``L`` Euler substeps inside
each step by a ``jax.lax.scan`` with the ETP input inside the body. Descended (the default
policy) the step keeps one scan equation, so graph compilation, XLA compilation and XLA's
temporary memory do not depend on ``L``; unrolled (``scan_unroll_limit=L``) every one grows
with it. XLA numbers are for one jitted online-gradient step (forward, trace fold, backward).
"""

from __future__ import annotations

import argparse
import time

import brainstate
import braintools
import jax
import jax.numpy as jnp

import braintrace

try:
    from ._common import machine, table
except ImportError:  # run as a script
    from _common import machine, table


class SubstepLIF(brainstate.nn.Module):
    """A LIF membrane advanced ``length`` Euler substeps per step; the ETP input is in the body."""

    def __init__(self, n_in: int, n: int, length: int):
        super().__init__()
        self.w = brainstate.ParamState(brainstate.random.randn(n_in, n) * 0.5)
        self.n, self.length = n, length

    def init_state(self, *args, **kwargs):
        self.v = brainstate.HiddenState(jnp.zeros(self.n))

    def update(self, x):
        def body(v, _):
            return v + 0.05 * (-v + braintrace.matmul(x, self.w.value)), None

        v, _ = jax.lax.scan(body, self.v.value, None, length=self.length)
        spike = braintools.surrogate.sigmoid(v - 1.0)
        self.v.value = v - jax.lax.stop_gradient(spike)
        return spike


def measure(length: int, unroll: bool = False, n_in: int = 20, n: int = 30) -> dict:
    """Graph compile time, XLA compile time and temp bytes of one online-gradient step."""
    model = SubstepLIF(n_in, n, length)
    brainstate.nn.init_all_states(model)
    policy = braintrace.ControlFlowPolicy(scan_unroll_limit=length if unroll else 16)
    start = time.perf_counter()
    learner = braintrace.D_RTRL(model, control_flow=policy)
    graph = learner.compile_graph(jnp.ones(n_in))
    graph_s = time.perf_counter() - start
    compiled = learner._compiled
    leaves = [jax.tree.leaves(st.value) for st in learner._current_states()]
    params, others = compiled.layout.split(leaves)

    def train_step(args, params, others, traces, step):
        def loss(params):
            main, new_traces = compiled.step_fn(args, params, others, traces, step, None)
            return jnp.sum(main[0] ** 2), new_traces

        return jax.grad(loss, has_aux=True)(params)

    start = time.perf_counter()
    executable = jax.jit(train_step).lower([jnp.ones(n_in)], params, others, learner.etrace.value,
                                           jnp.asarray(0, jnp.int32)).compile()
    xla_s = time.perf_counter() - start
    return {"length": length, "mode": "unrolled" if unroll else "descended",
            "eqns": len(graph.module_info.closed_jaxpr.eqns), "graph_s": graph_s, "xla_s": xla_s,
            "temp_bytes": int(executable.memory_analysis().temp_size_in_bytes),
            "applied": bool(graph.explain(kind=braintrace.DiagnosticKind.SCAN_DESCENT_APPLIED))}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--lengths", type=int, nargs="+", default=[100, 1000])
    parser.add_argument("--unrolled", type=int, nargs="*", default=[40], help="lengths to also unroll")
    args = parser.parse_args(argv)
    measure(args.lengths[0])  # warm-up: first imports and tracing caches
    results = [measure(length) for length in args.lengths]
    results += [measure(length, unroll=True) for length in args.unrolled]
    rows = [(r["mode"], r["length"], r["eqns"], f"{r['graph_s']:.3f}", f"{r['xla_s']:.3f}", r["temp_bytes"])
            for r in results]
    print(f"Machine: {machine()}; LIF 20->30, one online-gradient step (D-RTRL)")
    print(table(["scan", "substeps L", "jaxpr eqns", "graph compile (s)", "XLA compile (s)", "XLA temp (bytes)"],
                rows))
    return results


if __name__ == "__main__":
    main()
