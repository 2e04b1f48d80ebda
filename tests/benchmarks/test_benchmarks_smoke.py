"""The benchmark scripts run (tiny sizes) and print their tables."""

from benchmarks import coding_overhead, compile_time, handwritten, memory, speed


def test_compile_time_runs(capsys):
    rows = compile_time.main(["--hidden", "16", "--repeats", "1"])
    assert rows[0][0] == "2-layer GRU"
    assert "first compile" in capsys.readouterr().out


def test_memory_runs_and_online_is_flat():
    results = memory.main(["--hidden", "8", "--batch", "2", "--lengths", "10", "40"])
    assert results["D-RTRL"][0] == results["D-RTRL"][1]
    assert results["BPTT"][1] > results["BPTT"][0]


def test_speed_and_overhead_run():
    rows = speed.main(["--cells", "elman", "--hidden", "8", "--lengths", "5", "--batch", "2", "--repeats", "1"])
    assert rows[0][:3] == ["elman", 8, 5]
    rows = coding_overhead.main(["--hidden", "8", "--batch", "2", "--length", "5", "--repeats", "1"])
    assert [r[0] for r in rows] == ["D-RTRL", "ES-D-RTRL"]


def test_handwritten_runs_and_agrees(capsys):
    """The hand-written GRU ES-D-RTRL and ours give one gradient before they are timed."""
    import pytest

    with pytest.warns(UserWarning, match="relation_excluded_weight_to_weight"):  # the GRU's reset gate
        rows, difference = handwritten.main(["--hidden", "8", "--length", "8", "--batch", "2", "--window", "4",
                                             "--repeats", "1", "--rounds", "1"])
    assert len(rows) == 1 and difference < 1e-5
    assert "ES/forward (hand)" in capsys.readouterr().out


def test_profile_step_zero_solve_learner_and_table(capsys):
    """The zero-solve learner drops exactly the trace contraction; the profile prints its split."""
    import brainstate
    import jax.numpy as jnp
    import numpy as np

    import braintrace
    from benchmarks import profile_step
    from tests._support import models
    from tests._support.oracle import online_grads

    xs = jnp.linspace(-1.0, 1.0, 4 * 3).reshape(4, 3)
    grads = {}
    for cls in (braintrace.D_RTRL, profile_step._zero_solve(braintrace.D_RTRL)):
        brainstate.random.seed(0)  # the same weights for both learners
        model = models.LeakyRNN()
        brainstate.nn.init_all_states(model)
        learner = cls(model)
        learner.compile_graph(xs[0])
        grads[cls] = online_grads(learner, xs)
    plain, zero = grads.values()
    # The readout (a same-step bypass, no trace) is untouched; the traced input weight is zeroed.
    np.testing.assert_array_equal(zero[("out", "weight")]["weight"], plain[("out", "weight")]["weight"])
    assert np.abs(plain[("W", "weight")]["weight"]).max() > 1e-3
    assert np.all(zero[("W", "weight")]["weight"] == 0)
    profile_step.main(["--cell", "elman", "--hidden", "8", "--batch", "2", "--length", "5", "--repeats", "1"])
    assert "trace roll" in capsys.readouterr().out


def test_regenerating_results_keeps_the_hand_written_sections():
    """``python -m benchmarks`` rewrites only the generated head of ``results.md``."""
    import pathlib

    from benchmarks.__main__ import KEEP_MARKER, merge_results

    results = (pathlib.Path(__file__).parents[2] / "benchmarks" / "results.md").read_text()
    assert KEEP_MARKER in results
    merged = merge_results("# Benchmark results\n\nnew tables\n", results)
    assert merged.startswith("# Benchmark results\n\nnew tables\n\n" + KEEP_MARKER)
    assert merged.endswith(results[results.index(KEEP_MARKER):])
    assert "## Profile of one online step, before issue 14's changes" in merged
    fresh = merge_results("# Benchmark results\n", "")
    assert fresh == "# Benchmark results\n\n" + KEEP_MARKER + "\n"
