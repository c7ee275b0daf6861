"""XLSX metadata: sheet names, the first sheet's header and row count, within bounds."""

from __future__ import annotations

import extractor_samples as samples
import pytest

from postroom_attachment_extractor.handlers import parse_mail
from postroom_attachment_extractor.parsing.formats import xlsx
from postroom_attachment_extractor.parsing.formats.xlsx import xlsx_metadata
from postroom_attachment_extractor.parsing.mediatypes import ZIP


def test_a_cut_workbook_is_a_broken_zip_with_a_metadata_error() -> None:
    workbook = samples.xlsx_bytes([["a"]])
    raw = samples.mail(attachments=[
        {"data": workbook[: len(workbook) // 2], "maintype": "application",
         "subtype": "octet-stream", "filename": "cut.xlsx"},
    ])
    [cut_xlsx] = parse_mail(raw).attachments
    # without its central directory nothing says it is a workbook: it is a (broken) ZIP
    assert cut_xlsx.sniffed_type == ZIP and cut_xlsx.metadata.error


def test_a_workbook_that_unpacks_too_large_is_not_opened(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    workbook = samples.xlsx_bytes([["sku", "qty"], ["A-1", 4]])
    assert xlsx_metadata(workbook).rows == 1
    monkeypatch.setattr(xlsx, "MAX_UNPACKED_WORKBOOK_BYTES", 1000)
    meta = xlsx_metadata(workbook)
    assert meta.error is not None and meta.error.startswith("workbook unpacks to ")
    assert meta.error.endswith(" bytes: not opened")
    assert meta.sheets is None and meta.rows is None


def test_rows_are_not_counted_past_the_scan_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    workbook = samples.xlsx_bytes([["sku", "qty"], *([f"A-{i}", i] for i in range(10))])
    assert xlsx_metadata(workbook).rows == 10
    monkeypatch.setattr(xlsx, "MAX_SHEET_ROWS_SCANNED", 5)
    meta = xlsx_metadata(workbook)
    assert meta.header == ["sku", "qty"]
    assert meta.rows is None  # unknown, not a wrong count
