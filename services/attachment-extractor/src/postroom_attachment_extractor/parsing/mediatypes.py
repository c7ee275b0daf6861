"""The media types the extractor names, and the file extension that goes with a type."""

from __future__ import annotations

import mimetypes

PDF = "application/pdf"
XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
XLSM = "application/vnd.ms-excel.sheet.macroenabled.12"
DOCX = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
PPTX = "application/vnd.openxmlformats-officedocument.presentationml.presentation"
CSV = "text/csv"
ZIP = "application/zip"
TEXT = "text/plain"
HTML = "text/html"
SVG = "image/svg+xml"
OCTET_STREAM = "application/octet-stream"

_EXTENSIONS = {PDF: ".pdf", XLSX: ".xlsx", XLSM: ".xlsm", DOCX: ".docx", PPTX: ".pptx",
               CSV: ".csv", ZIP: ".zip", TEXT: ".txt", "message/rfc822": ".eml",
               "image/jpeg": ".jpg", OCTET_STREAM: ".bin"}


def extension_for(content_type: str | None) -> str:
    if not content_type:
        return ".bin"
    ext = _EXTENSIONS.get(content_type) or mimetypes.guess_extension(content_type, strict=False)
    return ext or ".bin"
