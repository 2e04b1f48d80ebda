# Copyright 2026 The braintrace authors. Licensed under the Apache License, Version 2.0.
"""ETP operators: the trainable operations the eligibility-trace compiler recognises."""

from .conv import conv, etp_conv_p
from .einsum import einsum, etp_einsum_p
from .element_wise import element_wise, etp_element_wise_p, sum_to_shape
from .embedding import embedding, etp_embedding_p
from .grouped_matmul import etp_grouped_matmul_p, grouped_matmul
from .lora_matmul import etp_lora_matmul_p, lora_matmul
from .matmul import etp_matmul_p, matmul
from .primitive import (
    ETPPrimitive,
    ETPRule,
    etp_rule_of,
    is_etp_primitive,
    define_primitive,
    registered_primitives,
)
from .sparse_matmul import SparseStructure, etp_sparse_matmul_p, sparse_matmul
from .user_primitive import register_primitive

__all__ = [
    "ETPPrimitive",
    "ETPRule",
    "SparseStructure",
    "conv",
    "einsum",
    "element_wise",
    "embedding",
    "etp_conv_p",
    "etp_einsum_p",
    "etp_element_wise_p",
    "etp_embedding_p",
    "etp_grouped_matmul_p",
    "etp_lora_matmul_p",
    "etp_matmul_p",
    "etp_sparse_matmul_p",
    "etp_rule_of",
    "is_etp_primitive",
    "grouped_matmul",
    "lora_matmul",
    "matmul",
    "define_primitive",
    "register_primitive",
    "registered_primitives",
    "sparse_matmul",
    "sum_to_shape",
]
