# Copyright 2026 The braintrace authors. Licensed under the Apache License, Version 2.0.
"""ETP operators: the trainable operations the eligibility-trace compiler recognises."""

from .conv import conv, etp_conv_p
from .einsum import einsum, etp_einsum_p
from .element_wise import element_wise, etp_element_wise_p, sum_to_shape
from .matmul import etp_matmul_p, matmul
from .primitive import (
    ETPPrimitive,
    ETPRule,
    etp_rule_of,
    is_etp_primitive,
    register_primitive,
    registered_primitives,
)

__all__ = [
    "ETPPrimitive",
    "ETPRule",
    "conv",
    "einsum",
    "element_wise",
    "etp_conv_p",
    "etp_einsum_p",
    "etp_element_wise_p",
    "etp_matmul_p",
    "etp_rule_of",
    "is_etp_primitive",
    "matmul",
    "register_primitive",
    "registered_primitives",
    "sum_to_shape",
]
