"""CSV: the header (first record) and the number of data records; telling CSV from text."""

from __future__ import annotations

import csv
import io

from postroom_contracts import DocumentMetadata

from ..text import decode_text
from .metadata import cells, error

CSV_SNIFF_CHARS = 16 * 1024
DELIMITERS = ",;\t|"


def _dialect(sample: str) -> type[csv.Dialect] | csv.Dialect:
    try:
        return csv.Sniffer().sniff(sample, delimiters=DELIMITERS)
    except csv.Error:
        first = sample.split("\n", 1)[0]
        if "\t" in first:
            return csv.excel_tab
        if first.count(";") > first.count(","):

            class Semicolon(csv.excel):
                delimiter = ";"

            return Semicolon
        return csv.excel


def looks_tabular(text: str) -> bool:
    """Whether the beginning of ``text`` is a table: at least three records of at least two
    fields, nine in ten of them as wide as the first."""
    sample = text[:CSV_SNIFF_CHARS]
    if "\n" in sample and len(text) > CSV_SNIFF_CHARS:
        sample = sample.rsplit("\n", 1)[0]
    try:
        dialect = csv.Sniffer().sniff(sample, delimiters=DELIMITERS)
        rows = [r for r in csv.reader(io.StringIO(sample), dialect) if any(c.strip() for c in r)]
    except csv.Error:
        return False
    rows = rows[:50]
    if len(rows) < 3 or len(rows[0]) < 2:
        return False
    same = sum(1 for r in rows if len(r) == len(rows[0]))
    return same >= 0.9 * len(rows)


def csv_metadata(data: bytes) -> DocumentMetadata:
    """Header (first record) and the number of data records after it."""
    text = decode_text(data)
    if text is None:
        return DocumentMetadata(error="CSV is not text")
    dialect = _dialect(text[:CSV_SNIFF_CHARS])
    header: list[str] | None = None
    rows = 0
    try:
        for record in csv.reader(io.StringIO(text, newline=""), dialect):
            if not any(cell.strip() for cell in record):
                continue
            if header is None:
                header = cells(record)
            else:
                rows += 1
    except csv.Error as exc:
        return DocumentMetadata(header=header, rows=rows, error=error("CSV", exc).error)
    return DocumentMetadata(header=header, rows=rows)
