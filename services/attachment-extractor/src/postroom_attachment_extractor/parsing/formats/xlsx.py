"""XLSX: sheet names, and the header and data-row count of the first sheet (openpyxl)."""

from __future__ import annotations

import io
import warnings
import zipfile

from postroom_contracts import DocumentMetadata

from ..text import clean_text
from .metadata import MAX_CELL_CHARS, cells, error

# openpyxl reports every oddity of a file as a warning; what matters to us ends up in the
# document's metadata instead.
warnings.filterwarnings("ignore", module=r"openpyxl(\..*)?$")

MAX_SHEETS = 100
MAX_SHEET_ROWS_SCANNED = 200_000  # rows read (empty ones too) before giving up on a count
MAX_SHEET_COLUMNS_SCANNED = 256
MAX_UNPACKED_WORKBOOK_BYTES = 256 * 1024 * 1024


def xlsx_metadata(data: bytes) -> DocumentMetadata:
    """Sheet names; header and data-row count of the first sheet."""
    import openpyxl

    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            unpacked = sum(info.file_size for info in archive.infolist())
        if unpacked > MAX_UNPACKED_WORKBOOK_BYTES:
            return DocumentMetadata(error=f"workbook unpacks to {unpacked} bytes: not opened")
        book = openpyxl.load_workbook(io.BytesIO(data), read_only=True, data_only=True)
    except Exception as exc:
        return error("unreadable XLSX", exc)
    try:
        sheets = [clean_text(str(name))[:MAX_CELL_CHARS] for name in book.sheetnames][:MAX_SHEETS]
        header: list[str] | None = None
        rows: int | None = 0
        if book.worksheets:
            sheet = book.worksheets[0]
            sheet.reset_dimensions()  # a forged <dimension> must not make rows 16384 cells wide
            scanned = 0
            for values in sheet.iter_rows(values_only=True, max_col=MAX_SHEET_COLUMNS_SCANNED):
                scanned += 1
                if scanned > MAX_SHEET_ROWS_SCANNED:
                    rows = None  # too long to count within our budget
                    break
                if not any(v is not None and str(v).strip() for v in values):
                    continue
                if header is None:
                    header = cells(values)
                else:
                    rows = (rows or 0) + 1
        return DocumentMetadata(sheets=sheets, header=header, rows=rows)
    except Exception as exc:
        return error("unreadable XLSX", exc)
    finally:
        book.close()
