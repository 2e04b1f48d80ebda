"""Every code example in the documentation runs, and the documentation builds without warnings."""

import doctest
import importlib.util
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
PAGES = sorted(p for p in DOCS.rglob("*.rst") if "_build" not in p.parts)
FLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE


def _load_extension():
    spec = importlib.util.spec_from_file_location("benchmark_results", DOCS / "_ext" / "benchmark_results.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_page_is_found():
    names = {p.relative_to(DOCS).as_posix() for p in PAGES}
    assert {"index.rst", "getting_started.rst", "concepts.rst", "explain.rst", "algorithms.rst",
            "coding.rst", "benchmarks.rst", "api/index.rst"} <= names


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(DOCS).as_posix())
def test_page_examples_run(page):
    failed, attempted = doctest.testfile(str(page), module_relative=False, optionflags=FLAGS,
                                         name=page.name, report=True)
    assert failed == 0, f"{failed} of {attempted} examples in {page.relative_to(ROOT)} failed (see output above)"


def test_explain_page_has_a_section_per_diagnostic_kind():
    import braintrace

    text = (DOCS / "explain.rst").read_text()
    for kind in braintrace.DiagnosticKind:
        assert f"``{kind.value}``" in text, kind


def test_benchmark_extension_examples():
    module = _load_extension()
    failed, _ = doctest.testmod(module, optionflags=FLAGS)
    assert failed == 0


def test_benchmark_markdown_conversion():
    module = _load_extension()
    markdown = (
        "# Benchmark results\n\nMeasured on: a machine.\n\n## Memory\n\n"
        "Machine: x86_64, 2 cores\n| method | T=100 (MiB) |\n|---|---|\n| BPTT | 2.75 |\n| D-RTRL | |\n\n"
        "![memory](memory.png)\n![missing](nowhere.png)\n"
    )
    lines = module.markdown_to_rst(markdown, image_prefix="/bench/",
                                   image_exists=lambda name: name == "memory.png")
    text = "\n".join(lines)
    assert "Benchmark results\n-----------------" in text
    assert "Memory\n~~~~~~" in text
    assert "Machine: x86_64, 2 cores\n\n.. list-table::" in text      # a blank line before the table
    assert "   * - D-RTRL\n     - .." in text                          # empty cells stay cells
    assert ".. image:: /bench/memory.png" in text and "nowhere.png" not in text


def test_docs_build_without_warnings(tmp_path):
    pytest.importorskip("sphinx")
    result = subprocess.run(
        [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html", str(DOCS), str(tmp_path / "html")],
        check=False, capture_output=True, text=True, cwd=ROOT, timeout=600,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert (tmp_path / "html" / "explain.html").is_file()
    reference = "".join(p.read_text() for p in (tmp_path / "html" / "api").glob("*.html"))
    missing = [name for name in _public_names() if not any(f'id="{n}"' in reference for n in name)]
    assert not missing, f"public names without an API entry: {missing}"


def _public_names():
    """Each public name as the tuple of paths it may be documented under."""
    import types

    import braintrace

    names = []
    for module in (braintrace, braintrace.nn, braintrace.ops, braintrace.compiler, braintrace.algorithms,
                   braintrace.coding):
        for name in module.__all__:
            if isinstance(getattr(module, name), types.ModuleType):
                continue
            names.append((f"{module.__name__}.{name}", f"braintrace.{name}"))
    return names


@pytest.mark.parametrize("with_results", [False, True], ids=["placeholder", "results"])
def test_benchmark_directive_builds(tmp_path, with_results):
    """Without ``results.md`` the directive's placeholder content is used; with it, the file."""
    pytest.importorskip("sphinx")
    source = tmp_path / "src"
    source.mkdir()
    (source / "conf.py").write_text(
        f"import sys\nsys.path.insert(0, {str(DOCS / '_ext')!r})\n"
        "extensions = ['benchmark_results']\nhtml_theme = 'alabaster'\n"
    )
    (source / "index.rst").write_text(
        "Benchmarks\n==========\n\n.. benchmark-results:: bench/results.md\n\n"
        "   .. note::\n\n      No results yet (the fallback note).\n"
    )
    if with_results:
        (source / "bench").mkdir()
        (source / "bench" / "results.md").write_text(
            "# Benchmark results\n\nMeasured on: a test machine.\n\n## Memory\n\n"
            "Machine: test\n| method | T=100 (MiB) |\n|---|---|\n| BPTT | 2.75 |\n\n![plot](missing.png)\n"
        )
    result = subprocess.run(
        [sys.executable, "-m", "sphinx", "-W", "-q", "-b", "html", str(source), str(tmp_path / "html")],
        check=False, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    page = (tmp_path / "html" / "index.html").read_text()
    if with_results:
        assert "a test machine" in page and "2.75" in page and "fallback note" not in page
    else:
        assert "fallback note" in page
