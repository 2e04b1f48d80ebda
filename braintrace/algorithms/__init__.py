# Copyright 2026 The braintrace authors. Licensed under the Apache License, Version 2.0.
"""Online-learning algorithms on the compiled graph, and their sequence drivers."""

from .base import EligibilityTrace, ETraceAlgorithm, ETraceVjpAlgorithm
from .compile import ALGORITHMS, compile
from .config import ETraceConfig
from .inputs import MultiStepData, SingleStepData
from .d_rtrl import D_RTRL, ParamDimVjpAlgorithm
from .drivers import etrace_evolve, etrace_grad
from .eprop import EProp, FixedRandomFeedback, KappaFilter
from .es_d_rtrl import ES_D_RTRL, IODimVjpAlgorithm, OSTLFeedforward, pp_prop
from .ostl_recurrent import OSTLRecurrent
from .snap import SnAp
from .three_factor import ThreeFactor
from .uoro import UORO, RandomProjectionVjpAlgorithm
from .dni import DNI, SyntheticGradient, train_synthetic_gradient
from .grad_expon import GradExpon
from .graph_executor import ETraceGraphExecutor, ETraceVjpGraphExecutor
from .vmap import ETraceVmap, SequenceDriverMixin

__all__ = [
    "ALGORITHMS",
    "D_RTRL",
    "ES_D_RTRL",
    "EProp",
    "FixedRandomFeedback",
    "KappaFilter",
    "OSTLFeedforward",
    "OSTLRecurrent",
    "SnAp",
    "ThreeFactor",
    "UORO",
    "RandomProjectionVjpAlgorithm",
    "DNI",
    "SyntheticGradient",
    "train_synthetic_gradient",
    "GradExpon",
    "ETraceGraphExecutor",
    "ETraceVjpGraphExecutor",
    "ETraceVmap",
    "SequenceDriverMixin",
    "ETraceConfig",
    "MultiStepData",
    "SingleStepData",
    "ETraceAlgorithm",
    "ETraceVjpAlgorithm",
    "EligibilityTrace",
    "IODimVjpAlgorithm",
    "ParamDimVjpAlgorithm",
    "compile",
    "etrace_evolve",
    "etrace_grad",
    "pp_prop",
]
