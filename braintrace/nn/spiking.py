# Copyright 2026 The braintrace authors. Licensed under the Apache License, Version 2.0.
"""Leaky integrate-and-fire neurons (LIF, adaptive ALIF) with surrogate-gradient spikes.

Each ``update`` is a forward-Euler step made of element-wise operations only, so every
neuron's states form their own hidden group. Parameters are plain numbers by default; give
them brainunit units (``tau=10 * u.ms``, ``V_th=1 * u.mV``, ``dt=0.1 * u.ms``) and the
membrane potential carries the voltage unit. A plain ``0.0`` is accepted as zero in any unit.
"""

from __future__ import annotations

from collections.abc import Sequence

import brainstate
import brainunit as u
import jax
import numpy as np

from . import _units
from ._time_constant import TimeConstant
from .surrogate import AbstractSurrogate, as_surrogate, spike_function

__all__ = ["ALIF", "LIF"]


def _state_shape(varshape: tuple[int, ...], batch_size: int | None) -> tuple[int, ...]:
    return varshape if batch_size is None else (batch_size, *varshape)


def _check_voltages(V_th, V_reset, V_rest):
    _units.check_same_dimension("V_reset", V_reset, "V_th", V_th)
    _units.check_same_dimension("V_rest", V_rest, "V_th", V_th)
    if np.any(np.asarray(u.get_mantissa(V_th - V_reset)) <= 0):
        raise ValueError(f"`V_th` must exceed `V_reset`; got V_th={V_th!r}, V_reset={V_reset!r}.")


def _check_dt(dt, tau, name):
    _units.dimensionless_ratio(dt, tau, "dt", name)


def _integrate(V, x, dt_over_tau, V_rest, R):
    """One Euler step of ``tau dV/dt = -(V - V_rest) + R x``."""
    return V + dt_over_tau * (-(V - V_rest) + R * x)


class _LeakyIntegrateAndFire(brainstate.nn.Module):
    """Shared construction of the spiking layers (membrane constants, ``tau``, surrogate)."""

    def __init__(self, n, *, tau, V_th, V_reset, V_rest, R, dt, tau_trainable, detach_reset, surrogate, name):
        super().__init__(name=name)
        self.in_size = n
        self.out_size = n
        self.varshape = tuple(self.in_size)
        _check_voltages(V_th, V_reset, V_rest)
        _check_dt(dt, tau, "tau")
        self.V_th, self.V_reset, self.V_rest, self.R, self.dt = V_th, V_reset, V_rest, R, dt
        self.tau = TimeConstant(tau, self.varshape, trainable=tau_trainable)
        self.detach_reset = detach_reset
        self.surrogate = as_surrogate(surrogate)


class LIF(_LeakyIntegrateAndFire):
    """Leaky integrate-and-fire neurons with reset by subtraction.

    One step of ``update(x)``::

        V     = V + dt / tau * (-(V - V_rest) + R * x)
        spike = spike_function((V - V_th) / (V_th - V_reset), surrogate)
        V     = V - (V_th - V_reset) * spike       # spike detached when ``detach_reset``

    Parameters
    ----------
    n : int or sequence of int
        Number (or shape) of neurons.
    tau : float or Quantity
        Membrane time constant (default 20.0), scalar or per neuron.
    V_th, V_reset, V_rest : float or Quantity
        Threshold (1.0), reset (0.0) and resting (0.0) potentials; ``V_th > V_reset``.
    R : float or Quantity
        Membrane resistance (1.0); ``R * x`` must have the unit of ``V_th``.
    dt : float or Quantity
        Time step (1.0), in the unit of ``tau``.
    tau_trainable : bool
        Train ``tau`` online, as a per-neuron log-parameterised ``ParamState`` (default False).
    detach_reset : bool
        Stop the gradient through the reset (default True).
    surrogate : str or AbstractSurrogate
        Pseudo-derivative of the spike (default ``'sigmoid'``), see :func:`spike_function`.
    name : str, optional
        Module name.

    Attributes
    ----------
    V : brainstate.HiddenState
        Membrane potential, shape ``(n,)`` or ``(batch_size, n)``, starts at ``V_rest``.

    Examples
    --------
    >>> import brainstate
    >>> import jax.numpy as jnp
    >>> import braintrace.nn
    >>> lif = braintrace.nn.LIF(3, tau=5.0)
    >>> lif.init_state(batch_size=2)
    >>> spikes = [lif(jnp.full((2, 3), 3.0)) for _ in range(2)]
    >>> spikes[0].shape, float(spikes[0].sum()), float(spikes[1].sum())
    ((2, 3), 0.0, 6.0)
    """

    def __init__(
        self,
        n: int | Sequence[int],
        *,
        tau=20.0,
        V_th=1.0,
        V_reset=0.0,
        V_rest=0.0,
        R=1.0,
        dt=1.0,
        tau_trainable: bool = False,
        detach_reset: bool = True,
        surrogate: str | AbstractSurrogate = "sigmoid",
        name: str | None = None,
    ):
        super().__init__(n, tau=tau, V_th=V_th, V_reset=V_reset, V_rest=V_rest, R=R, dt=dt,
                         tau_trainable=tau_trainable, detach_reset=detach_reset, surrogate=surrogate, name=name)

    def _initial_V(self, batch_size):
        shape = _state_shape(self.varshape, batch_size)
        return _units.zeros_in_unit_of(shape, self.V_th, brainstate.environ.dftype()) + self.V_rest

    def init_state(self, batch_size: int | None = None, **kwargs):
        """Create ``V`` at ``V_rest``, shape ``(n,)`` or ``(batch_size, n)``."""
        self.V = brainstate.HiddenState(self._initial_V(batch_size))

    def reset_state(self, batch_size: int | None = None, **kwargs):
        """Set ``V`` back to ``V_rest``."""
        self.V.value = self._initial_V(batch_size)

    def update(self, x=0.0):
        """Advance one step with input current ``x``; return the spikes (0.0 or 1.0)."""
        dt_over_tau = u.maybe_decimal(self.dt / self.tau())
        V = _integrate(self.V.value, x, dt_over_tau, self.V_rest, self.R)
        scale = self.V_th - self.V_reset
        spike = spike_function(u.maybe_decimal((V - self.V_th) / scale), self.surrogate)
        reset = jax.lax.stop_gradient(spike) if self.detach_reset else spike
        self.V.value = V - scale * reset
        return spike


