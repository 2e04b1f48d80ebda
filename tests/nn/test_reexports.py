# Copyright 2026 The braintrace authors. Licensed under the Apache License, Version 2.0.
"""braintrace.nn re-exports brainpy.state and brainstate.nn objects, lazily."""

import json
import subprocess
import sys

import brainpy.state
import brainstate
import pytest

import braintrace.nn

BRAINPY_STATE = ["LIF", "ALIF", "IF", "Expon", "Alpha", "DualExpon", "STP", "STD",
                 "AlignPostProj", "CUBA", "COBA", "LIFRef"]
BRAINSTATE_NN = [
    "AdaptiveAvgPool1d", "AdaptiveAvgPool2d", "AdaptiveAvgPool3d", "AdaptiveMaxPool1d", "AdaptiveMaxPool2d",
    "AdaptiveMaxPool3d", "AvgPool1d", "AvgPool2d", "AvgPool3d", "BatchNorm0d", "BatchNorm1d", "BatchNorm2d",
    "BatchNorm3d", "CELU", "Dropout", "Dropout1d", "Dropout2d", "Dropout3d", "ELU", "Flatten", "GELU", "GLU",
    "GroupNorm", "Hardshrink", "Hardsigmoid", "Hardswish", "Hardtanh", "Identity", "LayerNorm", "LeakyReLU",
    "LogSigmoid", "LogSoftmax", "MaxPool1d", "MaxPool2d", "MaxPool3d", "Mish", "PReLU", "RMSNorm", "RReLU", "ReLU",
    "ReLU6", "SELU", "SiLU", "Sigmoid", "Softmax", "Softmax2d", "Softmin", "Softplus", "Softshrink", "Softsign",
    "SpikeBitwise", "Tanh", "Tanhshrink", "Unflatten",
]


@pytest.mark.parametrize("name", BRAINPY_STATE)
def test_brainpy_state_names_are_the_same_objects(name):
    assert getattr(braintrace.nn, name) is getattr(brainpy.state, name)
    assert name in braintrace.nn.__all__ and name in dir(braintrace.nn)


@pytest.mark.parametrize("name", BRAINSTATE_NN)
def test_brainstate_nn_names_are_the_same_objects(name):
    assert getattr(braintrace.nn, name) is getattr(brainstate.nn, name)
    assert name in braintrace.nn.__all__ and name in dir(braintrace.nn)


def test_our_own_layers_are_not_shadowed():
    assert braintrace.nn.LeakyRateReadout is not brainpy.state.LeakyRateReadout
    assert braintrace.nn.LeakyRateReadout.__module__ == "braintrace.nn.readout"
    assert braintrace.nn.Linear is not brainstate.nn.Linear


def test_unknown_name_is_an_attribute_error():
    with pytest.raises(AttributeError, match="braintrace.nn.*NoSuchLayer"):
        braintrace.nn.NoSuchLayer  # noqa: B018
    assert not hasattr(braintrace.nn, "spike_function")


_PROBE = """
import json, sys, time
t0 = time.perf_counter()
import braintrace
t1 = time.perf_counter()
lazy = 'brainpy' not in sys.modules
braintrace.nn.LIF
t2 = time.perf_counter()
print(json.dumps({"lazy": lazy, "loaded": 'brainpy.state' in sys.modules,
                  "import_braintrace_s": t1 - t0, "first_LIF_s": t2 - t1}))
"""


def test_import_braintrace_does_not_import_brainpy():
    out = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True, timeout=120, check=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["lazy"], "`import braintrace` imported brainpy"
    assert result["loaded"], "accessing braintrace.nn.LIF must import brainpy.state"
