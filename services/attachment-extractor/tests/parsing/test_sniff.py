"""Content types are sniffed from the bytes, never trusted from the headers."""

from __future__ import annotations

import codecs

import extractor_samples as samples
import pytest

from postroom_attachment_extractor.handlers import parse_mail
from postroom_attachment_extractor.parsing.mediatypes import CSV, DOCX, PDF, XLSX, ZIP
from postroom_attachment_extractor.parsing.sniff import sniff_content_type


def test_docx_and_plain_zip_are_not_taken_for_xlsx() -> None:
    docx = samples.zip_bytes({"[Content_Types].xml": b"<Types><Override ContentType="
                              b"'application/vnd.openxmlformats-officedocument.wordprocessingml"
                              b".document.main+xml'/></Types>",
                              "word/document.xml": b"<w:document/>"})
    fake = samples.zip_bytes({"xl.txt": b"not a workbook"})
    raw = samples.mail(attachments=[
        {"data": docx, "maintype": "application", "subtype": "octet-stream",
         "filename": "letter.docx"},
        {"data": fake, "maintype": "application", "subtype": XLSX.split("/")[1],
         "filename": "claims-to-be.xlsx"},
    ])
    docx_doc, fake_doc = parse_mail(raw).attachments
    assert docx_doc.sniffed_type == DOCX and not docx_doc.supported
    assert fake_doc.declared_type == XLSX
    assert fake_doc.sniffed_type == ZIP  # what it really is; supported as a ZIP
    assert fake_doc.metadata.sheets is None


def test_content_type_is_sniffed_not_trusted() -> None:
    exe = b"MZ\x90\x00\x03\x00\x00\x00\x04\x00\x00\x00\xff\xff" + bytes(200)
    raw = samples.mail(attachments=[
        {"data": exe, "maintype": "application", "subtype": "pdf", "filename": "invoice.pdf"},
    ])
    [doc] = parse_mail(raw).attachments
    assert doc.declared_type == "application/pdf"
    assert doc.sniffed_type != PDF and not doc.supported
    assert doc.metadata.pages is None


@pytest.mark.parametrize(
    ("data", "declared", "name", "expected"),
    [
        (samples.CSV_TEXT.encode(), "text/plain", "", CSV),  # structure alone
        (b"sku;qty\nA;1\nB;2\n", "application/octet-stream", "", CSV),
        (b"one column\nA\nB\n", "application/octet-stream", "export.CSV", CSV),  # by name
        (b"one column\nA\nB\n", "application/vnd.ms-excel", "", CSV),  # Outlook's label
        (codecs.BOM_UTF16_LE + "sku\tqty\nA\t1\nB\t2\n".encode("utf-16-le"), "text/plain", "",
         CSV),  # Excel "Unicode text"
        (b"Hello Bob,\nthanks for the call.\nRegards, Alice\n", "text/plain", "", "text/plain"),
        (samples.CSV_TEXT.encode(), "text/plain", "notes.txt", "text/plain"),
        (b"%PDF-1.7 but truncated", "text/plain", "", PDF),
        (samples.png_bytes(), "application/octet-stream", "", "image/png"),
        (bytes(range(256)) * 4, "application/octet-stream", "", "application/octet-stream"),
        (b"", "application/pdf", "x.pdf", None),
    ],
)


def test_sniffing(data: bytes, declared: str, name: str, expected: str | None) -> None:
    assert sniff_content_type(data, declared, name) == expected
