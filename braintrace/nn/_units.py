# Copyright 2026 The braintrace authors. Licensed under the Apache License, Version 2.0.
"""Unit handling for layers with a time constant (brainunit quantities or plain numbers)."""

from __future__ import annotations

import brainunit as u


def time_ratio(dt, tau, layer: str):
    """Return ``dt / tau`` as a plain array.

    A plain-number ``tau`` is read in the unit of ``dt``. A Quantity ``tau`` must have the
    dimension of ``dt``; otherwise ``ValueError`` names ``layer`` and ``tau``.
    """
    if not isinstance(tau, u.Quantity) or u.get_dim(tau).is_dimensionless:
        return u.get_mantissa(dt) / u.get_mantissa(tau)
    if u.get_dim(dt) != u.get_dim(tau):
        raise ValueError(
            f"{layer}: `tau` ({tau!r}) and the environment's time step `dt` ({dt!r}) have different "
            "units. Give `tau` in the unit of `dt` (e.g. `tau=10. * u.ms` under "
            "`brainstate.environ.context(dt=1. * u.ms)`), or as a plain number, which is read in "
            "the unit of `dt`."
        )
    return u.maybe_decimal(dt / tau)
