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
from .spiking import ALIF as ALIF
from .spiking import LIF as LIF
from .surrogate import (
    AbstractSurrogate as AbstractSurrogate,
)
from .surrogate import (
    FastSigmoidSurrogate as FastSigmoidSurrogate,
)
from .surrogate import (
    SigmoidSurrogate as SigmoidSurrogate,
)
from .surrogate import (
    TriangleSurrogate as TriangleSurrogate,
)
from .surrogate import (
    as_surrogate as as_surrogate,
)
from .surrogate import (
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
