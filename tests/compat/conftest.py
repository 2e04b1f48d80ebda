"""Support for the research-style compatibility scripts.

Each script trains a small model the way research code written for braintrace 0.2.8 does and
asserts that its loss falls. ``compat_record`` collects ``(script, mode, loss before, loss
after, seconds)`` and prints one summary line per run (visible with ``pytest -s``).
"""

import time

import pytest


class _Record:
    def __init__(self, name):
        self.name = name
        self.started = time.perf_counter()

    def __call__(self, mode, before, after, **extra):
        seconds = time.perf_counter() - self.started
        more = "".join(f" {k}={v:.4g}" if isinstance(v, float) else f" {k}={v}" for k, v in extra.items())
        print(f"\nCOMPAT {self.name} [{mode}] loss {before:.4f} -> {after:.4f} "
              f"({after / before:.2f}x) in {seconds:.1f}s{more}")


@pytest.fixture
def compat_record(request):
    return _Record(request.node.module.__name__.rsplit(".", 1)[-1])
