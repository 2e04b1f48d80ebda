# Copyright 2026 The braintrace authors. Licensed under the Apache License, Version 2.0.
"""Layers and cells built on the ETP ops: dense layers, recurrent cells, spiking neurons, readouts.

Every module is a ``brainstate.nn.Module`` with ``init_state(batch_size=None)``,
``reset_state(batch_size=None)`` and a one-step ``update``. Hidden states have shape ``(n,)``,
or ``(batch_size, n)`` when a batch size is given.
"""

from .linear import Linear as Linear
from .readout import LeakyRateReadout as LeakyRateReadout
from .rnn_cells import (
    GRUCell as GRUCell,
    LSTMCell as LSTMCell,
    MGUCell as MGUCell,
    ValinaRNNCell as ValinaRNNCell,
    VanillaRNNCell as VanillaRNNCell,
)
from .spiking import ALIF as ALIF, LIF as LIF
from .surrogate import (
    AbstractSurrogate as AbstractSurrogate,
    FastSigmoidSurrogate as FastSigmoidSurrogate,
    SigmoidSurrogate as SigmoidSurrogate,
    TriangleSurrogate as TriangleSurrogate,
    as_surrogate as as_surrogate,
    spike_function as spike_function,
)

__all__ = [
    "ALIF",
    "AbstractSurrogate",
    "FastSigmoidSurrogate",
    "GRUCell",
    "LIF",
    "LSTMCell",
    "LeakyRateReadout",
    "Linear",
    "MGUCell",
    "SigmoidSurrogate",
    "TriangleSurrogate",
    "ValinaRNNCell",
    "VanillaRNNCell",
    "as_surrogate",
    "spike_function",
]
