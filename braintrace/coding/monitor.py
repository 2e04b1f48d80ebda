# Copyright 2026 The braintrace authors. Licensed under the Apache License, Version 2.0.
"""Coding statistics of every hidden group of an online learner, as jitted side outputs.

:func:`monitor_hidden` attaches one :class:`Codebook` to each hidden group of a compiled
graph. After every step it reads the group's new values (stacked to ``(*varshape, S)`` and
flattened so that one point is ``varshape[-1] * S`` features, one point per leading
position, e.g. per batch element), codes them with :func:`coding_statistics` under
``stop_gradient`` and, with ``update='ema'``, moves the codebook toward them. It reads
states and writes only its own codebook states, so the model's states, the traces and the
gradients are exactly what they would be without it.

The codebooks are the monitor's own states, outside the model, so with a ``vmap=True``
learner one codebook sees the points of every lane (the statistics are the batched
learner's). The monitor relies on the learner's public surface only (``graph``, ``model``,
``etrace_grad``, ``etrace_evolve``), so this layer does not import the algorithms.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import brainstate
import jax
import jax.numpy as jnp

from ..compiler.diagnostics import format_path
from ..compiler.graph import ETraceGraph
from .codebook import Codebook
from .coding_statistics import coding_statistics
from .coding_trace import CodingTrace
from .reducers import RandomProjection

__all__ = ["HiddenMonitor", "monitor_hidden", "summarize_trace"]

STATISTICS = ("utilization", "entropy", "code_length", "commitment")


def summarize_trace(trace: CodingTrace, num_codes: int) -> dict:
    """Per-call scalars of a coding trace (jit-friendly arrays).

    ``utilization`` is the fraction of the ``K`` codes chosen at least once among the
    trace's points; the others are means over its points.

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> from braintrace.coding import coding_statistics, summarize_trace
    >>> centers = jnp.array([[0.0, 0.0], [1.0, 1.0]])
    >>> trace = coding_statistics(jnp.array([[0.1, 0.0], [0.9, 1.0]]), centers)
    >>> float(summarize_trace(trace, num_codes=2)['utilization'])
    1.0
    """
    chosen = jnp.reshape(trace.chosen_center_indices, (-1,))
    visited = jnp.max(jax.nn.one_hot(chosen, num_codes), axis=0)
    return {
        "utilization": jnp.sum(visited) / num_codes,
        "entropy": jnp.mean(trace.soft_code.entropy),
        "code_length": jnp.mean(trace.soft_code.best_length),
        "commitment": jnp.mean(trace.commitment_distances),
    }


class _Observed:
    """The learner and graph, kept out of brainstate's module-graph traversal (so the
    monitor's states are its codebooks only)."""

    __slots__ = ("learner", "graph")

    def __init__(self, learner, graph):
        self.learner = learner
        self.graph = graph


