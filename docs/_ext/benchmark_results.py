# Copyright 2026 The braintrace authors. Licensed under the Apache License, Version 2.0.
"""``.. benchmark-results:: path``: include the Markdown benchmark results, or a placeholder.

``python -m benchmarks`` writes ``benchmarks/results.md`` (headings, paragraphs, pipe tables
and one image). This directive converts that small Markdown subset to reStructuredText at
build time, so the page follows the file without a Markdown parser. When the file does not
exist the directive's own content (a placeholder) is used instead.
"""

from __future__ import annotations

import pathlib
import re

from docutils import nodes
from docutils.statemachine import StringList
from sphinx.util.docutils import SphinxDirective
from sphinx.util.nodes import nested_parse_with_titles

_HEADING_CHARS = {1: "=", 2: "-", 3: "~", 4: "^"}


def _split_row(line: str) -> list[str]:
    cells = line.strip().strip("|").split("|")
    return [c.strip() for c in cells]


def _is_separator(line: str) -> bool:
    return bool(re.fullmatch(r"\|?\s*:?-{3,}:?\s*(\|\s*:?-{3,}:?\s*)*\|?", line.strip()))


def _inline(text: str) -> str:
    """Markdown inline code and emphasis to reStructuredText."""
    text = re.sub(r"`([^`]+)`", r"``\1``", text)
    text = re.sub(r"\*\*([^*]+)\*\*", r"**\1**", text)
    return text


def markdown_to_rst(markdown: str, *, top_level: int = 2, image_prefix: str = "",
                    image_exists=None) -> list[str]:
    """Convert the Markdown subset of ``benchmarks/results.md`` to reStructuredText lines.

    Headings ``#``..``####`` become section titles (``#`` maps to ``top_level``), pipe
    tables become ``list-table`` directives, ``![alt](file)`` becomes an ``image`` with
    ``image_prefix`` prepended to ``file`` (dropped when ``image_exists(file)`` is false);
    other lines are kept as paragraphs.

    Examples
    --------
    >>> print("\\n".join(markdown_to_rst("# Results\\n\\n| a | b |\\n|---|---|\\n| 1 | `x` |\\n")))
    Results
    -------
    <BLANKLINE>
    .. list-table::
       :header-rows: 1
    <BLANKLINE>
       * - a
         - b
       * - 1
         - ``x``
    <BLANKLINE>
    """
    lines = markdown.splitlines()
    out: list[str] = []

    def new_block():
        if out and out[-1] != "":
            out.append("")

    i = 0
    while i < len(lines):
        line = lines[i]
        heading = re.match(r"^(#{1,4})\s+(.*)$", line)
        image = re.match(r"^!\[([^\]]*)\]\(([^)]+)\)\s*$", line.strip())
        is_table = line.strip().startswith("|") and i + 1 < len(lines) and _is_separator(lines[i + 1])
        if heading or image or is_table:
            new_block()
        if heading:
            level = min(len(heading.group(1)) - 1 + top_level, 4)
            title = _inline(heading.group(2).strip())
            out.extend([title, _HEADING_CHARS[level] * max(len(title), 3), ""])
            i += 1
        elif image:
            if image_exists is None or image_exists(image.group(2)):
                out.extend([f".. image:: {image_prefix}{image.group(2)}", f"   :alt: {image.group(1)}", ""])
            i += 1
        elif is_table:
            header = _split_row(line)
            rows = []
            i += 2
            while i < len(lines) and lines[i].strip().startswith("|"):
                rows.append(_split_row(lines[i]))
                i += 1
            out.extend([".. list-table::", "   :header-rows: 1", ""])
            for row in [header, *rows]:
                row = (row + [""] * len(header))[: len(header)]
                out.append(f"   * - {_inline(row[0]) or '..'}")
                out.extend(f"     - {_inline(cell) or '..'}" for cell in row[1:])
            out.append("")
        else:
            out.append(_inline(line))
            i += 1
    while len(out) > 1 and out[-1] == "" and out[-2] == "":
        out.pop()
    return out


class BenchmarkResults(SphinxDirective):
    """Include a Markdown results file (converted), or the directive content when it is missing."""

    required_arguments = 1
    has_content = True

    def run(self):
        source_dir = pathlib.Path(self.env.srcdir)
        relative = pathlib.PurePosixPath(self.arguments[0])
        path = (source_dir / relative).resolve()
        if path.is_file():
            self.env.note_dependency(str(path))
            lines = markdown_to_rst(
                path.read_text(encoding="utf-8"),
                image_prefix=f"/{relative.parent}/",
                image_exists=lambda name: (path.parent / name).is_file(),
            )
            source = str(path)
        else:
            lines = list(self.content)
            source = self.get_source_info()[0]
        container = nodes.section()
        container.document = self.state.document
        nested_parse_with_titles(self.state, StringList(lines, source=source), container)
        return container.children


def setup(app):
    app.add_directive("benchmark-results", BenchmarkResults)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
