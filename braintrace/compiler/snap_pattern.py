# Copyright 2026 The braintrace authors. Licensed under the Apache License, Version 2.0.
"""SnAp-n sparsity patterns: which hidden positions a weight's trace may reach in ``n`` steps.

SnAp-n (Menick et al. 2021) keeps, for a parameter anchored at hidden position ``p``, only
the influence entries ``∂h_q/∂θ`` at positions ``q`` reachable from ``p`` within ``n - 1``
applications of the one-step adjacency ``A`` of the group transition. The closure
``R = ∨_{k<n} A^k`` is turned into a neighbour table ``neighbours (P, K)`` (slot 0 is the
position itself) and a mask ``valid (P, K)``; the trace's trailing state axis widens from
``S`` to ``K·S`` and the group Jacobian is gathered into ``(*V, K·S, K·S)`` blocks.

The adjacency is derived structurally from the transition jaxpr:

* only element-wise equations: ``A = I`` (``K = 1``, the coupled scope; recorded as
  ``SNAP_PATTERN_DEGENERATE``);
* element-wise equations plus ops that mix the last (feature) axis only (dense ETP
  matmuls, concatenation along the last axis): ``A = I_lead ⊗ 1`` (the leading axes, such
  as a batch axis, stay independent);
* anything else (a plain ``dot_general``, a cumulative sum, a roll, ...): all-to-all over
  every position (``SNAP_PATTERN_CONSERVATIVE``), which is correct but costs ``K = P``.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from .._errors import CompilationError
from .._jax_compat import lax_primitives as P
from .diagnostics import DiagnosticKind, DiagnosticLevel, PassResult, format_path, new_record
from .elementwise_check import non_elementwise_equations

__all__ = ["DEFAULT_SNAP_MAX_JACOBIAN_ELEMENTS", "SnapPattern", "snap_pattern_of_group", "check_sparse_n"]

# The published default of ``snap_max_jacobian_elements`` (2**24).
DEFAULT_SNAP_MAX_JACOBIAN_ELEMENTS = 16_777_216


class SnapPattern(NamedTuple):
    """The SnAp-n neighbourhood of every position of one hidden group.

    Attributes
    ----------
    n : int
        The SnAp order.
    neighbours : numpy.ndarray
        ``(P, K)`` int32 flat position indices; slot 0 is the position itself, padding slots
        repeat it and are masked out by ``valid``.
    valid : numpy.ndarray
        ``(P, K)`` bool mask of real neighbours.
    precise : bool
        False when the adjacency could not be derived and all-to-all was assumed.

    Examples
    --------
    >>> import numpy as np
    >>> from braintrace.compiler.snap_pattern import SnapPattern
    >>> p = SnapPattern(2, np.array([[0, 1], [1, 0]], np.int32), np.ones((2, 2), bool), True)
    >>> p.num_neighbours
    2
    """

    n: int
    neighbours: np.ndarray
    valid: np.ndarray
    precise: bool

    @property
    def num_neighbours(self) -> int:
        """``K``, the widened trace carries ``K·S`` entries per position."""
        return int(self.neighbours.shape[1])

    def __repr__(self) -> str:
        return (f"SnapPattern(n={self.n}, positions={self.neighbours.shape[0]}, K={self.num_neighbours}, "
                f"precise={self.precise})")


def check_sparse_n(sparse_n, include_recurrent_mixing: bool):
    """Validate ``sparse_n`` (an int >= 1, not a bool, needing recurrent mixing)."""
    if sparse_n is None:
        return None
    if isinstance(sparse_n, bool) or not isinstance(sparse_n, (int, np.integer)) or sparse_n < 1:
        raise ValueError(f"`sparse_n` (the SnAp order n) must be an int >= 1, not a bool; got {sparse_n!r}.")
    if not include_recurrent_mixing:
        from .._errors import NotSupportedError

        raise NotSupportedError(
            f"`sparse_n={sparse_n}` masks the coupled within-group Jacobian, so it needs "
            "`include_recurrent_mixing=True`; pass both (braintrace.SnAp does)."
        )
    return int(sparse_n)


def _is_dense_etp(eqn) -> bool:
    from ..ops.matmul import etp_matmul_p

    return eqn.primitive is etp_matmul_p


def _mixes_last_axis_only(eqn) -> bool:
    """Ops whose output at leading index ``l`` depends only on inputs at ``l``."""
    if _is_dense_etp(eqn):
        return True
    if eqn.primitive is P.concatenate_p:
        ndim = len(eqn.outvars[0].aval.shape)
        return ndim >= 1 and eqn.params["dimension"] == ndim - 1
    return False


def _closure(adjacency: np.ndarray, n: int) -> np.ndarray:
    """``∨_{k<n} A^k`` as a boolean matrix."""
    size = adjacency.shape[0]
    reach = np.eye(size, dtype=bool)
    power = np.eye(size, dtype=bool)
    a = adjacency.astype(np.int64)
    for _ in range(n - 1):
        power = (power.astype(np.int64) @ a) > 0
        reach |= power
    return reach


def _table(reach: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Neighbour table (slot 0 = self) and mask from a boolean reachability matrix."""
    size = reach.shape[0]
    width = int(reach.sum(axis=1).max()) if size else 1
    neighbours = np.repeat(np.arange(size, dtype=np.int32)[:, None], width, axis=1)
    valid = np.zeros((size, width), dtype=bool)
    valid[:, 0] = True
    for p in range(size):
        others = [q for q in np.flatnonzero(reach[p]) if q != p]
        neighbours[p, 1:1 + len(others)] = others
        valid[p, 1:1 + len(others)] = True
    return neighbours, valid


