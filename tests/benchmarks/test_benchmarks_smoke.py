"""The benchmark scripts run (tiny sizes) and print their tables."""

from benchmarks import coding_overhead, compile_time, memory, speed


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
