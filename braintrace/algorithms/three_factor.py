# Copyright 2026 The braintrace authors. Licensed under the Apache License, Version 2.0.
"""Three-factor learning: D-RTRL eligibility traces gated by a user modulator.

The rule keeps the D-RTRL trace ``ε`` of every ETP weight (pre-synaptic activity times
post-synaptic sensitivity, rolled by the hidden Jacobian) and forms the gradient of step
``t`` as ``Σ_g <M_t, ε_t,g>``, where the third factor ``M_t`` is an array the caller gives
(a reward, a dopamine-like signal, or any local error). The loss gradient ``∂L_t/∂h_t`` is
*not* used: it is replaced by ``M_t``. Consequently

* parameters that are not ETP-routed (a readout) get an exact zero gradient, and
* the output-bypass terms (the same-step gradient, ``∂L_t/∂h_{t-1}``) are disabled.

Only single-step updates are defined (the modulator is per step).
"""

from __future__ import annotations

import dataclasses

import brainstate
import jax
import jax.numpy as jnp

from .. import _errors
from .._shapes import broadcasts_to as _broadcasts_to
from .d_rtrl import ParamDimRule, ParamDimVjpAlgorithm
from .options import DEFAULT_SNAP_MAX_JACOBIAN_ELEMENTS

__all__ = ["ThreeFactor", "ThreeFactorRule"]


@dataclasses.dataclass(frozen=True)
class ThreeFactorRule(ParamDimRule):
    """D-RTRL traces contracted with the per-step modulators instead of ``∂L/∂h``.

    The learner passes the modulators, expanded per hidden group, as ``extra``.

    Examples
    --------
    >>> from braintrace.algorithms.three_factor import ThreeFactorRule
    >>> ThreeFactorRule().same_step_gradients
    False
    """

    same_step_gradients = False
    #: A modulator is no loss gradient: cross-group couplings stay dropped.
    supports_cascade = False

    def learning_signal(self, ctx, signals, extra) -> list:
        if extra is None:  # only reached through paths that refuse ThreeFactor (multi-step windows)
            raise _errors.NotSupportedError("ThreeFactor has no learning signal without a per-step modulator.")
        return [jnp.asarray(m, s.dtype) for m, s in zip(extra, signals, strict=True)]


class _Standing:
    """Holds the standing modulator outside brainstate's module-graph traversal."""

    __slots__ = ("value",)

    def __init__(self, value=None):
        self.value = value

    def __repr__(self) -> str:
        return "no modulator" if self.value is None else f"modulator{list(jnp.shape(self.value))}"


