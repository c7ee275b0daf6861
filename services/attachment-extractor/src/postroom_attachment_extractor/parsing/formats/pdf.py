"""PDF: page count and the beginning of the text (pypdf)."""

from __future__ import annotations

import io
import logging

from postroom_contracts import DocumentMetadata

from ..text import clean_text
from .metadata import error

# pypdf reports every oddity of a file through logging; what matters to us ends up in the
# document's metadata instead.
logging.getLogger("pypdf").setLevel(logging.ERROR)

MAX_PDF_TEXT_PAGES = 20


def pdf_metadata(data: bytes, excerpt_chars: int) -> DocumentMetadata:
    """Page count and the beginning of the text; an unreadable PDF gives ``error``."""
    from pypdf import PdfReader

    try:
        reader = PdfReader(io.BytesIO(data), strict=False)
        if reader.is_encrypted:
            try:
                opened = reader.decrypt("")
            except Exception:
                opened = 0
            if not opened:
                return DocumentMetadata(error="encrypted PDF: a password is needed")
        pages = len(reader.pages)
    except Exception as exc:
        return error("unreadable PDF", exc)
    text: list[str] = []
    size = 0
    failed = None
    for number in range(min(pages, MAX_PDF_TEXT_PAGES)):
        if size >= excerpt_chars:
            break
        try:
            chunk = (reader.pages[number].extract_text() or "").strip()
        except Exception as exc:
            failed = error(f"text of page {number + 1} unreadable", exc).error
            break
        text.append(chunk)
        size += len(chunk)
    excerpt = clean_text("\n".join(text)).strip()[:excerpt_chars]
    return DocumentMetadata(pages=pages, text_excerpt=excerpt or None, error=failed)
