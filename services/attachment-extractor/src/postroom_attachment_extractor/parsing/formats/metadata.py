"""Helpers shared by the format modules to build a document's metadata."""

from __future__ import annotations

from typing import Any

from postroom_contracts import DocumentMetadata

from ..text import clean_text

MAX_HEADER_CELLS = 100
MAX_CELL_CHARS = 200


def error(kind: str, exc: BaseException) -> DocumentMetadata:
    """Metadata that says only why the document could not be read."""
    detail = clean_text(str(exc))[:200]
    suffix = f": {detail}" if detail else ""
    return DocumentMetadata(error=f"{kind}: {type(exc).__name__}{suffix}")


def cells(values: Any) -> list[str]:
    """A table's header row: clean, bounded cells without the empty ones at the end."""
    row = ["" if v is None else clean_text(str(v))[:MAX_CELL_CHARS] for v in values]
    while row and not row[-1].strip():
        row.pop()
    return row[:MAX_HEADER_CELLS]
