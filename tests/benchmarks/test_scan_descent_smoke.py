"""The scan-descent benchmark runs (tiny sizes): the descended step does not grow with L."""

from benchmarks import scan_descent


def test_scan_descent_benchmark_runs(capsys):
    results = scan_descent.main(["--lengths", "20", "200", "--unrolled"])
    assert [r["mode"] for r in results] == ["descended", "descended"]
    assert all(r["applied"] for r in results)
    assert results[0]["eqns"] == results[1]["eqns"] and results[0]["temp_bytes"] == results[1]["temp_bytes"]
    assert "XLA temp (bytes)" in capsys.readouterr().out
