# Copyright 2026 The braintrace authors. Licensed under the Apache License, Version 2.0.
"""Unit checks for the spiking layers' constructor arguments (brainunit quantities or plain numbers)."""

from __future__ import annotations

import brainunit as u


def check_same_dimension(name: str, value, reference_name: str, reference) -> None:
    """Raise ``ValueError`` unless ``value`` has the dimension of ``reference``.

    A plain zero is accepted for any dimension (brainunit allows adding it to a quantity).
    """
    if u.get_dim(value) == u.get_dim(reference):
        return
    if not isinstance(value, u.Quantity) and not u.math.any(u.math.asarray(value) != 0):
        return
    raise ValueError(
        f"`{name}` must have the same unit as `{reference_name}` ({u.get_unit(reference)}); "
        f"got {value!r}. Give both in compatible units (e.g. both in `u.mV`) or both as plain numbers."
    )


def dimensionless_ratio(numerator, denominator, numerator_name: str, denominator_name: str):
    """Return ``numerator / denominator`` as a plain array, requiring it to be dimensionless."""
    ratio = numerator / denominator
    if not u.get_dim(ratio).is_dimensionless:
        raise ValueError(
            f"`{numerator_name} / {denominator_name}` must be dimensionless; got unit "
            f"{u.get_unit(ratio)} from {numerator_name}={numerator!r} and "
            f"{denominator_name}={denominator!r}. Give both in time units (e.g. `dt=0.1 * u.ms`) "
            "or both as plain numbers."
        )
    return u.maybe_decimal(ratio)


def zeros_in_unit_of(shape: tuple[int, ...], reference, dtype):
    """Zeros of ``shape`` carrying the unit of ``reference`` (a plain array when it has none)."""
    zeros = u.math.zeros(shape, dtype=dtype)
    if u.get_dim(reference).is_dimensionless:
        return zeros
    return u.Quantity(zeros, unit=u.get_unit(reference))
