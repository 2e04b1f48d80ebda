"""Shared pieces of the benchmarks: models, a BPTT baseline, timing and tables."""

from __future__ import annotations

import statistics
import time

import braintools
import brainstate
import jax
import jax.numpy as jnp

import braintrace
import braintrace.nn as bnn


CELLS = ("elman", "gru", "lstm", "lif")


class RecurrentLIF(brainstate.nn.Module):
    """A recurrent LIF layer: ``V ← LIF(V, [x, spikes(V)] @ W)`` (unitless, ``dt = 1``).

    The input and recurrent weights are one dense ETP op on the concatenation of the input and
    the previous step's (surrogate-gradient) spikes, like the rate cells.
    """

    dt = 1.0

    def __init__(self, n_in: int, n_hidden: int):
        super().__init__()
        self.weight = bnn.Linear(n_in + n_hidden, n_hidden,
                                 w_init=braintools.init.KaimingNormal(scale=2.0))
        self.neuron = bnn.LIF(n_hidden, R=1.0, tau=5.0, V_th=1.0, V_reset=0.0, V_rest=0.0,
                              V_initializer=braintools.init.Constant(0.0),
                              spk_fun=braintools.surrogate.Sigmoid(alpha=4.0))

    def update(self, x):
        with brainstate.environ.context(dt=self.dt):
            spikes = self.neuron.get_spike()
            return self.neuron(self.weight(jnp.concatenate([x, spikes], axis=-1)))


class Readout(brainstate.nn.Module):
    """A recurrent cell (Elman, GRU, LSTM or a recurrent LIF layer) and a linear readout."""

    def __init__(self, cell: str, n_in: int, n_hidden: int, n_out: int = 4):
        super().__init__()
        if cell == "lif":
            self.cell = RecurrentLIF(n_in, n_hidden)
        else:
            cls = {"elman": bnn.ValinaRNNCell, "gru": bnn.GRUCell, "lstm": bnn.LSTMCell}[cell]
            self.cell = cls(n_in, n_hidden)
        self.out = bnn.Linear(n_hidden, n_out)

    def update(self, x):
        return self.out(self.cell(x))


def loss_fn(y):
    return jnp.mean(y ** 2)


def make_runner(method: str, cell: str, n_hidden: int, batch: int, n_in: int = 32, n_out: int = 4,
                grad_options=None, **options):
    """Return ``grads(xs)``: gradients over a sequence, for ``brainstate.transform.jit``.

    ``method`` is ``'forward'`` (the plain forward pass over the sequence, no gradient),
    ``'bptt'`` or a learner name of :func:`braintrace.compile` (``options`` go to the
    learner, ``grad_options`` to ``etrace_grad``, e.g. ``{'gradient_window': 1}``).
    """
    model = Readout(cell, n_in, n_hidden, n_out)
    example = jnp.zeros((batch, n_in))
    if method == "forward":
        brainstate.nn.init_all_states(model, batch)
        return lambda xs: brainstate.transform.for_loop(model, xs)
    if method == "bptt":
        brainstate.nn.init_all_states(model, batch)
        params = dict(model.states(brainstate.ParamState))

        def grads(xs):
            total = lambda: jnp.sum(brainstate.transform.for_loop(lambda x: loss_fn(model(x)), xs))  # noqa: E731
            return brainstate.transform.grad(total, grad_states=params)()

        return grads
    learner = braintrace.compile(model, method, example, batch_size=batch, **options)

    def grads(xs):
        return learner.etrace_grad(xs, step_fn=lambda x: loss_fn(learner(x)), **(grad_options or {}))

    return grads


def compiled_memory(method, cell, n_hidden, batch, length, **options) -> int:
    """Temporary + output bytes XLA reserves for one jitted gradient over a sequence."""
    fn = make_runner(method, cell, n_hidden, batch, **options)
    xs = jax.ShapeDtypeStruct((length, batch, 32), jnp.float32)
    stats = brainstate.transform.jit(fn).lower(xs).compile().memory_analysis()
    return int(stats.temp_size_in_bytes + stats.output_size_in_bytes)


def interleaved_medians(fns: dict, xs, repeats: int) -> dict:
    """Median wall time of every ``fn(xs)``, timed round-robin so load drift hits all alike.

    Two warm-up calls each: the first compiles (and writes the states, which may retrace).
    """
    for fn in fns.values():
        jax.block_until_ready(fn(xs))
        jax.block_until_ready(fn(xs))
    times = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            jax.block_until_ready(fn(xs))
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(ts) for name, ts in times.items()}


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
