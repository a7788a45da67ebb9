"""The one way the benchmark scripts write their tables into a Markdown file: between two marker comments, so a
rerun replaces its own table and leaves the rest of the page as it is."""

from __future__ import annotations

from pathlib import Path


def write_block(path: Path, begin: str, end: str, lines: list[str], heading: str) -> str:
    """Put ``begin``, ``lines``, ``end`` into ``path`` in place of the block already there, or append it under
    ``heading`` (a Markdown heading line) when there is none. Returns the block."""
    block = "\n".join([begin, *lines, end])
    text = path.read_text() if path.exists() else ""
    if begin in text and end in text:
        text = text[: text.index(begin)] + block + text[text.index(end) + len(end) :]
    else:
        text = text + f"\n{heading}\n\n" + block + "\n"
    path.write_text(text)
    return block
