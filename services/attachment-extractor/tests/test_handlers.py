"""The pure extraction logic, with real files (reportlab PDFs, openpyxl workbooks) and
hostile mails."""

from __future__ import annotations

import base64
import codecs
import hashlib
import time

import extractor_samples as samples
import pytest

from postroom_attachment_extractor.handlers import (
    CSV,
    DOCX,
    PDF,
    XLSX,
    ZIP,
    Limits,
    html_to_text,
    parse_mail,
    safe_filename,
    sniff_content_type,
)

# --- the happy path -------------------------------------------------------------------------


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


def test_pdf_text_excerpt_is_bounded() -> None:
    raw = samples.mail(attachments=[samples.pdf_attachment("long.pdf", *(["x" * 80] * 30))])
    [pdf] = parse_mail(raw, Limits(text_excerpt_chars=100)).attachments
    assert pdf.metadata.pages == 30
    assert pdf.metadata.text_excerpt == "x" * 80 + "\n" + "x" * 19


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


def test_csv_metadata_reads_semicolons_quotes_and_windows_1252() -> None:
    data = "Artikel;Menge;Bemerkung\r\nMüsli;2;\"a;b\"\r\n\r\nÄpfel;3;\r\n".encode("cp1252")
    raw = samples.mail(attachments=[{"data": data, "maintype": "application",
                                     "subtype": "octet-stream", "filename": "bestellung.csv"}])
    [doc] = parse_mail(raw).attachments
    assert doc.sniffed_type == CSV
    assert doc.metadata.header == ["Artikel", "Menge", "Bemerkung"]
    assert doc.metadata.rows == 2  # the empty line is not a row


# --- what is an attachment ------------------------------------------------------------------


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


def test_nested_multiparts_and_attached_mails() -> None:
    inner = samples.mail(text="Original order text", message_id="<orig@supplier.example>",
                         attachments=[samples.pdf_attachment("inner.pdf", "Inner PO")])
    raw = (
        b"From: a@supplier.example\r\nTo: orders+acme@intake.example.com\r\n"
        b"Subject: Fwd: order\r\nMIME-Version: 1.0\r\n"
        b"Content-Type: multipart/mixed; boundary=outer\r\n\r\n"
        b"--outer\r\nContent-Type: multipart/related; boundary=rel\r\n\r\n"
        b"--rel\r\nContent-Type: multipart/alternative; boundary=alt\r\n\r\n"
        b"--alt\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nSee the forwarded mail.\r\n"
        b"--alt\r\nContent-Type: text/html; charset=utf-8\r\n\r\n<p>See the forwarded mail.</p>\r\n"
        b"--alt--\r\n"
        b"--rel\r\nContent-Type: image/png\r\nContent-ID: <sig>\r\n"
        b"Content-Transfer-Encoding: base64\r\n\r\n"
        + base64.encodebytes(samples.png_bytes()) +
        b"--rel--\r\n"
        b"--outer\r\nContent-Type: message/rfc822\r\n"
        b"Content-Disposition: attachment; filename=\"orig.eml\"\r\n\r\n" + inner + b"\r\n"
        b"--outer\r\nContent-Type: text/csv; name=\"lines.csv\"\r\n\r\n"
        + samples.CSV_TEXT.encode() + b"\r\n"
        b"--outer--\r\n"
    )
    parsed = parse_mail(raw)
    assert parsed.body_text == "See the forwarded mail."  # not the attached mail's text
    assert parsed.has_html
    assert [(a.filename, a.part) for a in parsed.attachments] == [
        ("inner.pdf", "1.2.1.2"), ("lines.csv", "1.3")]
    assert parsed.attachments[0].metadata.text_excerpt == "Inner PO"
    assert parsed.skipped_parts == 1  # the inline signature image
    assert parsed.defects == []


def test_html_only_mail_gives_text_without_markup() -> None:
    html = ("<html><head><style>p {color: red}</style><script>alert('x')</script></head>"
            "<body><h1>Order&nbsp;42</h1><p>Qty: 3 &amp; more</p><table><tr><td>A</td>"
            "<td>B</td></tr></table></body></html>")
    parsed = parse_mail(samples.mail(text=None, html=html))
    assert parsed.has_html
    assert parsed.body_text == "Order 42\n\nQty: 3 & more\n\nA B"  # nbsp is a space
    assert "alert" not in parsed.body_text and "color" not in parsed.body_text


