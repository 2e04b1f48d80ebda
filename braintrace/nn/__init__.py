# Copyright 2026 The braintrace authors. Licensed under the Apache License, Version 2.0.
"""Layers and cells built on the ETP ops, plus the BrainX neurons, synapses and layers.

Our own modules (dense layers, recurrent cells, readouts) are ``brainstate.nn.Module``s with
``init_state(batch_size=None)``, ``reset_state(batch_size=None)`` and a one-step ``update``.
Hidden states have shape ``(n,)``, or ``(batch_size, n)`` when a batch size is given.

Spiking neurons, synapses and projections are ``brainpy.state``'s own classes, and pools,
norms, dropouts and activations are ``brainstate.nn``'s, re-exported here under the same
names (``braintrace.nn.LIF is brainpy.state.LIF``). They are imported lazily, on first
attribute access, so ``import braintrace`` does not import brainpy.

Examples
--------
>>> import brainpy.state
>>> import braintrace
>>> braintrace.nn.LIF is brainpy.state.LIF
True
"""

import importlib

from .linear import Linear as Linear
from .lora import LoRA as LoRA
from .readout import LeakyRateReadout as LeakyRateReadout
from .rnn_cells import (
    GRUCell as GRUCell,
)
from .rnn_cells import (
    LSTMCell as LSTMCell,
)
from .rnn_cells import (
    MGUCell as MGUCell,
)
from .rnn_cells import (
    ValinaRNNCell as ValinaRNNCell,
)
from .rnn_cells import (
    VanillaRNNCell as VanillaRNNCell,
)
from .rnn_cells import URLSTMCell as URLSTMCell
from .minimal_cells import CFNCell as CFNCell
from .minimal_cells import MiniGRU as MiniGRU
from .minimal_cells import MiniLSTM as MiniLSTM
from .minimal_cells import MinimalRNNCell as MinimalRNNCell
from .lru import LRUCell as LRUCell
from .linear_variants import ScaledWSLinear as ScaledWSLinear
from .linear_variants import SignedWLinear as SignedWLinear
from .sparse import SparseLinear as SparseLinear
from .conv import Conv1d as Conv1d
from .conv import Conv2d as Conv2d
from .conv import Conv3d as Conv3d
from .embedding import Embedding as Embedding
from .grouped_linear import GroupedLinear as GroupedLinear

# Names re-exported from brainpy.state (neurons, synapses, plasticity, projections, outputs).
_BRAINPY_STATE_NAMES = (
    "IF", "LIF", "LIFRef", "ALIF", "ExpIF", "AdExIF",
    "Expon", "Alpha", "DualExpon", "AMPA", "GABAa",
    "STP", "STD",
    "AlignPostProj", "DeltaProj", "CurrentProj",
    "CUBA", "COBA", "MgBlock",
)

# Names re-exported from brainstate.nn (pools, norms, dropouts, activations, reshaping).
_BRAINSTATE_NN_NAMES = (
    "AdaptiveAvgPool1d", "AdaptiveAvgPool2d", "AdaptiveAvgPool3d",
    "AdaptiveMaxPool1d", "AdaptiveMaxPool2d", "AdaptiveMaxPool3d",
    "AvgPool1d", "AvgPool2d", "AvgPool3d", "MaxPool1d", "MaxPool2d", "MaxPool3d",
    "BatchNorm0d", "BatchNorm1d", "BatchNorm2d", "BatchNorm3d",
    "GroupNorm", "LayerNorm", "RMSNorm",
    "Dropout", "Dropout1d", "Dropout2d", "Dropout3d",
    "CELU", "ELU", "GELU", "GLU", "Hardshrink", "Hardsigmoid", "Hardswish", "Hardtanh",
    "LeakyReLU", "LogSigmoid", "LogSoftmax", "Mish", "PReLU", "RReLU", "ReLU", "ReLU6",
    "SELU", "SiLU", "Sigmoid", "Softmax", "Softmax2d", "Softmin", "Softplus", "Softshrink",
    "Softsign", "SpikeBitwise", "Tanh", "Tanhshrink",
    "Flatten", "Unflatten", "Identity",
)

_REEXPORTED_FROM = {
    **{name: "brainpy.state" for name in _BRAINPY_STATE_NAMES},
    **{name: "brainstate.nn" for name in _BRAINSTATE_NN_NAMES},
}

__all__ = [
    "CFNCell",
    "LRUCell",
    "MiniGRU",
    "MiniLSTM",
    "MinimalRNNCell",
    "ScaledWSLinear",
    "SignedWLinear",
    "URLSTMCell",
    "GRUCell",
    "LSTMCell",
    "LeakyRateReadout",
    "Linear",
    "LoRA",
    "MGUCell",
    "SparseLinear",
    "Conv1d",
    "Conv2d",
    "Conv3d",
    "Embedding",
    "GroupedLinear",
    "ValinaRNNCell",
    "VanillaRNNCell",
    *_BRAINPY_STATE_NAMES,
    *_BRAINSTATE_NN_NAMES,
]


def __getattr__(name: str):
    module = _REEXPORTED_FROM.get(name)
    if module is None:
        raise AttributeError(f"module 'braintrace.nn' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))
