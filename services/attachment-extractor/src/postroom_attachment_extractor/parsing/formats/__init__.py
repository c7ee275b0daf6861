"""One module per document format the extractor reads metadata from.

Each ``<format>_metadata(data)`` returns ``DocumentMetadata`` and never raises: a document it
cannot read gets ``error`` set. :func:`document_metadata` picks the module by sniffed type.
"""

from __future__ import annotations

from postroom_contracts import DocumentMetadata

from ..mediatypes import CSV, PDF, XLSX, ZIP
from .csv import csv_metadata
from .metadata import error
from .pdf import pdf_metadata
from .xlsx import xlsx_metadata
from .zip import zip_metadata

SUPPORTED_TYPES = frozenset({PDF, XLSX, CSV, ZIP})


def document_metadata(data: bytes, sniffed: str | None, *, excerpt_chars: int) -> DocumentMetadata:
    """The metadata of a document of the sniffed type (empty for a type we do not read);
    ``excerpt_chars``: characters of text kept where the format has text (PDF)."""
    try:
        if sniffed == PDF:
            return pdf_metadata(data, excerpt_chars)
        if sniffed == XLSX:
            return xlsx_metadata(data)
        if sniffed == CSV:
            return csv_metadata(data)
        if sniffed == ZIP:
            return zip_metadata(data)
    except Exception as exc:  # RecursionError in a hostile PDF, anything a library throws
        return error("metadata unreadable", exc)
    return DocumentMetadata()


__all__ = ["SUPPORTED_TYPES", "csv_metadata", "document_metadata", "pdf_metadata",
           "xlsx_metadata", "zip_metadata"]