def test_body_text_is_bounded_and_flagged() -> None:
    parsed = parse_mail(samples.mail(text="x" * 500), Limits(body_text_limit=100))
    assert parsed.body_text == "x" * 100 and parsed.body_text_truncated
    short = parse_mail(samples.mail(text="x" * 100), Limits(body_text_limit=100))
    assert short.body_text == "x" * 100 and not short.body_text_truncated
    html = parse_mail(samples.mail(text=None, html="<p>" + "y" * 5000 + "</p>"),
                      Limits(body_text_limit=50))
    assert html.body_text == "y" * 50 and html.body_text_truncated


def test_threading_headers_are_read() -> None:
    raw = samples.mail(headers={"In-Reply-To": "<q-7@intake.example.com>",
                                "References": "<q-1@intake.example.com> <q-7@intake.example.com>"})
    parsed = parse_mail(raw)
    assert parsed.in_reply_to == "<q-7@intake.example.com>"
    assert parsed.references == ["<q-1@intake.example.com>", "<q-7@intake.example.com>"]


def test_html_to_text_survives_broken_markup() -> None:
    assert html_to_text("<p>unclosed <b>bold <i>and</p> <<<>>> &bogus; text") == \
        "unclosed bold and\n<<<>>> &bogus; text"


# --- filenames ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "content_type", "expected"),
    [
        ("order.pdf", "application/pdf", "order.pdf"),
        ("../../etc/passwd", None, "passwd"),
        ("..\\..\\Windows\\System32\\evil.dll", None, "evil.dll"),
        ("C:\\Users\\bob\\PO 42.pdf", None, "PO 42.pdf"),
        ("inv\x00oice\r\n.pdf", None, "invoice.pdf"),
        ("report\u202efdp.exe", None, "reportfdp.exe"),  # no bidi override tricks
        ("a<b>c:d|e?f*g\"h.pdf", None, "a_b_c_d_e_f_g_h.pdf"),
        ("  spaced   out  .pdf  ", None, "spaced out .pdf"),
        (".htaccess", None, "attachment-3.htaccess"),
        ("..", "application/pdf", "attachment-3.pdf"),
        ("", "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
         "attachment-3.xlsx"),
        (None, "text/csv", "attachment-3.csv"),
        ("\x00\x01\x02", None, "attachment-3.bin"),
        ("/", "application/zip", "attachment-3.zip"),
        ("CON.txt", None, "_CON.txt"),
        ("=?UTF-8?B?QmVzdGVsbHVuZyDDvGJlci5wZGY=?=", None, "Bestellung über.pdf"),
        ("=?iso-8859-1?q?R=E9sum=E9.pdf?=", None, "Résumé.pdf"),
        ("=?x-unknown?q?abc?=.pdf", None, "=_x-unknown_q_abc_=.pdf"),
    ],
)
def test_safe_filename(raw: str | None, content_type: str | None, expected: str) -> None:
    assert safe_filename(raw, 3, content_type) == expected


def test_long_filenames_are_cut_keeping_the_extension() -> None:
    name = safe_filename("ü" * 300 + ".pdf", 0)
    assert name.endswith("ü.pdf") and len(name.encode()) <= 200
    assert safe_filename("x" * 500, 0) == "x" * 200


def test_hostile_filenames_in_real_headers() -> None:
    raw = (
        b"From: a@example.com\r\nSubject: names\r\nMIME-Version: 1.0\r\n"
        b"Content-Type: multipart/mixed; boundary=B\r\n\r\n"
        b"--B\r\nContent-Type: application/pdf\r\n"
        b"Content-Disposition: attachment; filename=\"../../../etc/cron.d/x\x00.pdf\"\r\n\r\n"
        b"%PDF-1.4\r\n"
        b"--B\r\nContent-Type: application/pdf\r\n"
        b"Content-Disposition: attachment; filename*=UTF-8''%E2%82%AC%20rates%2F..%2Fq.pdf\r\n\r\n"
        b"%PDF-1.4\r\n"
        b"--B\r\nContent-Type: application/pdf\r\n"
        b"Content-Disposition: attachment; "
        b"filename*0*=iso-8859-1''Gr%FC; filename*1=\"sse.pdf\"\r\n\r\n"
        b"%PDF-1.4\r\n"
        b"--B\r\nContent-Type: application/pdf; name=\"=?UTF-8?Q?Rechnung_M=C3=A4rz.pdf?=\"\r\n\r\n"
        b"%PDF-1.4\r\n"
        b"--B\r\nContent-Type: application/octet-stream\r\n"
        b"Content-Disposition: attachment; filename=\"Bestellnr \xc3\xa4.pdf\"\r\n\r\n"
        b"%PDF-1.4\r\n"
        b"--B\r\nContent-Type: application/pdf\r\n"
        b"Content-Disposition: attachment; filename=\"\"\r\n\r\n"
        b"%PDF-1.4\r\n"
        b"--B--\r\n"
    )
    names = [a.filename for a in parse_mail(raw).attachments]
    assert names == ["x.pdf", "q.pdf", "Grüsse.pdf", "Rechnung März.pdf", "Bestellnr ä.pdf",
                     "attachment-5.pdf"]


