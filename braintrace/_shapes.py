# Copyright 2026 The braintrace authors. Licensed under the Apache License, Version 2.0.
"""Shape helpers shared by the compiler and the algorithms."""

from __future__ import annotations

import numpy as np

__all__ = ["broadcasts_to"]


def broadcasts_to(shape, target) -> bool:
    """Whether an array of ``shape`` broadcasts to exactly ``target``.

    >>> broadcasts_to((4,), (2, 4)), broadcasts_to((2, 4), (4,)), broadcasts_to((3,), (4,))
    (True, False, False)
    """
    try:
        return tuple(np.broadcast_shapes(tuple(shape), tuple(target))) == tuple(target)
    except ValueError:
        return False
