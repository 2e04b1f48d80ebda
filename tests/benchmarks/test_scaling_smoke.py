"""The data-parallel scaling benchmark runs (tiny sizes, 1 and 2 forced host devices)."""

from benchmarks import scaling


def test_scaling_runs_per_device_count():
    rows = scaling.main(["--devices", "1", "2", "--hidden", "8", "--batch", "4", "--length", "3", "--repeats", "1"])
    assert [r[0] for r in rows] == [1, 2]
    assert rows[0][3] == "1.00"
    assert all(float(r[1]) > 0 for r in rows)
