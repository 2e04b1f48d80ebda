"""Every example script runs at its reduced size (``--smoke``) and reports a sensible result."""

import importlib.util
import math
import pathlib

import pytest

EXAMPLES = pathlib.Path(__file__).resolve().parents[2] / "examples"
SCRIPTS = sorted(p.stem for p in EXAMPLES.glob("*.py"))


def load(name):
    spec = importlib.util.spec_from_file_location(f"examples_{name}", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_four_examples_exist():
    assert {"lif_evidence_accumulation", "gru_copy_task", "conv_snn_pattern", "coding_statistics"} <= set(SCRIPTS)


@pytest.mark.parametrize("name", SCRIPTS)
def test_smoke_run(name, capsys):
    result = load(name).main(["--smoke"])
    printed = capsys.readouterr().out
    assert printed.strip(), "the example prints a short result"
    assert isinstance(result, dict)
    numbers = [v for v in result.values() if isinstance(v, float)]
    assert all(math.isfinite(v) for v in numbers)
    if name == "lif_evidence_accumulation":
        assert result["gradient_gap_vs_bptt"] < 1e-4          # D-RTRL is exact for this model
        assert result["loss_end"] < result["loss_start"]
    elif name == "conv_snn_pattern":
        assert result["gradient_gap_vs_bptt"] < 1e-4
        assert result["varshape"][1:] == (8, 8, 2)
    elif name == "gru_copy_task":
        assert result["loss_end"] < result["loss_start"]
    elif name == "coding_statistics":
        for row in (result["start"], result["end"]):
            assert 0.0 < row["utilization"] <= 1.0
            assert row["entropy"] >= 0.0


def test_es_d_rtrl_option_runs():
    result = load("gru_copy_task").main(["--smoke", "--method", "es_d_rtrl", "--iterations", "5"])
    assert result["method"] == "es_d_rtrl" and math.isfinite(result["loss_end"])
