"""Attachment filenames: path parts, control characters, encodings, lengths."""

from __future__ import annotations

import pytest

from postroom_attachment_extractor.handlers import parse_mail
from postroom_attachment_extractor.parsing.filenames import safe_filename


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