def snap_pattern_of_group(group, n: int, max_elements: int) -> PassResult:
    """The :class:`SnapPattern` of ``group`` for SnAp order ``n``, with its records.

    Raises
    ------
    CompilationError
        When the widened Jacobian ``P·(K·S)²`` exceeds ``max_elements``.
    """
    records = []
    varshape = tuple(group.varshape)
    size = int(np.prod(varshape, dtype=np.int64)) if varshape else 1
    last = varshape[-1] if varshape else 1
    lead = size // last if last else 1
    eqns = list(group.transition_jaxpr.eqns)
    has_state_axis = any(n_ > 1 for n_ in group.num_states)
    unknown = [e for e in non_elementwise_equations(eqns, allow_state_axis=has_state_axis)
               if not _mixes_last_axis_only(e)]
    mixing = [e for e in eqns if _mixes_last_axis_only(e)]
    members = ", ".join("`" + format_path(p) + "`" for p in group.hidden_paths)
    if unknown:
        names = sorted({str(e.primitive) for e in unknown})
        adjacency = np.ones((size, size), dtype=bool)
        records.append(new_record(
            DiagnosticKind.SNAP_PATTERN_CONSERVATIVE, DiagnosticLevel.WARNING,
            f"SnAp-{n}: the transition of group {index_of(group)} ({members}) uses ops whose position coupling is "
            f"not known ({', '.join(names)}), so every position is assumed to reach every other (K = {size}); "
            "the gradient is the within-group RTRL one, at the cost of the full Jacobian.",
            hidden_paths=tuple(group.hidden_paths),
            context={"group": index_of(group), "primitives": names, "num_neighbours": size}))
    elif mixing:
        adjacency = np.kron(np.eye(lead, dtype=bool), np.ones((last, last), dtype=bool))
    else:
        adjacency = np.eye(size, dtype=bool)
    neighbours, valid = _table(_closure(adjacency, n))
    k = neighbours.shape[1]
    if k == 1:
        records.append(new_record(
            DiagnosticKind.SNAP_PATTERN_DEGENERATE, DiagnosticLevel.WARNING,
            f"SnAp-{n}: no position of group {index_of(group)} ({members}) reaches another one within {n - 1} "
            "step(s) (K = 1), so SnAp equals the coupled scope (OSTLRecurrent) on this group.",
            hidden_paths=tuple(group.hidden_paths), context={"group": index_of(group), "n": n}))
    elements = size * (k * group.num_state) ** 2
    if elements > max_elements:
        raise CompilationError(
            f"SnAp-{n} on hidden group {index_of(group)} ({members}): the widened Jacobian has P·(K·S)² = "
            f"{size}·({k}·{group.num_state})² = {elements} elements, above snap_max_jacobian_elements="
            f"{max_elements}. Lower n, use a smaller group (or batch), or raise snap_max_jacobian_elements."
        )
    return PassResult(SnapPattern(n, neighbours, valid, not unknown), tuple(records))


def index_of(group) -> int:
    return int(group.index)
