# Copyright 2026 The braintrace authors. Licensed under the Apache License, Version 2.0.
"""How the compiler treats ``cond``, ``scan``/``fori_loop`` and ``while_loop`` in a step."""

from __future__ import annotations

import dataclasses
import numbers

__all__ = ["ControlFlowPolicy"]

_CHOICES = {
    "cond": ("convert", "opaque"),
    "while_hidden": ("opaque-fwd", "error"),
    "etp_in_control_flow": ("error", "exclude"),
    "scan_descent": ("auto", "off"),
}


@dataclasses.dataclass(frozen=True)
class ControlFlowPolicy:
    """Control-flow canonicalisation applied before the step is analysed.

    Parameters
    ----------
    cond : {'convert', 'opaque'}
        ``'convert'`` replaces a ``cond`` whose branches contain ETP ops by all branches and
        a select (if-conversion); ``'opaque'`` leaves every ``cond`` as it is.
    scan_unroll_limit : int
        A ``scan`` (also ``fori_loop`` with static bounds and
        ``brainstate.transform.for_loop``) with at most this many iterations that contains an
        ETP op or touches a weight or hidden state is unrolled into the step. ``0`` unrolls
        nothing.
    while_hidden : {'opaque-fwd', 'error'}
        ``'opaque-fwd'`` runs a weight-free ``while_loop`` as opaque forward code (its
        outputs enter the step as data); ``'error'`` refuses any ``while_loop`` in the step.
    etp_in_control_flow : {'error', 'exclude'}
        An ETP op or weight inside a ``while_loop``: ``'error'`` raises
        :class:`~braintrace.NotSupportedError`; ``'exclude'`` leaves the op untraced and warns.
    scan_descent : {'auto', 'off'}
        ``'auto'`` descends into a ``scan`` longer than ``scan_unroll_limit`` whose body holds
        ETP ops (see :mod:`braintrace.compiler.scan_descent`): the ops are trained online
        with traces folded over the substeps, without unrolling. ``'off'`` leaves long scans
        opaque (their ETP ops get no trace).
    fixpoint_iteration_limit : int
        Maximum number of canonicalisation sweeps (nested control flow surfaces one level
        per sweep).

    Raises
    ------
    ValueError
        For an unknown choice or a non-positive / non-int limit.

    Examples
    --------
    >>> import braintrace
    >>> policy = braintrace.ControlFlowPolicy(scan_unroll_limit=4)
    >>> policy.scan_unroll_limit, policy.cond
    (4, 'convert')
    >>> braintrace.ControlFlowPolicy(cond='unroll')
    Traceback (most recent call last):
    ...
    ValueError: ControlFlowPolicy `cond` must be one of ['convert', 'opaque']; got 'unroll'.
    """

    cond: str = "convert"
    scan_unroll_limit: int = 16
    while_hidden: str = "opaque-fwd"
    etp_in_control_flow: str = "error"
    scan_descent: str = "auto"
    fixpoint_iteration_limit: int = 64

    def __post_init__(self):
        for name, choices in _CHOICES.items():
            value = getattr(self, name)
            if not isinstance(value, str) or value not in choices:
                raise ValueError(f"ControlFlowPolicy `{name}` must be one of {list(choices)}; got {value!r}.")
        for name, low in (("scan_unroll_limit", 0), ("fixpoint_iteration_limit", 1)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
                raise ValueError(f"ControlFlowPolicy `{name}` must be an int >= {low}; got {value!r}.")

    @classmethod
    def resolve(cls, value) -> ControlFlowPolicy:
        """``value`` itself, or the default policy for ``None``; a ``TypeError`` otherwise."""
        if value is None:
            return cls()
        if not isinstance(value, cls):
            raise TypeError(f"`control_flow` must be None or a braintrace.ControlFlowPolicy; got {value!r}.")
        return value