# --- hostile input: never crash, bounded work ----------------------------------------------


def _nested(depth: int, leaf: bytes) -> bytes:
    body = leaf
    for level in range(depth):
        b = f"b{level}".encode()
        body = (b"Content-Type: multipart/mixed; boundary=" + b + b"\r\n\r\n--" + b + b"\r\n"
                + body + b"\r\n--" + b + b"--\r\n")
    return b"From: a@example.com\r\nSubject: deep\r\nMIME-Version: 1.0\r\n" + body


PDF_LEAF = (b"Content-Type: application/pdf\r\n"
            b"Content-Disposition: attachment; filename=\"deep.pdf\"\r\n\r\n%PDF-1.4\r\n")


def test_depth_within_the_limit_is_followed() -> None:
    parsed = parse_mail(_nested(9, PDF_LEAF), Limits(max_depth=10))
    assert [a.filename for a in parsed.attachments] == ["deep.pdf"]
    assert parsed.defects == []


def test_depth_bomb_is_cut_off_with_a_defect() -> None:
    parsed = parse_mail(_nested(50, PDF_LEAF), Limits(max_depth=10))
    assert parsed.attachments == []
    assert parsed.skipped_parts == 1
    assert parsed.defects == ["part 1.1.1.1.1.1.1.1.1.1.1: nested deeper than 10 levels: skipped"]


def test_nesting_too_deep_for_the_parser_is_a_defect_not_a_crash() -> None:
    deep = _nested(3000, PDF_LEAF)
    # with the default part limit, parsing stops long before Python's recursion limit
    parsed = parse_mail(deep)
    assert parsed.attachments == []
    assert "part 1.1.1.1.1.1.1.1.1.1.1: nested deeper than 10 levels: skipped" in parsed.defects
    # with a generous part limit the stdlib parser itself gives up: only headers are read
    started = time.monotonic()
    parsed = parse_mail(deep, Limits(max_parts=100_000))
    assert time.monotonic() - started < 30
    assert parsed.attachments == []
    assert any("nested too deeply to parse" in d for d in parsed.defects)


def test_part_count_bomb_stops_at_the_limit() -> None:
    parts = b"".join(
        b"--B\r\nContent-Type: application/pdf\r\nContent-Disposition: attachment; "
        b"filename=\"p%d.pdf\"\r\n\r\n%%PDF-1.4\r\n" % i for i in range(5000)
    )
    raw = (b"From: a@example.com\r\nMIME-Version: 1.0\r\n"
           b"Content-Type: multipart/mixed; boundary=B\r\n\r\n" + parts + b"--B--\r\n")
    parsed = parse_mail(raw, Limits(max_parts=200))
    # the root container counts as a part: 199 leaves are looked at
    assert len(parsed.attachments) == 199
    assert parsed.attachments[-1].filename == "p198.pdf"
    assert parsed.defects == ["more than 200 MIME parts: the rest were skipped"]
    # parsing stopped soon after the limit instead of reading all 5000 parts
    assert 1 <= parsed.skipped_parts < 200


def test_a_part_bomb_costs_little_time() -> None:
    parts = b"--B\r\nContent-Type: text/plain\r\n\r\nx\r\n" * 300_000  # 10 MB
    raw = b"Content-Type: multipart/mixed; boundary=B\r\n\r\n" + parts + b"--B--\r\n"
    started = time.monotonic()
    parsed = parse_mail(raw)
    assert time.monotonic() - started < 5  # parsing every part took about a minute
    assert "more than 200 MIME parts: the rest were skipped" in parsed.defects


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


