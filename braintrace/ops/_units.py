# Copyright 2026 The braintrace authors. Licensed under the Apache License, Version 2.0.
"""Splitting brainunit quantities around an ETP primitive (which sees mantissas only)."""

from __future__ import annotations

import brainunit as u


def split(value):
    """Return ``(mantissa, unit)``; plain arrays have a dimensionless unit."""
    if isinstance(value, u.Quantity):
        return value.mantissa, value.unit
    return value, None


def combine_units(*units):
    result = None
    for unit in units:
        if unit is None:
            continue
        result = unit if result is None else result * unit
    return result


def bias_mantissa(bias, unit):
    """The mantissa of ``bias`` expressed in ``unit`` (the unit of the op's output)."""
    if bias is None:
        return None
    if unit is None:
        if isinstance(bias, u.Quantity):
            if not bias.is_unitless:
                raise ValueError(
                    f"The bias has unit `{bias.unit}` but the product x @ weight is "
                    "dimensionless; give the bias the same unit as the output."
                )
            return bias.mantissa
        return bias
    if not isinstance(bias, u.Quantity):
        raise ValueError(
            f"The output of the op has unit `{unit}` but the bias has none; "
            "give the bias the same unit as the output."
        )
    return bias.to_decimal(unit)


def attach(value, unit):
    if unit is None or (isinstance(unit, u.Unit) and unit.is_unitless):
        return value
    return u.Quantity(value, unit=unit)
