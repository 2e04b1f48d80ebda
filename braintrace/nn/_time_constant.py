# Copyright 2026 The braintrace authors. Licensed under the Apache License, Version 2.0.
"""A positive time constant, fixed or trained online through :func:`braintrace.element_wise`."""

from __future__ import annotations

from collections.abc import Sequence

import brainstate
import brainunit as u
import jax.numpy as jnp
import numpy as np

from ..ops import element_wise


class TimeConstant(brainstate.nn.Module):
    """A positive time constant; when trainable, a per-neuron ``ParamState`` ``log_tau``.

    The trainable form stores ``log(tau)`` (the mantissa, in ``tau``'s unit) and reads it
    through ``element_wise(log_tau, weight_fn=jnp.exp)``, so it stays positive and the
    compiler treats it as an element-wise trainable parameter.
    """

    def __init__(self, tau, varshape: Sequence[int], *, trainable: bool, name: str | None = None):
        super().__init__(name=name)
        mantissa = np.asarray(u.get_mantissa(tau), dtype=float)
        if np.any(mantissa <= 0):
            raise ValueError(f"A time constant must be positive; got {tau!r}.")
        self.unit = u.get_unit(tau)
        self.trainable = trainable
        if trainable:
            log_tau = jnp.broadcast_to(jnp.log(jnp.asarray(mantissa, dtype=brainstate.environ.dftype())),
                                       tuple(varshape))
            self.log_tau = brainstate.ParamState(log_tau)
        else:
            self.constant = tau

    def update(self):
        """Return the current time constant (with its unit)."""
        if not self.trainable:
            return self.constant
        tau = element_wise(self.log_tau.value, weight_fn=jnp.exp)
        if u.get_dim(self.unit).is_dimensionless:
            return tau
        return u.Quantity(tau, unit=self.unit)
