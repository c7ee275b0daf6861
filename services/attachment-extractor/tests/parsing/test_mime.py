"""The MIME walk: nesting, threading headers, and hostile structure (depth, part count,
huge headers, truncation, malformed input): never a crash, always bounded work."""

from __future__ import annotations

import base64
import time

import extractor_samples as samples
import pytest

from postroom_attachment_extractor.handlers import Limits, parse_mail


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


def test_threading_headers_are_read() -> None:
    raw = samples.mail(headers={"In-Reply-To": "<q-7@intake.example.com>",
                                "References": "<q-1@intake.example.com> <q-7@intake.example.com>"})
    parsed = parse_mail(raw)
    assert parsed.in_reply_to == "<q-7@intake.example.com>"
    assert parsed.references == ["<q-1@intake.example.com>", "<q-7@intake.example.com>"]


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