class ThreeFactor(ParamDimVjpAlgorithm):
    """Three-factor rule: D-RTRL traces times a user modulator (``learning_signal='modulatory'``).

    Parameters
    ----------
    model : brainstate.nn.Module
        The model; ``model.update(*inputs)`` runs one step.
    name : str, optional
        Module name.
    vjp_method : {'single-step'}
        Only ``'single-step'``: the modulator is one array per step.
    modulator : array_like, optional
        A standing modulator, used by calls that do not pass one (see below).
    fast_solve, trace_dtype, chunked_trace, control_flow, snap_max_jacobian_elements
        The published learner options, see :class:`~braintrace.ETraceAlgorithm`.

    Notes
    -----
    The modulator of a call is ``learner.update(x, modulator=m)`` (or ``learner(x,
    modulator=m)``), or else the standing ``learner.modulator``. It replaces the learning
    signal of every hidden group, whose shape is ``(*varshape, S)`` (``varshape`` includes the
    batch axis of a batched model; ``S`` is the number of states of the group). ``m`` may be
    anything that broadcasts to the group's ``varshape`` (a scalar, ``(N,)``, ``(B, N)``; it is
    then shared by the ``S`` states), or else anything that broadcasts to ``(*varshape, S)``. A list or tuple raises ``TypeError``; a
    call without any modulator raises ``ValueError``. In ``vmap`` mode one modulator, shaped for
    one lane, is shared by all lanes. A standing modulator read inside ``jax.jit`` is a
    constant of the compiled function: pass it per call to vary it under ``jit``.

    The gradient is linear in the modulator. The model's loss only serves to start the
    backward pass: differentiate any function of the learner's output (its value does not
    matter).

    Raises
    ------
    NotSupportedError
        For ``vjp_method='multi-step'``.

    Examples
    --------
    >>> import brainstate, jax.numpy as jnp
    >>> import braintrace
    >>> cell = braintrace.nn.GRUCell(3, 4)
    >>> learner = braintrace.compile(cell, 'three_factor', jnp.ones(3))
    >>> xs, reward = jnp.ones((5, 3)), jnp.asarray(0.5)
    >>> grads = learner.etrace_grad(xs, step_fn=lambda x: jnp.sum(learner(x, modulator=reward)))
    >>> sorted(grads)
    [('Wh', 'weight'), ('Wr', 'weight'), ('Wz', 'weight')]
    """

    def __init__(self, model, name: str | None = None, vjp_method: str = "single-step", modulator=None,
                 fast_solve: bool = True, trace_dtype=None, chunked_trace: bool = True, control_flow=None,
                 snap_max_jacobian_elements: int = DEFAULT_SNAP_MAX_JACOBIAN_ELEMENTS, **kwargs):
        if vjp_method == "multi-step":
            raise _errors.NotSupportedError(
                "ThreeFactor needs vjp_method='single-step': the modulator replaces each step's learning "
                "signal, and a multi-step window has no per-step signal to replace. Call the learner once per "
                "step (`etrace_grad` without `chunk_size`)."
            )
        super().__init__(model, name, vjp_method=vjp_method, fast_solve=fast_solve, trace_dtype=trace_dtype,
                         chunked_trace=chunked_trace, control_flow=control_flow,
                         snap_max_jacobian_elements=snap_max_jacobian_elements, **kwargs)
        self.trace_rule = ThreeFactorRule()
        self._standing = _Standing()
        self.modulator = modulator

    @property
    def modulator(self):
        """The standing modulator (``None`` when unset), used by calls that pass none."""
        return self._standing.value

    @modulator.setter
    def modulator(self, value):
        if value is not None:
            _check_type(value)
        self._standing.value = value

    def update(self, *args, modulator=None, **kwargs):
        """One online step whose learning signal is ``modulator`` (or the standing one)."""
        self._assert_compiled("update")
        m = self.modulator if modulator is None else modulator
        if m is None:
            raise ValueError(
                "ThreeFactor needs a modulator for this step: pass `learner(x, modulator=m)` (or "
                "`learner.update(x, modulator=m)`), or set the standing `learner.modulator = m`. The modulator "
                "replaces the learning signal ∂L/∂h of every hidden group."
            )
        return self._update(args, kwargs, extra=self._expanded_modulators(m))

    def _expanded_modulators(self, m) -> tuple:
        """Per group, ``m`` broadcast to the group's signal shape ``(*varshape, S)``."""
        _check_type(m)
        m = jax.lax.stop_gradient(jnp.asarray(m))
        if not jnp.issubdtype(m.dtype, jnp.floating):
            m = m.astype(jnp.float32)
        out = []
        for group in self.graph.hidden_groups:
            varshape = tuple(int(n) for n in group.varshape)
            target = varshape + (int(group.num_state),)
            if _broadcasts_to(m.shape, varshape):  # a scalar, the varshape, or e.g. (N,) under a batch
                expanded = jnp.broadcast_to(m, varshape)[..., None]
                expanded = jnp.broadcast_to(expanded, target)
            elif _broadcasts_to(m.shape, target):
                expanded = jnp.broadcast_to(m, target)
            else:
                raise ValueError(
                    f"the modulator has shape {m.shape}, which is not broadcastable to hidden group {group.index}'s "
                    f"varshape {varshape} nor to its learning-signal shape {target} (varshape + number of states)."
                )
            out.append(expanded)
        return tuple(out)


def _check_type(m) -> None:
    if isinstance(m, (list, tuple)):
        raise TypeError(f"the ThreeFactor modulator must be an array or a scalar, not a {type(m).__name__}; "
                        "convert it with jnp.asarray(...) (one array replaces the signal of every hidden group).")
    if isinstance(m, brainstate.State):
        raise TypeError("the ThreeFactor modulator must be an array or a scalar, not a brainstate State; pass "
                        "`state.value`.")
