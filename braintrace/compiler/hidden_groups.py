# Copyright 2026 The braintrace authors. Licensed under the Apache License, Version 2.0.
"""Pass 2: partition hidden states into groups coupled element-wise.

Two hidden states belong to one group when the new value of one depends on the old value
of the other through parameter-free ops. The analysis is a forward reachability from each
old hidden var that does not cross *boundaries*: ETP ops (their output is an input of the
transition, carried by the weight's trace), plain ``dot_general``/``conv`` (a recurrent
weight mixing positions) and ``stop_gradient``. Groups are the connected components of
that relation, restricted to members of equal ``varshape`` in the same layer (paths that
first differ at an integer component, like ``layers.0`` and ``layers.1``, are different
layers). Every hidden state lands in exactly one group; a state with no parameter-free path
from its old value (a dense Elman RNN) is a singleton with ``D = 0``.

Each group gets a *transition jaxpr* ``(h_1..h_m)_new = F(h_1..h_m)_old; consts``: the
equations both downstream of the group's old values and upstream of its new values. Its
per-position Jacobian ``D`` (``(*varshape, S, S)``) is what the algorithms propagate traces
with; it is exact when ``F`` acts position by position, which the pass checks and reports.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import brainstate
import jax
import jax.numpy as jnp

from .._jax_compat import Jaxpr, JaxprEqn
from .._jax_compat import lax_primitives as P
from ..ops.primitive import etp_rule_of, is_etp_primitive
from .diagnostics import DiagnosticKind, DiagnosticLevel, PassResult, deliver_records, format_path, new_record
from .elementwise_check import non_elementwise_equations
from .jaxpr_tools import (
    MIXING_PRIMITIVES,
    backward_slice,
    evaluate_jaxpr,
    forward_closure,
    is_var,
    jaxpr_from_slice,
)
from .module_info import ModuleInfo
from .snap_pattern import DEFAULT_SNAP_MAX_JACOBIAN_ELEMENTS, check_sparse_n, snap_pattern_of_group

__all__ = ["HiddenGroup", "find_hidden_groups", "find_hidden_groups_from_minfo", "is_transition_boundary"]

Path = tuple[str, ...]


def is_transition_boundary(eqn: JaxprEqn, include_recurrent_mixing: bool = False) -> bool:
    """Whether ``eqn`` ends a hidden-to-hidden path of the transition.

    In the diagonal mode (default) ETP ops and plain ``dot_general``/``conv`` are boundaries;
    with ``include_recurrent_mixing`` only ``stop_gradient`` is, so a recurrent weight's op is
    traced into the transition and the group Jacobian is the coupled one.
    """
    if eqn.primitive is P.stop_gradient_p:
        return True
    if include_recurrent_mixing:
        return False
    if is_etp_primitive(eqn.primitive):
        return not etp_rule_of(eqn.primitive).gradient_enabled
    return eqn.primitive in MIXING_PRIMITIVES


class HiddenGroup(NamedTuple):
    """Hidden states coupled element-wise, and their transition.

    Attributes
    ----------
    index : int
        Position of the group in ``ETraceGraph.hidden_groups``.
    hidden_paths : list of Path
        Member state paths, in compiled-state order.
    hidden_states : list of HiddenState
        The member states.
    hidden_invars, hidden_outvars : list of Var
        Old and new value vars of the members.
    transition_jaxpr : Jaxpr
        ``new members = F(old members)``; its constvars are listed separately.
    transition_jaxpr_constvars : list of Var
        Step intermediates the transition reads (bound at run time).
    varshape : tuple of int
        Shape of one state component (without the trailing state axis of group states).
    num_states : tuple of int
        Number of stacked components per member (1 for a plain ``HiddenState``).
    is_diagonal_recurrence : bool
        True: ``D`` is taken per position (the transition was checked to be element-wise or
        a warning was recorded). False (``include_recurrent_mixing``): the transition
        contains the recurrent ops and ``D`` is the per-position ``S×S`` block of its full
        Jacobian (the coupled scope, OSTL with H), or the SnAp-widened block.
    snap : SnapPattern or None
        The SnAp-n neighbourhood (compiled with ``sparse_n``); ``D`` is then
        ``(*varshape, K·S, K·S)``.

    Examples
    --------
    >>> import brainstate, jax.numpy as jnp
    >>> import braintrace
    >>> lstm = braintrace.nn.LSTMCell(3, 4)
    >>> _ = brainstate.nn.init_all_states(lstm)
    >>> group = braintrace.compile_etrace_graph(lstm, jnp.ones(3)).hidden_groups[0]
    >>> group.num_state, group.varshape
    (2, (4,))
    >>> stacked = group.concat_hidden([jnp.zeros(4), jnp.ones(4)])
    >>> stacked.shape, [v.shape for v in group.split_hidden(stacked)]
    ((4, 2), [(4,), (4,)])
    """

    index: int
    hidden_paths: list
    hidden_states: list
    hidden_invars: list
    hidden_outvars: list
    transition_jaxpr: Jaxpr
    transition_jaxpr_constvars: list
    varshape: tuple
    num_states: tuple
    is_diagonal_recurrence: bool = True
    snap: Any = None

    @property
    def num_state(self) -> int:
        """Total number of stacked states ``S`` per position."""
        return int(sum(self.num_states))

    @property
    def trace_state_width(self) -> int:
        """Width of the trailing trace axis: ``S``, or ``K·S`` under SnAp."""
        return self.num_state * (1 if self.snap is None else self.snap.num_neighbours)

    def _stacked(self) -> list[bool]:
        # A HiddenGroupState member carries its own trailing state axis.
        return [n > 1 or len(v.aval.shape) == len(self.varshape) + 1
                for n, v in zip(self.num_states, self.hidden_invars, strict=True)]

    def concat_hidden(self, values: Sequence[jax.Array]) -> jax.Array:
        """Stack member values into ``(*varshape, S)`` (one value per member)."""
        if len(values) != len(self.hidden_paths):
            raise ValueError(
                f"hidden group {self.index} has {len(self.hidden_paths)} members; got {len(values)} values."
            )
        parts = [v if stacked else jnp.expand_dims(v, -1)
                 for v, stacked in zip(values, self._stacked(), strict=True)]
        return parts[0] if len(parts) == 1 else jnp.concatenate(parts, axis=-1)

    def split_hidden(self, value: jax.Array) -> list:
        """Inverse of :meth:`concat_hidden`."""
        if value.shape[-1] != self.num_state:
            raise ValueError(
                f"hidden group {self.index} expects a trailing axis of {self.num_state}; got {value.shape}."
            )
        out, start = [], 0
        for n, stacked in zip(self.num_states, self._stacked(), strict=True):
            part = value[..., start:start + n]
            out.append(part if stacked else part[..., 0])
            start += n
        return out

    def transition(self, old_hidden: Sequence[jax.Array], const_values: Sequence[Any]) -> list:
        """Evaluate the transition: new member values from old ones."""
        return evaluate_jaxpr(self.transition_jaxpr, const_values, old_hidden)

    def diagonal_jacobian(self, old_concat: jax.Array, const_values: Sequence[Any]) -> jax.Array:
        """``D[..., a, b] = ∂h_new[..., a] / ∂h_old[..., b]`` per position, ``(*varshape, S, S)``.

        Computed with one forward-mode pass per state column ``b`` (one-hot tangent at every
        position), which is exact for position-wise transitions.
        """
        num = self.num_state

        def step(concat):
            return self.concat_hidden(self.transition(self.split_hidden(concat), const_values))

        if not self.transition_jaxpr.eqns and not any(
                o in self.transition_jaxpr.invars for o in self.transition_jaxpr.outvars):
            return jnp.zeros(tuple(self.varshape) + (num, num), old_concat.dtype)

        def column(b):
            tangent = jnp.zeros_like(old_concat).at[..., b].set(1.0)
            return jax.jvp(step, (old_concat,), (tangent,))[1]

        cols = [column(b) for b in range(num)]
        return jnp.stack(cols, axis=-1)

    def full_jacobian(self, old_concat: jax.Array, const_values: Sequence[Any]) -> jax.Array:
        """The whole ``(*varshape, S, *varshape, S)`` Jacobian of the transition (forward mode).

        Transient memory ``O((P·S)²)``; used by the coupled and SnAp scopes.
        """
        def step(concat):
            return self.concat_hidden(self.transition(self.split_hidden(concat), const_values))

        if not self.transition_jaxpr.eqns and not any(
                o in self.transition_jaxpr.invars for o in self.transition_jaxpr.outvars):
            return jnp.zeros(old_concat.shape + old_concat.shape, old_concat.dtype)
        return jax.jacfwd(step)(old_concat)

    def coupled_jacobian(self, old_concat: jax.Array, const_values: Sequence[Any]) -> jax.Array:
        """The per-position ``S×S`` blocks ``J[p, :, p, :]`` of the full Jacobian, ``(*varshape, S, S)``."""
        num, size = self.num_state, old_concat.size // self.num_state
        full = self.full_jacobian(old_concat, const_values).reshape(size, num, size, num)
        blocks = jnp.einsum("papb->pab", full)
        return blocks.reshape(tuple(self.varshape) + (num, num))

    def snap_jacobian(self, old_concat: jax.Array, const_values: Sequence[Any]) -> jax.Array:
        """The SnAp-widened Jacobian ``(*varshape, K·S, K·S)``.

        ``D[p, (k, a), (k', b)] = J[nbr[p, k], a, nbr[p, k'], b] · valid[p, k] · valid[p, k']``.
        """
        num, size = self.num_state, old_concat.size // self.num_state
        full = self.full_jacobian(old_concat, const_values).reshape(size, num, size, num)
        nbr = jnp.asarray(self.snap.neighbours)
        valid = jnp.asarray(self.snap.valid, full.dtype)
        k = nbr.shape[1]
        gathered = full[nbr[:, :, None], :, nbr[:, None, :], :]  # (P, K, K', S, S)
        gathered = gathered * (valid[:, :, None] * valid[:, None, :])[..., None, None]
        widened = jnp.transpose(gathered, (0, 1, 3, 2, 4)).reshape(size, k * num, k * num)
        return widened.reshape(tuple(self.varshape) + (k * num, k * num))

    def jacobian(self, old_concat: jax.Array, const_values: Sequence[Any]) -> jax.Array:
        """The Jacobian the traces roll with: diagonal, coupled block or SnAp-widened."""
        if self.snap is not None:
            return self.snap_jacobian(old_concat, const_values)
        if not self.is_diagonal_recurrence:
            return self.coupled_jacobian(old_concat, const_values)
        return self.diagonal_jacobian(old_concat, const_values)


def _same_layer(a: Path, b: Path) -> bool:
    for x, y in zip(a, b):
        if x != y:
            return not (isinstance(x, int) or isinstance(y, int) or str(x).isdigit() or str(y).isdigit())
    return True


class _UnionFind:
    def __init__(self, items):
        self.parent = {x: x for x in items}

    def find(self, x):
        while self.parent[x] != x:
            self.parent[x] = self.parent[self.parent[x]]
            x = self.parent[x]
        return x

    def union(self, a, b):
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[rb] = ra


def find_hidden_groups_from_minfo(minfo: ModuleInfo, include_recurrent_mixing: bool = False, sparse_n=None,
                                  snap_max_jacobian_elements: int = DEFAULT_SNAP_MAX_JACOBIAN_ELEMENTS):
    """Group the hidden states of a traced step.

    Parameters
    ----------
    minfo : ModuleInfo
        The result of :func:`extract_module_info`.
    include_recurrent_mixing : bool
        Trace recurrent ops (ETP ops, ``dot_general``, ``conv``) into each group's
        transition, so the group Jacobian is the coupled one. The partition into groups is
        the same in both modes.
    sparse_n : int, optional
        SnAp order ``n >= 1`` (needs ``include_recurrent_mixing``): each group also gets a
        :class:`~braintrace.compiler.snap_pattern.SnapPattern`.
    snap_max_jacobian_elements : int
        Upper bound on ``P·(K·S)²`` per group under ``sparse_n``.

    Returns
    -------
    hidden_groups : list of HiddenGroup
        Groups with ``index`` equal to position, ordered by their first member.
    hid_path_to_group : dict
        Hidden path to its group.

    Examples
    --------
    >>> import brainstate, jax.numpy as jnp
    >>> import braintrace
    >>> lstm = braintrace.nn.LSTMCell(3, 4)
    >>> _ = brainstate.nn.init_all_states(lstm)
    >>> info = braintrace.extract_module_info(lstm, jnp.ones(3))
    >>> groups, _ = braintrace.find_hidden_groups_from_minfo(info)
    >>> [g.hidden_paths for g in groups]
    [[('c',), ('h',)]]
    """
    result = find_hidden_groups(minfo, include_recurrent_mixing, sparse_n, snap_max_jacobian_elements)
    deliver_records(result.records, stacklevel=2)
    return result.value


def _couple(minfo: ModuleInfo, eqns, records: list) -> _UnionFind:
    """Union the hidden paths whose new value depends element-wise on another's old value."""
    paths = list(minfo.hidden_path_to_invar)
    uf = _UnionFind(paths)
    crosses = lambda eqn: not is_transition_boundary(eqn)  # noqa: E731
    for path in paths:
        reached = forward_closure([minfo.hidden_path_to_invar[path]], eqns, crosses=crosses)
        for other in paths:
            if other == path or minfo.hidden_path_to_outvar[other] not in reached:
                continue
            if minfo.hidden_varshapes[path][0] != minfo.hidden_varshapes[other][0] or not _same_layer(path, other):
                records.append(new_record(
                    DiagnosticKind.HIDDEN_COUPLING_DROPPED, DiagnosticLevel.WARNING,
                    f"The new value of `{format_path(other)}` depends element-wise on the old value of "
                    f"`{format_path(path)}`, but they have different shapes or lie in different layers, so "
                    "they are kept in separate groups and this coupling is ignored by the traces.",
                    hidden_paths=(path, other),
                ))
                continue
            uf.union(path, other)
    return uf


def find_hidden_groups(minfo: ModuleInfo, include_recurrent_mixing: bool = False, sparse_n=None,
                       snap_max_jacobian_elements: int = DEFAULT_SNAP_MAX_JACOBIAN_ELEMENTS,
                       ) -> PassResult[tuple[list, dict]]:
    """:func:`find_hidden_groups_from_minfo` with its records, without warning."""
    sparse_n = check_sparse_n(sparse_n, include_recurrent_mixing)
    eqns = list(minfo.closed_jaxpr.eqns)
    records: list = []
    uf = _couple(minfo, eqns, records)
    members_by_root: dict[Path, list[Path]] = {}
    for path in minfo.hidden_path_to_invar:
        members_by_root.setdefault(uf.find(path), []).append(path)
    groups: list[HiddenGroup] = []
    hid_path_to_group: dict[Path, HiddenGroup] = {}
    state_by_path = minfo.states_by_path()
    for members in members_by_root.values():
        group = _build_group(len(groups), members, minfo, eqns, state_by_path, records, include_recurrent_mixing)
        if sparse_n is not None:
            pattern = snap_pattern_of_group(group, sparse_n, snap_max_jacobian_elements)
            records.extend(pattern.records)
            group = group._replace(snap=pattern.value)
        groups.append(group)
        for p in members:
            hid_path_to_group[p] = group
    return PassResult((groups, hid_path_to_group), tuple(records))


def _build_group(index, members, minfo: ModuleInfo, eqns, state_by_path, records: list,
                 mixing: bool = False) -> HiddenGroup:
    invars = [minfo.hidden_path_to_invar[p] for p in members]
    outvars = [minfo.hidden_path_to_outvar[p] for p in members]
    crosses = lambda eqn: not is_transition_boundary(eqn, mixing)  # noqa: E731
    downstream = forward_closure(invars, eqns, crosses=crosses)

    def include(i, eqn):
        if is_transition_boundary(eqn, mixing):
            return False
        return any(is_var(v) and v in downstream for v in eqn.outvars)

    order, free = backward_slice(outvars, eqns, include=include)
    chosen = [eqns[i] for i in order]
    jaxpr = jaxpr_from_slice(chosen, free, invars, outvars)
    invar_set = set(invars)
    varshape, _ = minfo.hidden_varshapes[members[0]]
    num_states = tuple(minfo.hidden_varshapes[p][1] for p in members)
    has_group_state = any(isinstance(state_by_path[p], brainstate.HiddenGroupState) for p in members)

    if len(members) > 1:
        records.append(new_record(
            DiagnosticKind.HIDDEN_GROUP_MERGED, DiagnosticLevel.INFO,
            f"Hidden states {', '.join('`' + format_path(p) + '`' for p in members)} are coupled "
            f"element-wise and form group {index} with {sum(num_states)} states per position.",
            hidden_paths=members, context={"group": index, "num_state": sum(num_states)}))
    if not chosen and not any(o in invar_set for o in outvars):
        records.append(new_record(
            DiagnosticKind.HIDDEN_GROUP_ZERO_RECURRENCE, DiagnosticLevel.INFO,
            f"The new value of group {index} ({', '.join('`' + format_path(p) + '`' for p in members)}) "
            "does not depend on its old value through parameter-free ops (for example an Elman "
            "RNN, whose recurrence runs through a weight). Its Jacobian D is zero and recurrent "
            "weights learn through the trace's instantaneous term only.",
            hidden_paths=members, context={"group": index}))
    # With recurrent mixing the Jacobian is taken from the full transition, so mixing ops are
    # expected there; the scope (coupled block or SnAp) is the documented approximation.
    offenders = [] if mixing else non_elementwise_equations(chosen, allow_state_axis=has_group_state)
    if offenders:
        records.append(new_record(
            DiagnosticKind.TRANSITION_NOT_ELEMENTWISE, DiagnosticLevel.WARNING,
            f"The transition of group {index} uses ops that may mix positions "
            f"({', '.join(sorted({str(e.primitive) for e in offenders}))}); its per-position "
            "Jacobian D keeps only the diagonal, so traces through it are approximate.",
            hidden_paths=members, context={"group": index, "primitives": sorted({str(e.primitive) for e in offenders})}))
    return HiddenGroup(
        index=index,
        hidden_paths=list(members),
        hidden_states=[state_by_path[p] for p in members],
        hidden_invars=invars,
        hidden_outvars=outvars,
        transition_jaxpr=jaxpr,
        transition_jaxpr_constvars=list(jaxpr.constvars),
        varshape=tuple(varshape),
        num_states=num_states,
        is_diagonal_recurrence=not mixing,
    )

