"""Shared pieces of the benchmarks: models, a BPTT baseline, timing and tables."""

from __future__ import annotations

import time

import brainstate
import jax
import jax.numpy as jnp

import braintrace
import braintrace.nn as bnn


class Readout(brainstate.nn.Module):
    """A recurrent cell (Elman or GRU) followed by a linear readout."""

    def __init__(self, cell: str, n_in: int, n_hidden: int, n_out: int = 4):
        super().__init__()
        cls = {"elman": bnn.ValinaRNNCell, "gru": bnn.GRUCell}[cell]
        self.cell = cls(n_in, n_hidden)
        self.out = bnn.Linear(n_hidden, n_out)

    def update(self, x):
        return self.out(self.cell(x))


def loss_fn(y):
    return jnp.mean(y ** 2)


def make_runner(method: str, cell: str, n_hidden: int, batch: int, n_in: int = 32, **options):
    """Return ``grads(xs)``: gradients over a sequence, for ``brainstate.transform.jit``."""
    model = Readout(cell, n_in, n_hidden)
    example = jnp.zeros((batch, n_in))
    if method == "bptt":
        brainstate.nn.init_all_states(model, batch)
        params = dict(model.states(brainstate.ParamState))

        def grads(xs):
            total = lambda: jnp.sum(brainstate.transform.for_loop(lambda x: loss_fn(model(x)), xs))  # noqa: E731
            return brainstate.transform.grad(total, grad_states=params)()

        return grads
    learner = braintrace.compile(model, method, example, batch_size=batch, **options)

    def grads(xs):
        return learner.etrace_grad(xs, step_fn=lambda x: loss_fn(learner(x)))

    return grads


def compiled_memory(method, cell, n_hidden, batch, length, **options) -> int:
    """Temporary + output bytes XLA reserves for one jitted gradient over a sequence."""
    fn = make_runner(method, cell, n_hidden, batch, **options)
    xs = jax.ShapeDtypeStruct((length, batch, 32), jnp.float32)
    stats = brainstate.transform.jit(fn).lower(xs).compile().memory_analysis()
    return int(stats.temp_size_in_bytes + stats.output_size_in_bytes)


def best_time(fn, xs, repeats: int) -> float:
    """Best wall time of ``fn(xs)`` over ``repeats`` runs, after one warm-up (compile) run."""
    jax.block_until_ready(fn(xs))
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn(xs))
        best = min(best, time.perf_counter() - start)
    return best


def time_per_sequence(method, cell, n_hidden, batch, length, repeats=3, **options) -> float:
    fn = brainstate.transform.jit(make_runner(method, cell, n_hidden, batch, **options))
    xs = jax.random.normal(jax.random.PRNGKey(0), (length, batch, 32))
    return best_time(fn, xs, repeats)


def table(headers, rows) -> str:
    widths = [max(len(str(h)), *(len(str(r[i])) for r in rows)) for i, h in enumerate(headers)]
    line = "| " + " | ".join(str(h).ljust(w) for h, w in zip(headers, widths)) + " |"
    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    body = ["| " + " | ".join(str(c).ljust(w) for c, w in zip(r, widths)) + " |" for r in rows]
    return "\n".join([line, sep, *body])


def machine() -> str:
    import os
    import platform

    device = jax.devices()[0]
    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, JAX {jax.__version__} on {device.platform}:{device.device_kind}"
