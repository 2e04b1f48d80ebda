# Copyright 2026 The braintrace authors. Licensed under the Apache License, Version 2.0.
"""The eligibility-trace compiler: model step -> :class:`ETraceGraph`.

Passes, each a function of the previous pass's immutable result that returns its value and
its :class:`CompilationRecord` diagnostics: tracing (``module_info.trace_step``),
canonicalisation (``canonicalize.canonicalize_step``: inline calls, if-convert conds, unroll
short scans), the ``while_loop`` check, state classification (``module_info.classify_states``;
the three together are ``extract_module_info``), hidden groups
(``find_hidden_groups_from_minfo``), relations (``find_hidden_param_op_relations_from_minfo``),
the reports of control flow and untraced paths, output rewriting and the hidden perturbation
(``add_hidden_perturbation_from_minfo``). ``compile_etrace_graph`` collects the records and
warns once per warning-level record at the end.
"""

from .diagnostics import (
    CompilationRecord,
    DiagnosticKind,
    DiagnosticLevel,
    diagnostic_context,
)
from .control_flow_policy import ControlFlowPolicy
from .graph import ETraceGraph, compile_etrace_graph
from .hidden_groups import HiddenGroup, find_hidden_groups_from_minfo
from .module_info import ModuleInfo, extract_module_info
from .perturbation import HiddenPerturbation, add_hidden_perturbation_from_minfo
from .relations import (
    HiddenParamOpRelation,
    PathClassification,
    find_hidden_param_op_relations_from_minfo,
)
from .report import CompilationReport
from .from_module import (
    add_hidden_perturbation_in_module,
    find_hidden_groups_from_module,
    find_hidden_param_op_relations_from_module,
)

__all__ = [
    "CompilationRecord",
    "CompilationReport",
    "ControlFlowPolicy",
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
    "add_hidden_perturbation_in_module",
    "find_hidden_groups_from_module",
    "find_hidden_param_op_relations_from_module",
]
