"""PDF metadata: page count, a bounded text excerpt, errors for locked and broken files."""

from __future__ import annotations

import extractor_samples as samples
import pytest

from postroom_attachment_extractor.handlers import Limits, parse_mail
from postroom_attachment_extractor.parsing.formats import pdf
from postroom_attachment_extractor.parsing.formats.pdf import pdf_metadata
from postroom_attachment_extractor.parsing.mediatypes import PDF


def test_pdf_text_excerpt_is_bounded() -> None:
    raw = samples.mail(attachments=[samples.pdf_attachment("long.pdf", *(["x" * 80] * 30))])
    [pdf] = parse_mail(raw, Limits(text_excerpt_chars=100)).attachments
    assert pdf.metadata.pages == 30
    assert pdf.metadata.text_excerpt == "x" * 80 + "\n" + "x" * 19


def test_encrypted_and_broken_pdfs_give_metadata_errors() -> None:
    raw = samples.mail(attachments=[
        {"data": samples.encrypted_pdf_bytes(), "maintype": "application", "subtype": "pdf",
         "filename": "locked.pdf"},
        {"data": b"%PDF-1.4\n1 0 obj << /Type /Catalog /Pages 2 0 R >>\ngarbage",
         "maintype": "application", "subtype": "pdf", "filename": "broken.pdf"},
        {"data": samples.pdf_bytes()[:300], "maintype": "application", "subtype": "pdf",
         "filename": "truncated.pdf"},
    ])
    locked, broken, truncated = parse_mail(raw).attachments
    assert locked.supported and locked.metadata.error == "encrypted PDF: a password is needed"
    assert locked.metadata.pages is None
    for doc in (broken, truncated):
        assert doc.sniffed_type == PDF and doc.supported
        assert doc.metadata.pages is None
        assert doc.metadata.error and doc.metadata.error.startswith("unreadable PDF")


def test_text_is_read_from_the_first_pages_only(monkeypatch: pytest.MonkeyPatch) -> None:
    data = samples.pdf_bytes("page one", "page two", "page three", "page four")
    monkeypatch.setattr(pdf, "MAX_PDF_TEXT_PAGES", 2)
    meta = pdf_metadata(data, excerpt_chars=10_000)
    assert meta.pages == 4
    assert meta.text_excerpt == "page one\npage two"
