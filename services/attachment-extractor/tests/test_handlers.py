"""parse_mail, the extraction the service runs: real files (reportlab PDFs, openpyxl
workbooks) in a mail, what becomes a document and what is skipped.

The rules of each concern are tested next to it under ``parsing/``."""

from __future__ import annotations

import hashlib

import extractor_samples as samples

from postroom_attachment_extractor.handlers import Limits, parse_mail
from postroom_attachment_extractor.parsing.mediatypes import CSV, PDF, XLSX, ZIP


def test_supported_documents_are_extracted_with_their_metadata() -> None:
    workbook = samples.xlsx_bytes([["sku", "qty"], ["A-1", 4], ["B-2", 10]],
                                  sheets=("Orders", "Notes"))
    archive = samples.zip_bytes({"a.txt": b"alpha", "b/c.txt": b"gamma"})
    raw = samples.mail(attachments=[
        samples.pdf_attachment("order.pdf", "Purchase order PO-42", "Terms and conditions"),
        {"data": workbook, "maintype": "application", "subtype": "octet-stream",
         "filename": "order.xlsx"},
        {"data": samples.CSV_TEXT.encode(), "maintype": "text", "subtype": "csv",
         "filename": "lines.csv"},
        {"data": archive, "maintype": "application", "subtype": "zip", "filename": "all.zip"},
    ])
    parsed = parse_mail(raw)

    assert parsed.body_text == "Please find our order attached."
    assert parsed.defects == [] and parsed.skipped_parts == 0
    pdf, xlsx, csv_, zip_ = parsed.attachments
    assert [a.index for a in parsed.attachments] == [0, 1, 2, 3]
    assert (pdf.filename, pdf.declared_type, pdf.sniffed_type, pdf.supported) == (
        "order.pdf", "application/pdf", PDF, True)
    assert pdf.metadata.pages == 2
    assert "Purchase order PO-42" in (pdf.metadata.text_excerpt or "")
    assert "Terms and conditions" in (pdf.metadata.text_excerpt or "")
    # declared as octet-stream, recognised by its content
    assert (xlsx.declared_type, xlsx.sniffed_type, xlsx.supported) == (
        "application/octet-stream", XLSX, True)
    assert xlsx.metadata.sheets == ["Orders", "Notes"]
    assert xlsx.metadata.header == ["sku", "qty"] and xlsx.metadata.rows == 2
    assert csv_.sniffed_type == CSV and csv_.supported
    assert csv_.metadata.header == ["sku", "description", "qty"] and csv_.metadata.rows == 3
    # a ZIP is kept byte for byte, never unpacked
    assert zip_.sniffed_type == ZIP and zip_.supported and zip_.data == archive
    assert zip_.metadata.model_dump(exclude_none=True) == {}
    assert zip_.sha256 == hashlib.sha256(archive).hexdigest() and zip_.size == len(archive)


def test_inline_images_are_skipped_unless_configured() -> None:
    logo = {"data": samples.png_bytes(), "maintype": "image", "subtype": "png",
            "filename": "logo.png", "disposition": "inline", "cid": "<logo@supplier>"}
    photo = {"data": samples.png_bytes(), "maintype": "image", "subtype": "png",
             "filename": "damaged-goods.png"}
    raw = samples.mail(html="<p>Hi <img src='cid:logo@supplier'></p>",
                       attachments=[logo, samples.pdf_attachment(), photo])

    default = parse_mail(raw)
    assert [a.filename for a in default.attachments] == ["order.pdf", "damaged-goods.png"]
    assert [a.index for a in default.attachments] == [0, 1]
    assert default.skipped_parts == 1

    inline = parse_mail(raw, Limits(include_inline=True))
    assert [a.filename for a in inline.attachments] == [
        "logo.png", "order.pdf", "damaged-goods.png"]
    assert inline.attachments[0].sniffed_type == "image/png"
    assert inline.skipped_parts == 0


def test_oversized_attachment_is_skipped_with_a_defect() -> None:
    raw = samples.mail(attachments=[
        {"data": b"%PDF-1.4" + bytes(5000), "maintype": "application", "subtype": "pdf",
         "filename": "big.pdf"},
        samples.pdf_attachment("small.pdf"),
    ])
    parsed = parse_mail(raw, Limits(max_attachment_bytes=4000))
    assert [a.filename for a in parsed.attachments] == ["small.pdf"]
    assert parsed.attachments[0].index == 0
    assert parsed.skipped_parts == 1
    assert parsed.defects == [
        "part 1.2: attachment 'big.pdf' is 5008 bytes, more than 4000: skipped"]
