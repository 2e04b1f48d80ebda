# Copyright 2026 The braintrace authors. Licensed under the Apache License, Version 2.0.
"""Leaky rate readout: a leaky integrator of a dense projection, trained online."""

from __future__ import annotations

import numbers
from collections.abc import Callable, Sequence

import brainstate
import braintools
import brainunit as u
import jax
import numpy as np

from ..ops import matmul
from . import _units

__all__ = ["LeakyRateReadout"]


def _as_size(size, name: str) -> tuple[int, ...]:
    if isinstance(size, numbers.Integral):
        size = (int(size),)
    size = tuple(size)
    if not size or not all(isinstance(n, numbers.Integral) and n > 0 for n in size):
        raise ValueError(f"LeakyRateReadout: `{name}` must be a positive int or a tuple of them; got {size!r}.")
    return size


class LeakyRateReadout(brainstate.nn.Module):
    r"""Leaky integrator of a dense projection: ``r = decay * r + x @ W``.

    ``decay = exp(-dt / tau)``, with ``dt = brainstate.environ.get_dt()`` read each time the
    layer runs (so the same layer follows the environment's time step), as in
    ``brainpy.state.LeakyRateReadout``. A constant input ``x`` drives ``r`` towards
    ``(x @ W) / (1 - decay)``. The product goes through the ETP op :func:`braintrace.matmul`,
    so ``W`` trains online; ``r`` is a hidden state.

    Parameters
    ----------
    in_size : int or tuple of int
        Input size; the last entry is the number of input features ``I``.
    out_size : int or tuple of int
        Output size; the last entry is the number of readout units ``O``.
    tau : Quantity or float or array_like
        Time constant (default ``5 ms``), a scalar or one per readout unit. A Quantity must
        have the dimension of ``dt``; a plain number is read in the unit of ``dt`` (with
        ``dt = 1 * u.ms``, ``tau=5.`` means 5 ms; with a unitless ``dt`` both are plain).
    w_init : callable or array_like
        Weight initialiser (a ``braintools.init`` initialiser or an ``(I, O)`` array);
        default ``KaimingNormal()``.
    r_init : callable or array_like
        Initialiser of ``r`` (default ``ZeroInit()``); it must carry the unit of ``x @ W``
        (for example ``ZeroInit(unit=u.mA)`` when ``W`` is in ``u.mA``).
    name : str, optional
        Module name.

    Attributes
    ----------
    weight : brainstate.ParamState
        ``{'weight': (I, O)}``.
    r : brainstate.HiddenState
        Readout, shape ``(O,)`` or ``(batch_size, O)``, created by ``init_state``.

    Raises
    ------
    ValueError
        When ``tau`` is not positive, or when, at run time, ``tau`` and ``dt`` have different
        dimensions.

    Examples
    --------
    >>> import brainstate
    >>> import brainunit as u
    >>> import jax.numpy as jnp
    >>> import braintrace
    >>> readout = braintrace.nn.LeakyRateReadout(3, 2, tau=10. * u.ms, w_init=jnp.ones((3, 2)))
    >>> readout.init_state(batch_size=4)
    >>> with brainstate.environ.context(dt=1. * u.ms):
    ...     r = readout(jnp.ones((4, 3)))
    ...     r = readout(jnp.ones((4, 3)))
    >>> r[0]  # 3 + exp(-0.1) * 3
    Array([5.714..., 5.714...], dtype=float32)
    """

    def __init__(
        self,
        in_size: int | Sequence[int],
        out_size: int | Sequence[int],
        tau: u.Quantity | jax.typing.ArrayLike = 5.0 * u.ms,
        w_init: Callable | jax.typing.ArrayLike = braintools.init.KaimingNormal(),
        r_init: Callable | jax.typing.ArrayLike = braintools.init.ZeroInit(),
        name: str | None = None,
    ):
        super().__init__(name=name)
        self.in_size = _as_size(in_size, "in_size")
        self.out_size = _as_size(out_size, "out_size")
        tau = braintools.init.param(tau, self.out_size)
        if np.any(np.asarray(u.get_mantissa(tau)) <= 0):
            raise ValueError(f"{self._label()}: `tau` must be positive; got {tau!r}.")
        self.tau = tau
        self.r_init = r_init
        shape = (self.in_size[-1], self.out_size[-1])
        self.weight = brainstate.ParamState(
            {"weight": braintools.init.param(w_init, shape, allow_none=False, allow_scalar=False)}
        )

    def _label(self) -> str:
        return f"LeakyRateReadout `{self.name}`" if self.name else "LeakyRateReadout"

    @property
    def decay(self):
        """``exp(-dt / tau)`` for the environment's current ``dt`` (plain array)."""
        dt = brainstate.environ.get_dt()
        return u.math.exp(-_units.time_ratio(dt, self.tau, self._label()))

    def _initial_r(self, batch_size):
        return braintools.init.param(self.r_init, self.out_size, batch_size)

    def init_state(self, batch_size: int | None = None, **kwargs):
        """Create ``r`` from ``r_init``."""
        self.r = brainstate.HiddenState(self._initial_r(batch_size))

    def reset_state(self, batch_size: int | None = None, **kwargs):
        """Set ``r`` back to ``r_init``."""
        self.r.value = self._initial_r(batch_size)

    def update(self, x):
        """Advance one step with input ``x`` of shape ``(..., I)``; return the new ``r``."""
        drive = matmul(x, self.weight.value["weight"])
        r = self.r.value
        if u.get_dim(drive) != u.get_dim(r):
            raise ValueError(
                f"{self._label()}: `r` has unit {u.get_unit(r)} but `x @ W` has unit "
                f"{u.get_unit(drive)}; pass `r_init` in the unit of `x @ W` "
                f"(e.g. `braintools.init.ZeroInit(unit={u.get_unit(drive)})`)."
            )
        self.r.value = self.decay * r + drive
        return self.r.value