class ALIF(_LeakyIntegrateAndFire):
    """Adaptive leaky integrate-and-fire neurons: every spike raises the threshold.

    One step of ``update(x)``::

        V     = V + dt / tau * (-(V - V_rest) + R * x)
        spike = spike_function((V - V_th - beta * a) / (V_th - V_reset), surrogate)
        V     = V - (V_th - V_reset) * spike       # spike detached when ``detach_reset``
        a     = a - dt / tau_a * a + spike

    ``V`` and the dimensionless adaptation ``a`` are coupled element-wise, so each neuron's
    pair forms one hidden group.

    Parameters
    ----------
    n : int or sequence of int
        Number (or shape) of neurons.
    tau, tau_a : float or Quantity
        Membrane (20.0) and adaptation (200.0) time constants, in the unit of ``dt``.
    beta : float or Quantity
        Adaptation strength (1.6), in the unit of ``V_th``.
    V_th, V_reset, V_rest, R, dt : float or Quantity
        As in :class:`LIF`.
    tau_trainable, tau_a_trainable : bool
        Train ``tau`` / ``tau_a`` online (default False).
    detach_reset : bool
        Stop the gradient through the reset (default True).
    surrogate : str or AbstractSurrogate
        Pseudo-derivative of the spike (default ``'sigmoid'``).
    name : str, optional
        Module name.

    Attributes
    ----------
    V : brainstate.HiddenState
        Membrane potential, starts at ``V_rest``.
    a : brainstate.HiddenState
        Threshold adaptation (dimensionless), starts at zero.

    Examples
    --------
    >>> import brainstate
    >>> import jax.numpy as jnp
    >>> import braintrace.nn
    >>> alif = braintrace.nn.ALIF(2, tau=5.0)
    >>> _ = brainstate.nn.init_all_states(alif)
    >>> spikes = [alif(jnp.full(2, 3.0)) for _ in range(2)]
    >>> spikes[1], alif.a.value
    (Array([1., 1.], dtype=float32), Array([1., 1.], dtype=float32))
    """

    def __init__(
        self,
        n: int | Sequence[int],
        *,
        tau=20.0,
        tau_a=200.0,
        beta=1.6,
        V_th=1.0,
        V_reset=0.0,
        V_rest=0.0,
        R=1.0,
        dt=1.0,
        tau_trainable: bool = False,
        tau_a_trainable: bool = False,
        detach_reset: bool = True,
        surrogate: str | AbstractSurrogate = "sigmoid",
        name: str | None = None,
    ):
        super().__init__(n, tau=tau, V_th=V_th, V_reset=V_reset, V_rest=V_rest, R=R, dt=dt,
                         tau_trainable=tau_trainable, detach_reset=detach_reset, surrogate=surrogate, name=name)
        _units.check_same_dimension("beta", beta, "V_th", V_th)
        _check_dt(dt, tau_a, "tau_a")
        self.beta = beta
        self.tau_a = TimeConstant(tau_a, self.varshape, trainable=tau_a_trainable)

    def _initial_states(self, batch_size):
        shape = _state_shape(self.varshape, batch_size)
        dtype = brainstate.environ.dftype()
        V = _units.zeros_in_unit_of(shape, self.V_th, dtype) + self.V_rest
        return V, u.math.zeros(shape, dtype=dtype)

    def init_state(self, batch_size: int | None = None, **kwargs):
        """Create ``V`` at ``V_rest`` and ``a`` at zero."""
        V, a = self._initial_states(batch_size)
        self.V = brainstate.HiddenState(V)
        self.a = brainstate.HiddenState(a)

    def reset_state(self, batch_size: int | None = None, **kwargs):
        """Set ``V`` back to ``V_rest`` and ``a`` to zero."""
        self.V.value, self.a.value = self._initial_states(batch_size)

    def update(self, x=0.0):
        """Advance one step with input current ``x``; return the spikes (0.0 or 1.0)."""
        dt_over_tau = u.maybe_decimal(self.dt / self.tau())
        dt_over_tau_a = u.maybe_decimal(self.dt / self.tau_a())
        a = self.a.value
        V = _integrate(self.V.value, x, dt_over_tau, self.V_rest, self.R)
        scale = self.V_th - self.V_reset
        threshold = self.V_th + self.beta * a
        spike = spike_function(u.maybe_decimal((V - threshold) / scale), self.surrogate)
        reset = jax.lax.stop_gradient(spike) if self.detach_reset else spike
        self.V.value = V - scale * reset
        self.a.value = a - dt_over_tau_a * a + spike
        return spike
