# Copyright 2026 The braintrace authors. Licensed under the Apache License, Version 2.0.
"""Leaky rate readout: a low-pass filtered dense projection of (spiking) activity."""

from __future__ import annotations

from collections.abc import Callable

import brainstate
import brainunit as u
import jax
from brainstate.nn import init

from ..ops import matmul
from . import _units

__all__ = ["LeakyRateReadout"]


class LeakyRateReadout(brainstate.nn.Module):
    """Leaky integrator of a dense projection: ``r = decay * r + (1 - decay) * (x @ W)``.

    ``decay = exp(-dt / tau)``, so ``r`` is a unit-gain low-pass filter of ``x @ W``: a
    constant input ``x`` drives ``r`` towards ``x @ W``. The product goes through the ETP op
    :func:`braintrace.matmul`, so ``W`` trains online.

    Parameters
    ----------
    in_size : int
        Number of inputs ``I``.
    out_size : int
        Number of readout units ``O``.
    tau : float or Quantity
        Time constant (default 5.0), in the unit of ``dt``.
    dt : float or Quantity
        Time step (default 1.0).
    w_init : callable or array_like
        Weight initialiser (default ``KaimingNormal()``).
    name : str, optional
        Module name.

    Attributes
    ----------
    weight : brainstate.ParamState
        ``{'weight': (in_size, out_size)}``.
    r : brainstate.HiddenState
        Readout, shape ``(out_size,)`` or ``(batch_size, out_size)``, starts at zero.

    Examples
    --------
    >>> import brainstate
    >>> import jax.numpy as jnp
    >>> import braintrace.nn
    >>> readout = braintrace.nn.LeakyRateReadout(3, 2, w_init=jnp.ones((3, 2)))
    >>> readout.init_state(batch_size=4)
    >>> readout(jnp.ones((4, 3))).shape
    (4, 2)
    """

    def __init__(
        self,
        in_size: int,
        out_size: int,
        *,
        tau=5.0,
        dt=1.0,
        w_init: Callable | jax.typing.ArrayLike = init.KaimingNormal(),
        name: str | None = None,
    ):
        super().__init__(name=name)
        self.in_size = in_size
        self.out_size = out_size
        self.tau, self.dt = tau, dt
        self.decay = u.math.exp(-_units.dimensionless_ratio(dt, tau, "dt", "tau"))
        shape = (self.in_size[-1], self.out_size[-1])
        self.weight = brainstate.ParamState(
            {"weight": init.param(w_init, shape, allow_none=False, allow_scalar=False)}
        )

    def _initial_r(self, batch_size):
        return init.param(init.ZeroInit(), self.out_size, batch_size)

    def init_state(self, batch_size: int | None = None, **kwargs):
        """Create ``r`` at zero."""
        self.r = brainstate.HiddenState(self._initial_r(batch_size))

    def reset_state(self, batch_size: int | None = None, **kwargs):
        """Set ``r`` back to zero."""
        self.r.value = self._initial_r(batch_size)

    def update(self, x):
        """Advance one step with input ``x`` of shape ``(..., in_size)``; return ``r``."""
        drive = matmul(x, self.weight.value["weight"])
        self.r.value = self.decay * self.r.value + (1.0 - self.decay) * drive
        return self.r.value