def test_broken_workbook_and_zip_give_metadata_errors() -> None:
    workbook = samples.xlsx_bytes([["a"]])
    raw = samples.mail(attachments=[
        {"data": workbook[: len(workbook) // 2], "maintype": "application",
         "subtype": "octet-stream", "filename": "cut.xlsx"},
        {"data": b"PK\x03\x04" + b"\x00" * 40, "maintype": "application", "subtype": "zip",
         "filename": "cut.zip"},
    ])
    cut_xlsx, cut_zip = parse_mail(raw).attachments
    # without its central directory nothing says it is a workbook: it is a (broken) ZIP
    assert cut_xlsx.sniffed_type == ZIP and cut_xlsx.metadata.error
    assert cut_zip.sniffed_type == ZIP and cut_zip.metadata.error
    assert cut_zip.metadata.error.startswith("unreadable ZIP")


def test_truncated_mail_keeps_what_is_there() -> None:
    raw = samples.mail(attachments=[samples.pdf_attachment("first.pdf"),
                                    samples.pdf_attachment("second.pdf")])
    cut = raw[: raw.index(b"second.pdf") + 200]
    parsed = parse_mail(cut)
    assert parsed.body_text == "Please find our order attached."
    assert parsed.attachments[0].filename == "first.pdf"
    assert parsed.attachments[0].metadata.pages == 1
    assert any("StartBoundaryNotFound" in d or "CloseBoundaryNotFound" in d
               for d in parsed.defects)


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"\x00\xff" * 1000,
        b"no headers at all, just text",
        b"Content-Type: multipart/mixed\r\n\r\nno boundary parameter\r\n",
        b"Content-Type: multipart/mixed; boundary=X\r\n\r\n--X\r\n--X\r\n--X--",
        b"Content-Type: text/plain; charset=x-klingon\r\n\r\nnuqneH \xff",
        b"Content-Type: application/pdf\r\nContent-Transfer-Encoding: base64\r\n\r\n!!!not=b64",
        b"Content-Type: message/rfc822\r\n\r\n",
        b"From: =?utf-8?b?broken\r\nTo: <<<@>>>\r\nContent-Type: ;;;\r\n\r\nx",
        b"Content-Disposition: attachment; filename*=bogus''%ZZ%\r\n\r\nx",
        b"Content-Type: text/plain\r\nContent-Transfer-Encoding: x-uuencode\r\n\r\n"
        b"begin 644 a\n!!!\n",
    ],
)
def test_malformed_mail_never_crashes(raw: bytes) -> None:
    parsed = parse_mail(raw)
    assert isinstance(parsed.body_text, str)
    assert all(isinstance(d, str) for d in parsed.defects)
    for att in parsed.attachments:
        assert att.filename and "/" not in att.filename and "\x00" not in att.filename


def test_defects_are_reported() -> None:
    parsed = parse_mail(b"Content-Type: multipart/mixed\r\n\r\nno boundary parameter\r\n")
    assert "message: NoBoundaryInMultipartDefect" in parsed.defects
    assert parsed.attachments == [] and parsed.skipped_parts == 1

    parsed = parse_mail(b"Content-Type: text/plain; charset=x-klingon\r\n\r\nnuqneH")
    assert parsed.body_text == "nuqneH"
    assert "part 1: unknown charset 'x-klingon'" in parsed.defects


def test_huge_headers_are_parsed_from_their_beginning_only() -> None:
    # the header registry needs ~10 GB for a Subject of 40,000 encoded words
    subject = b"Subject: " + b"=?utf-8?q?a?= " * 40_000 + b"\r\n"
    params = b"; ".join(b"p%d=x" % i for i in range(50_000))
    raw = (subject + b"MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=B\r\n\r\n"
           b"--B\r\nContent-Type: application/pdf; " + params + b"\r\n"
           b"Content-Disposition: attachment; filename=\"po.pdf\"\r\n\r\n%PDF-1.4\r\n--B--\r\n")
    started = time.monotonic()
    parsed = parse_mail(raw)
    assert time.monotonic() - started < 5
    assert [a.filename for a in parsed.attachments] == ["po.pdf"]
    assert parsed.attachments[0].declared_type == "application/pdf"
    assert "message: header Subject is 560000 characters long: only the first 8192 were read" \
        in parsed.defects
    assert any(d.startswith("part 1.1: header Content-Type is") for d in parsed.defects)


def test_long_reference_chains_keep_the_root_and_the_latest() -> None:
    ids = [f"<m{i}@example.com>" for i in range(300)]
    raw = (b"References: " + " ".join(ids).encode() + b"\r\n"
           b"In-Reply-To: Re: your note <m299@example.com> (Bob)\r\n\r\nhi")
    parsed = parse_mail(raw)
    assert parsed.references == [ids[0], *ids[-99:]]
    assert parsed.in_reply_to == "<m299@example.com>"
