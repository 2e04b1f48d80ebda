"""The online gradients are bit-identical to the ones stored before the learning-rule contract.

``data/reference_gradients.npz`` was written by ``_make_reference_gradients.py`` on the code
before the trace rules moved onto :class:`braintrace.algorithms.trace_rule.TraceRule`
(issue 9, commit 0335519); all 24 cases matched bit for bit after that refactor. It was
regenerated once on purpose after the issue-14 D-RTRL solve (a per-slice contraction that sums
in another order: two cases, ``d_rtrl/gru_b2`` and ``d_rtrl/group``, moved by about 5e-7).
A refactor of the rules, the learner or the executor must not change one bit.
One case per rule runs by default; the others are marked slow.
"""

import pathlib

import numpy as np
import pytest

from tests.algorithms._reference_cases import CASES, run_case

DATA = pathlib.Path(__file__).resolve().parent / "data" / "reference_gradients.npz"
DEFAULT = {"d_rtrl/old_state", "d_rtrl/gru_window3", "pp_prop/two_gru", "eprop_k06/gru",
           "eprop_random/gru", "three_factor/gru", "ostl_ff/gru"}


def _stored(name):
    with np.load(DATA) as data:
        return {key.split("#", 1)[1]: data[key] for key in data.files if key.split("#", 1)[0] == name}


@pytest.mark.filterwarnings(r"ignore:\[warning\]")
@pytest.mark.parametrize("name", [n if n in DEFAULT else pytest.param(n, marks=pytest.mark.slow) for n in CASES])
def test_gradients_are_bit_identical(name):
    expected = _stored(name)
    actual = run_case(name)
    assert expected, f"no stored arrays for case {name}"
    assert sorted(actual) == sorted(expected)
    for key, value in expected.items():
        assert actual[key].dtype == value.dtype, key
        assert np.array_equal(actual[key], value), f"{name}: {key} differs (max |Δ| "\
            f"{np.max(np.abs(actual[key] - value))})"
    assert any(np.abs(v).max() > 1e-4 for k, v in expected.items() if k.startswith("grad")), "live gradients"