class HiddenMonitor(brainstate.nn.Module):
    """Observe-only coding statistics for the hidden groups of a compiled graph.

    Create it with :func:`monitor_hidden`.

    Attributes
    ----------
    graph : ETraceGraph
        The observed graph.
    learner : ETraceAlgorithm or None
        The learner whose sequences :meth:`etrace_grad` / :meth:`etrace_evolve` drive.
    codebooks : list of Codebook
        One per hidden group, ``(K, coding_dim or varshape[-1] * S)``.
    """

    def __init__(self, learner_or_graph, *, K: int = 16, coding_dim: int | None = None,
                 temperature: float = 1.0, update: str = "ema", decay: float = 0.99, seed: int = 0,
                 restart_after: int | None = None):
        super().__init__()
        if isinstance(learner_or_graph, ETraceGraph):
            learner, graph = None, learner_or_graph
        elif hasattr(learner_or_graph, "graph") and hasattr(learner_or_graph, "etrace_grad"):
            learner, graph = learner_or_graph, learner_or_graph.graph
        else:
            raise TypeError(
                "monitor_hidden expects a compiled online learner (e.g. from braintrace.compile) or an "
                f"ETraceGraph; got {type(learner_or_graph).__name__}."
            )
        if temperature <= 0 or not jnp.isfinite(temperature):
            raise ValueError(f"`temperature` must be a positive finite number; got {temperature!r}.")
        self._observed = _Observed(learner, graph)
        self.num_codes = int(K)
        self.temperature = float(temperature)
        self._projections = []
        books = []
        for group in graph.hidden_groups:
            features = int(group.varshape[-1]) * group.num_state if group.varshape else group.num_state
            dim = features if coding_dim is None else int(coding_dim)
            if dim > features:
                raise ValueError(
                    f"`coding_dim`={dim} exceeds the {features} features of hidden group {group.index} "
                    f"({[format_path(p) for p in group.hidden_paths]})."
                )
            self._projections.append(None if dim == features else RandomProjection(dim, seed=seed + group.index))
            books.append(Codebook(K, dim, seed=seed + group.index, update=update, decay=decay,
                                  restart_after=restart_after))
        self.codebooks = books

    @property
    def graph(self) -> ETraceGraph:
        return self._observed.graph

    @property
    def learner(self):
        return self._observed.learner

    # ------------------------------------------------------------------ observing
    def _group_points(self, group) -> jax.Array:
        states = self._model_states()
        values = [jax.tree.leaves(states[p].value)[0] for p in group.hidden_paths]
        stacked = group.concat_hidden(values)
        lead = stacked.shape[:-2] if group.varshape else ()
        return jax.lax.stop_gradient(stacked.reshape(lead + (-1,)))

    def _model_states(self) -> dict:
        if self.learner is not None:
            return dict(self.learner.model.states())
        return dict(self.graph.module_info.retrieved_model_states)

    def observe(self) -> dict[int, CodingTrace]:
        """Code the current hidden values of every group (and update EMA codebooks).

        Returns ``{group index: CodingTrace}``.
        """
        traces = {}
        for group, book, project in zip(self.graph.hidden_groups, self.codebooks, self._projections, strict=True):
            points = self._group_points(group)
            trace = coding_statistics(points, book.centers.value, reducer=project, temperature=self.temperature)
            book.update(trace.reduced, trace.chosen_center_indices)
            traces[group.index] = trace
        return traces

    def statistics(self) -> dict[int, dict]:
        """:meth:`observe` summarised to scalars per group."""
        return {g: summarize_trace(t, self.num_codes) for g, t in self.observe().items()}

    # ------------------------------------------------------------------ drivers
    def _require_learner(self, what: str):
        if self.learner is None:
            raise ValueError(f"`{what}` needs a learner; this monitor was built from a graph only.")
        return self.learner

    def etrace_grad(self, *sequences, step_fn: Callable, has_aux: bool = False, **kwargs):
        """``learner.etrace_grad`` with per-step coding statistics.

        Returns ``(result, stats)``: ``result`` is exactly what ``learner.etrace_grad`` returns
        with the same arguments, and ``stats[group][name]`` is a ``(T,)`` array for ``name``
        in ``utilization, entropy, code_length, commitment``.
        """
        learner = self._require_learner("etrace_grad")

        def observed_step(*xs):
            out = step_fn(*xs)
            stats = self.statistics()
            if has_aux:
                loss, aux = out
                return loss, (aux, stats)
            return out, stats

        *head, packed = learner.etrace_grad(*sequences, step_fn=observed_step, has_aux=True, **kwargs)
        if has_aux:
            user_aux, stats = packed
            return (*head, user_aux), stats
        return (head[0] if len(head) == 1 else tuple(head)), packed

    def etrace_evolve(self, *sequences) -> dict:
        """Advance the learner over sequences; return the per-step statistics per group."""
        learner = self._require_learner("etrace_evolve")

        def step(*xs):
            learner.update(*xs)
            return self.statistics()

        return brainstate.transform.for_loop(step, *sequences)



def monitor_hidden(learner_or_graph: Any, *, K: int = 16, coding_dim: int | None = None,
                   temperature: float = 1.0, update: str = "ema", decay: float = 0.99,
                   seed: int = 0, restart_after: int | None = None) -> HiddenMonitor:
    """Watch the coding statistics of every hidden group of an online learner.

    Parameters
    ----------
    learner_or_graph : ETraceAlgorithm or ETraceGraph
        A compiled learner (for :meth:`HiddenMonitor.etrace_grad` / ``etrace_evolve``) or a
        graph (for :meth:`HiddenMonitor.observe` on the model's current states).
    K : int
        Codes per codebook.
    coding_dim : int, optional
        Project each point to this many features with a fixed random projection.
    temperature : float
        Softmax temperature of the soft assignment.
    update : {'ema', 'none'}
        Fit the codebooks online with EMA k-means (default) or keep them fixed.
    decay : float
        EMA decay.
    seed : int
        Seed of the codebooks and projections.
    restart_after : int, optional
        Re-seed a code unused for this many consecutive steps (with ``update='ema'``; see
        :class:`Codebook`). Off by default.

    Returns
    -------
    HiddenMonitor

    Examples
    --------
    >>> import brainstate, jax.numpy as jnp
    >>> import braintrace
    >>> learner = braintrace.compile(braintrace.nn.GRUCell(2, 8), 'd_rtrl', jnp.zeros((4, 2)), batch_size=4)
    >>> monitor = braintrace.coding.monitor_hidden(learner, K=8)
    >>> grads, stats = monitor.etrace_grad(jnp.ones((5, 4, 2)), step_fn=lambda x: jnp.mean(learner(x) ** 2))
    >>> sorted(stats[0]), stats[0]['utilization'].shape
    (['code_length', 'commitment', 'entropy', 'utilization'], (5,))
    """
    return HiddenMonitor(learner_or_graph, K=K, coding_dim=coding_dim, temperature=temperature,
                         update=update, decay=decay, seed=seed, restart_after=restart_after)
