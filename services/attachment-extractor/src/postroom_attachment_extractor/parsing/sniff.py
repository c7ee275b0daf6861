"""What an attachment's bytes are, whatever its headers claim."""

from __future__ import annotations

import io
import re
import zipfile

import puremagic

from .formats.csv import looks_tabular
from .mediatypes import (
    CSV,
    DOCX,
    HTML,
    OCTET_STREAM,
    PDF,
    PPTX,
    SVG,
    TEXT,
    XLSM,
    XLSX,
    ZIP,
)
from .text import SNIFF_SAMPLE_BYTES, decode_text

_CSV_DECLARED = frozenset({
    "text/csv", "application/csv", "text/comma-separated-values", "text/x-csv",
    "text/tab-separated-values", "application/vnd.ms-excel",
})
_CSV_EXTENSIONS = (".csv", ".tsv")
_NOT_CSV_EXTENSIONS = (".txt", ".log", ".md", ".htm", ".html", ".xml", ".json", ".eml", ".ics")
_HTML_STARTS = ("<!doctype html", "<html", "<head", "<body", "<script", "<iframe", "<meta",
                "<!--")


def _zip_type(data: bytes) -> str:
    """XLSX, DOCX and friends are ZIP containers: tell them apart by their directory."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            names = archive.namelist()
            if "mimetype" in names:  # OpenDocument
                with archive.open("mimetype") as fh:
                    declared = fh.read(200).decode("ascii", "replace").strip()
                if re.fullmatch(r"application/vnd\.oasis\.opendocument\.[a-z.-]+", declared):
                    return declared
            if "[Content_Types].xml" in names:
                with archive.open("[Content_Types].xml") as fh:
                    types = fh.read(1024 * 1024).decode("utf-8", "replace").lower()
                if "spreadsheetml.sheet.main+xml" in types:
                    return XLSX
                if "sheet.macroenabled.main+xml" in types:
                    return XLSM
                if any(n.startswith("xl/") for n in names):
                    return XLSX
                if any(n.startswith("word/") for n in names):
                    return DOCX
                if any(n.startswith("ppt/") for n in names):
                    return PPTX
    except Exception:  # a damaged archive is still a ZIP by its signature
        return ZIP
    return ZIP


def sniff_content_type(data: bytes, declared: str = OCTET_STREAM, filename: str = "") -> str | None:
    """What the bytes are, whatever the headers claim. None for an empty attachment."""
    if not data:
        return None
    if b"%PDF-" in data[:1024]:
        return PDF
    if data[:4] in (b"PK\x03\x04", b"PK\x05\x06", b"PK\x07\x08"):
        return _zip_type(data)
    text = decode_text(data)
    if text is not None:
        name = filename.lower()
        if declared in _CSV_DECLARED or name.endswith(_CSV_EXTENSIONS):
            return CSV
        start = text[:512].lstrip("\ufeff \t\r\n").lower()
        if start.startswith(_HTML_STARTS):
            return HTML
        if start.startswith("<svg") or (start.startswith("<?xml") and "<svg" in start):
            return SVG
        if not name.endswith(_NOT_CSV_EXTENSIONS) and looks_tabular(text):
            return CSV
        try:
            found = puremagic.from_string(data[:SNIFF_SAMPLE_BYTES], mime=True)
        except Exception:
            found = ""
        if found and (found.startswith("text/") or found.endswith(("xml", "json", "rtf"))):
            return str(found)
        return TEXT
    try:
        found = puremagic.from_string(data, mime=True)
    except Exception:
        found = ""
    return str(found) if found else OCTET_STREAM
