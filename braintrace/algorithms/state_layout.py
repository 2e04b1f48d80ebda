# Copyright 2026 The braintrace authors. Licensed under the Apache License, Version 2.0.
"""Where the compiled states' leaves sit: the one owner of the learner's state layout.

The compiled step sees the model's states in one order (``module_info.compiled_model_states``).
The learner passes them as two lists: the ``ParamState`` leaves (differentiated, routed to
gradients) and the other leaves (hidden and other states, written back after the step).
:class:`StateLayout` says which state goes where, and provides every conversion the learner,
the executor and the multi-step windows need, so that none of them recomputes it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import brainstate

__all__ = ["StateLayout"]


class StateLayout(NamedTuple):
    """How the compiled states split into parameters and the rest.

    Attributes
    ----------
    param_indices, other_indices : tuple of int
        Positions, in the compiled state order, of the ``ParamState`` objects and of the
        others (hidden and other states).
    param_paths : tuple
        The paths of the ``ParamState`` objects (``param_indices`` order).
    treedefs : tuple
        Per compiled state, the tree structure of its value.
    other_leaf_counts : tuple of int
        Per non-parameter state (``other_indices`` order), its number of leaves.
    hidden_other_slots : tuple of (int, tuple)
        ``(slot, path)`` of the ``HiddenState`` objects among the non-parameter states.
    main_output_positions : tuple of int
        Positions, among the step jaxpr's outputs, of the model output leaves followed by
        the new leaves of every non-parameter state.

    Examples
    --------
    >>> import brainstate, jax, jax.numpy as jnp
    >>> import braintrace
    >>> from braintrace.algorithms.state_layout import StateLayout
    >>> cell = braintrace.nn.GRUCell(3, 4)
    >>> _ = brainstate.nn.init_all_states(cell)
    >>> import warnings
    >>> with warnings.catch_warnings():
    ...     warnings.simplefilter("ignore")
    ...     layout = StateLayout.of(braintrace.compile_etrace_graph(cell, jnp.ones(3)))
    >>> layout.param_paths, layout.hidden_other_slots
    ((('Wr', 'weight'), ('Wz', 'weight'), ('Wh', 'weight')), ((0, ('h',)),))
    """

    param_indices: tuple
    other_indices: tuple
    param_paths: tuple
    treedefs: tuple
    other_leaf_counts: tuple = ()
    hidden_other_slots: tuple = ()
    main_output_positions: tuple = ()

    @classmethod
    def of(cls, graph) -> StateLayout:
        """The layout of a compiled :class:`~braintrace.ETraceGraph`."""
        minfo = graph.module_info
        p_idx, o_idx, paths, counts, hidden = [], [], [], [], []
        for i, st in enumerate(minfo.compiled_model_states):
            path = minfo.state_id_to_path[id(st)]
            if isinstance(st, brainstate.ParamState):
                p_idx.append(i)
                paths.append(path)
            else:
                if path in minfo.hidden_path_to_invar:
                    hidden.append((len(o_idx), path))
                o_idx.append(i)
                counts.append(minfo.state_treedefs[i].num_leaves)
        positions = list(range(minfo.num_var_out))
        position = minfo.num_var_out
        others = set(o_idx)
        for i, outs in enumerate(minfo.state_tree_outvars):
            if i in others:
                positions.extend(range(position, position + len(outs)))
            position += len(outs)
        return cls(tuple(p_idx), tuple(o_idx), tuple(paths), tuple(minfo.state_treedefs), tuple(counts),
                   tuple(hidden), tuple(positions))

    def split(self, leaves_per_state: Sequence[Sequence[Any]]) -> tuple[list, list]:
        """Per-state leaf lists (compiled order) split into ``(params, others)``."""
        return ([leaves_per_state[i] for i in self.param_indices],
                [leaves_per_state[i] for i in self.other_indices])

    def merge(self, param_leaves: Sequence[Sequence[Any]], other_leaves: Sequence[Sequence[Any]]) -> list:
        """Flat leaves of every compiled state, in compiled order."""
        per_state = [None] * (len(self.param_indices) + len(self.other_indices))
        for i, leaves in zip(self.param_indices, param_leaves, strict=True):
            per_state[i] = list(leaves)
        for i, leaves in zip(self.other_indices, other_leaves, strict=True):
            per_state[i] = list(leaves)
        return [leaf for leaves in per_state for leaf in leaves]

    def group_other_leaves(self, flat_other_leaves: Sequence[Any]) -> list:
        """The flat new leaves of the non-parameter states as one list per state."""
        out, position = [], 0
        for count in self.other_leaf_counts:
            out.append(list(flat_other_leaves[position:position + count]))
            position += count
        return out

    def rebuild_state_values(self, param_leaves: Sequence[Sequence[Any]], flat_other_leaves: Sequence[Any]) -> list:
        """Flat leaves of every compiled state from the parameters and the step's new other leaves."""
        return self.merge(param_leaves, self.group_other_leaves(flat_other_leaves))

    def hidden_values_by_path(self, other_values: Sequence[Sequence[Any]]) -> dict:
        """``{hidden path: value}`` from per-state values of the non-parameter states.

        A ``HiddenState`` has one leaf; ``other_values`` is one list of leaves per state (for
        example the step's cotangents of the non-parameter states).
        """
        return {path: other_values[slot][0] for slot, path in self.hidden_other_slots}

    def param_slot(self, path) -> int:
        """The position of a ``ParamState`` path among the parameter states."""
        return self.param_paths.index(path)
