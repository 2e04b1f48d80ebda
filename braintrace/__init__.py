# Copyright 2026 The braintrace authors. Licensed under the Apache License, Version 2.0.
"""braintrace: online learning of recurrent and spiking networks with eligibility traces.

Layers, each depending only on those above it in this list: ``ops`` (ETP primitives and
their rules), ``compiler`` (model step -> :class:`ETraceGraph`), ``algorithms`` (D-RTRL,
ES-D-RTRL/pp-prop, sequence drivers), ``coding`` (observe-only coding statistics) and
``nn`` (layers built on the ops).
"""

from . import algorithms, coding, nn, ops
from ._errors import BraintraceError, CompilationError, NotSupportedError
from .algorithms import (
    D_RTRL,
    ES_D_RTRL,
    EligibilityTrace,
    ETraceAlgorithm,
    IODimVjpAlgorithm,
    ParamDimVjpAlgorithm,
    compile,
    etrace_evolve,
    etrace_grad,
    pp_prop,
)
from .compiler import (
    CompilationRecord,
    CompilationReport,
    DiagnosticKind,
    DiagnosticLevel,
    ETraceGraph,
    HiddenGroup,
    HiddenParamOpRelation,
    HiddenPerturbation,
    ModuleInfo,
    PathClassification,
    add_hidden_perturbation_from_minfo,
    compile_etrace_graph,
    diagnostic_context,
    extract_module_info,
    find_hidden_groups_from_minfo,
    find_hidden_param_op_relations_from_minfo,
)
from .ops import (
    ETPPrimitive,
    ETPRule,
    conv,
    einsum,
    element_wise,
    matmul,
    register_primitive,
)

__all__ = [
    "BraintraceError",
    "CompilationError",
    "CompilationRecord",
    "CompilationReport",
    "D_RTRL",
    "ES_D_RTRL",
    "ETraceAlgorithm",
    "EligibilityTrace",
    "IODimVjpAlgorithm",
    "ParamDimVjpAlgorithm",
    "algorithms",
    "coding",
    "nn",
    "compile",
    "etrace_evolve",
    "etrace_grad",
    "pp_prop",
    "DiagnosticKind",
    "DiagnosticLevel",
    "ETraceGraph",
    "HiddenGroup",
    "HiddenParamOpRelation",
    "HiddenPerturbation",
    "ModuleInfo",
    "PathClassification",
    "add_hidden_perturbation_from_minfo",
    "compile_etrace_graph",
    "diagnostic_context",
    "extract_module_info",
    "find_hidden_groups_from_minfo",
    "find_hidden_param_op_relations_from_minfo",
    "ETPPrimitive",
    "ETPRule",
    "NotSupportedError",
    "conv",
    "einsum",
    "element_wise",
    "matmul",
    "ops",
    "register_primitive",
]
