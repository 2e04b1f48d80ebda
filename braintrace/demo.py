# Copyright 2026 The braintrace authors. Licensed under the Apache License, Version 2.0.
"""The braintrace demo: online learning next to BPTT on an evidence-accumulation task.

Run ``python -m braintrace.demo`` (or ``make demo``). It

1. builds a spiking network (``Linear -> brainpy.state.LIF -> Linear``, in mA/mV/ms, run under
   ``brainstate.environ.context(dt=1 ms)``) and a GRU network;
2. prints what the compiler decided about each (``graph.explain()`` as a table);
3. trains each online with D-RTRL and ES-D-RTRL and, for comparison, with BPTT, on a
   synthetic task generated here (no downloads), printing the loss curves;
4. prints the compiled XLA memory of one gradient over T=100 and T=1000 steps.

``--plot out.png`` also writes the loss curves and the memory bars. Runs in about a minute
on two CPU cores.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings

import brainstate
import braintools
import brainunit as u
import jax
import jax.numpy as jnp
import numpy as np

import braintrace
import braintrace.nn as bnn

__all__ = ["main", "evidence_task", "SpikingClassifier", "GRUClassifier"]


def _say(text: str = "") -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


# ----------------------------------------------------------------------------- task
def evidence_task(key, batch: int, length: int, n_channels: int = 2):
    """Two noisy input channels; the answer is the channel with the higher mean rate.

    Returns ``(inputs (T, B, C), labels (B,), mask (T,))``; the mask selects the last
    quarter of the sequence, where the network must report its decision.
    """
    k_label, k_noise = jax.random.split(key)
    labels = jax.random.bernoulli(k_label, 0.5, (batch,)).astype(jnp.int32)
    rates = jnp.where(jax.nn.one_hot(labels, n_channels) > 0, 0.6, 0.4)
    spikes = jax.random.bernoulli(k_noise, rates[None], (length, batch, n_channels))
    mask = (jnp.arange(length) >= (3 * length) // 4).astype(jnp.float32)
    return spikes.astype(jnp.float32), labels, mask


def cross_entropy(logits, labels):
    return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), labels[:, None], axis=-1))


# ----------------------------------------------------------------------------- models
class SpikingClassifier(brainstate.nn.Module):
    """``Linear (mA) -> brainpy.state.LIF -> Linear``: the membrane integrates the evidence and
    the readout reads the membrane potential (in mV). The neuron dynamics are element-wise, so
    D-RTRL's gradient equals BPTT's here. Runs under ``brainstate.environ.context(dt=...)``."""

    def __init__(self, n_in=2, n_hidden=32, n_out=2):
        super().__init__()
        self.inp = bnn.Linear(n_in, n_hidden, w_init=braintools.init.KaimingNormal(scale=2.0, unit=u.mA),
                              b_init=braintools.init.ZeroInit(unit=u.mA))
        self.neu = bnn.LIF(n_hidden, tau=20.0 * u.ms, V_th=1.0 * u.mV,
                           spk_fun=braintools.surrogate.Sigmoid(alpha=4.0))
        self.out = bnn.Linear(n_hidden, n_out)

    def update(self, x):
        self.neu(self.inp(x))
        return self.out(self.neu.V.value / u.mV)


class GRUClassifier(brainstate.nn.Module):
    """A GRU cell with a linear readout."""

    def __init__(self, n_in=2, n_hidden=32, n_out=2):
        super().__init__()
        self.cell = bnn.GRUCell(n_in, n_hidden)
        self.out = bnn.Linear(n_hidden, n_out)

    def update(self, x):
        return self.out(self.cell(x))


DT = 1.0 * u.ms  # the time step every model runs at (``brainstate.environ``)
MODELS = {"LIF SNN": SpikingClassifier, "GRU": GRUClassifier}
METHODS = {"BPTT": None, "D-RTRL": ("d_rtrl", {}), "ES-D-RTRL": ("es_d_rtrl", {"decay_or_rank": 0.9})}


# ----------------------------------------------------------------------------- training
def _reset_hidden(model):
    for st in model.states(brainstate.HiddenState).values():
        st.value = u.math.zeros_like(st.value)


def make_trainer(factory, method, batch, length, learning_rate, seed=0):
    """Return ``train_step(key) -> loss`` (jitted, plain SGD with Adam-free momentum)."""
    brainstate.random.seed(seed)
    model = factory()
    spec = METHODS[method]
    if spec is None:
        brainstate.nn.init_all_states(model, batch)
        learner = None
    else:
        name, options = spec
        learner = braintrace.compile(model, name, jnp.zeros((batch, 2)), batch_size=batch, **options)
    params = dict(model.states(brainstate.ParamState))
    moments = {p: jax.tree.map(jnp.zeros_like, st.value) for p, st in params.items()}
    velocity = brainstate.State(moments)

    @brainstate.transform.jit
    def train_step(key):
        xs, labels, mask = evidence_task(key, batch, length)
        _reset_hidden(model)
        if learner is None:
            def total():
                logits = brainstate.transform.for_loop(model, xs)
                losses = jax.vmap(cross_entropy, in_axes=(0, None))(logits, labels)
                return jnp.sum(losses * mask) / jnp.sum(mask)

            grads, loss = brainstate.transform.grad(total, grad_states=params, return_value=True)()
        else:
            learner.reset_state()
            grads, losses = learner.etrace_grad(
                xs, step_fn=lambda x: cross_entropy(learner(x), labels), mask=mask, return_value=True)
            loss = jnp.sum(losses * mask) / jnp.sum(mask)
        new_velocity = jax.tree.map(lambda v, g: 0.9 * v + g, velocity.value, grads)
        velocity.value = new_velocity
        for path, st in params.items():
            st.value = jax.tree.map(lambda w, v: w - learning_rate * v, st.value, new_velocity[path])
        return loss

    return model, learner, train_step


def _progress(iterable, total, desc, enabled):
    if not enabled:
        return iterable
    try:
        from tqdm import tqdm
    except ImportError:  # tqdm is optional
        return iterable
    return tqdm(iterable, total=total, desc=desc, leave=False, file=sys.stdout)


# ----------------------------------------------------------------------------- reporting
def decisions_table(graph: braintrace.ETraceGraph) -> str:
    rows = [("kind", "level", "weight", "hidden", "")]
    for record in graph.explain():
        weight = ".".join(map(str, record.weight_path)) if record.weight_path else "-"
        hidden = ", ".join(".".join(map(str, p)) for p in record.hidden_paths) or "-"
        rows.append((record.kind.value, record.level.value, weight, hidden, ""))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    lines = []
    for i, row in enumerate(rows):
        lines.append("  " + "  ".join(row[j].ljust(widths[j]) for j in range(4)))
        if i == 0:
            lines.append("  " + "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def compiled_memory_mib(factory, method, batch, length) -> float:
    model = factory()
    spec = METHODS[method]
    xs = jax.ShapeDtypeStruct((length, batch, 2), jnp.float32)
    labels = jnp.zeros((batch,), jnp.int32)
    if spec is None:
        brainstate.nn.init_all_states(model, batch)
        params = dict(model.states(brainstate.ParamState))

        def fn(xs):
            total = lambda: jnp.sum(brainstate.transform.for_loop(  # noqa: E731
                lambda x: cross_entropy(model(x), labels), xs))
            return brainstate.transform.grad(total, grad_states=params)()
    else:
        name, options = spec
        learner = braintrace.compile(model, name, jnp.zeros((batch, 2)), batch_size=batch, **options)

        def fn(xs):
            return learner.etrace_grad(xs, step_fn=lambda x: cross_entropy(learner(x), labels))

    stats = brainstate.transform.jit(fn).lower(xs).compile().memory_analysis()
    return (stats.temp_size_in_bytes + stats.output_size_in_bytes) / 2 ** 20


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m braintrace.demo", description=__doc__.split("\n")[0])
    parser.add_argument("--iterations", type=int, default=60, help="training iterations per run")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--length", type=int, default=40, help="sequence length of the task")
    parser.add_argument("--plot", default=None, help="write a PNG of loss curves and memory")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    # The compiler's warnings are shown in the decision tables below.
    warnings.filterwarnings("ignore", message=r"\[warning\]")
    started = time.perf_counter()
    _say("braintrace demo: online learning with eligibility traces vs BPTT")
    _say(f"JAX {jax.__version__} on {jax.devices()[0].platform}; task: evidence accumulation, "
         f"T={args.length}, batch={args.batch}\n")

    with brainstate.environ.context(dt=DT):
        curves = _train_all(args)
        memory = _report(args, curves, started)
    if args.plot:
        _plot(curves, memory, args.plot)
        _say(f"Plot written to {args.plot}")
    return {"curves": curves, "memory": memory}


def _train_all(args) -> dict:
    curves: dict = {}
    for model_name, factory in MODELS.items():
        model = factory()
        brainstate.nn.init_all_states(model, args.batch)
        graph = braintrace.compile_etrace_graph(model, jnp.zeros((args.batch, 2)))
        _say(f"== {model_name}: what the compiler decided ==")
        _say(decisions_table(graph))
        _say()
        for method in METHODS:
            _, _, train_step = make_trainer(factory, method, args.batch, args.length,
                                            learning_rate=0.05)
            losses = []
            keys = jax.random.split(jax.random.PRNGKey(42), args.iterations)
            for key in _progress(keys, args.iterations, f"{model_name} {method}", not args.no_progress):
                losses.append(float(train_step(key)))
            curves[(model_name, method)] = losses
    return curves


def _report(args, curves, started) -> dict:
    _say("== Loss (cross-entropy on the decision window), mean of first / last 10 iterations ==")
    header = f"  {'model':<8} {'method':<10} {'start':>7} {'end':>7}"
    _say(header)
    _say("  " + "-" * (len(header) - 2))
    for (model_name, method), losses in curves.items():
        _say(f"  {model_name:<8} {method:<10} {np.mean(losses[:10]):7.3f} {np.mean(losses[-10:]):7.3f}")
    _say()

    _say("== Compiled memory of one gradient over a sequence (GRU, batch 32), MiB ==")
    memory = {}
    for method in METHODS:
        memory[method] = [compiled_memory_mib(GRUClassifier, method, args.batch, t) for t in (100, 1000)]
    _say(f"  {'method':<10} {'T=100':>8} {'T=1000':>8}")
    for method, (short, long) in memory.items():
        _say(f"  {method:<10} {short:8.2f} {long:8.2f}")
    _say(f"\nDone in {time.perf_counter() - started:.0f} s.")
    return memory


def _plot(curves, memory, path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    for ax, model_name in zip(axes[:2], MODELS):
        for method in METHODS:
            losses = np.asarray(curves[(model_name, method)])
            smooth = np.convolve(losses, np.ones(5) / 5, mode="valid")
            ax.plot(smooth, label=method)
        ax.set_title(f"{model_name}: training loss")
        ax.set_xlabel("iteration")
        ax.legend()
    methods = list(memory)
    x = np.arange(len(methods))
    axes[2].bar(x - 0.2, [memory[m][0] for m in methods], 0.4, label="T=100")
    axes[2].bar(x + 0.2, [memory[m][1] for m in methods], 0.4, label="T=1000")
    axes[2].set_xticks(x, methods)
    axes[2].set_ylabel("compiled memory (MiB)")
    axes[2].set_title("GRU gradient memory")
    axes[2].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
