"""Property tests: whatever bytes arrive, parsing ends, stays within its limits, and yields
events that serialise."""

from __future__ import annotations

import extractor_samples as samples
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from postroom_attachment_extractor.handlers import Limits, parse_mail
from postroom_attachment_extractor.parsing.filenames import safe_filename
from postroom_contracts import BlobRef, DocumentStored, MailParsed

LIMITS = Limits(max_parts=20, max_depth=4, max_attachment_bytes=20_000, body_text_limit=500,
                text_excerpt_chars=100)
RAW = BlobRef(bucket="b", key="sha256/" + "0" * 64, size=0, sha256="0" * 64)
EVENT = samples.received(RAW)

_tokens = st.sampled_from([
    b"\r\n", b"\n", b"--B\r\n", b"--B--\r\n", b"--C\r\n", b"Content-Type: multipart/mixed; "
    b"boundary=B\r\n", b"Content-Type: multipart/alternative; boundary=C\r\n",
    b"Content-Type: message/rfc822\r\n", b"Content-Type: text/html; charset=utf-8\r\n",
    b"Content-Type: application/pdf; name*=UTF-8''%2E%2E%2F%00x.pdf\r\n",
    b"Content-Disposition: attachment; filename=\"=?utf-8?b?Li4vZXRjL3Bhc3N3ZA==?=\"\r\n",
    b"Content-Disposition: inline\r\n", b"Content-Transfer-Encoding: base64\r\n",
    b"Content-Transfer-Encoding: quoted-printable\r\n", b"JVBERi0xLjQK", b"%PDF-1.4\r\n",
    b"PK\x03\x04", b"<p>hi</p>", b"a,b,c\r\n1,2,3\r\n", b"=?utf-8?q?=FF?=", b"\x00", b"\xff\xfe",
    b"From: x@y\r\n", b"References: <a@b> <c@d>\r\n", b"\t", b" ",
])


def _check(raw: bytes) -> None:
    parsed = parse_mail(raw, LIMITS)
    assert len(parsed.body_text) <= LIMITS.body_text_limit
    assert len(parsed.attachments) <= LIMITS.max_parts
    docs = []
    for att in parsed.attachments:
        assert att.filename and "/" not in att.filename and "\\" not in att.filename
        assert not any(ord(ch) < 0x20 for ch in att.filename)
        assert len(att.filename.encode()) <= 200 and att.size <= LIMITS.max_attachment_bytes
        doc = DocumentStored.caused_by(
            EVENT, part=str(att.index), document_id=f"d{att.index}", index=att.index,
            filename=att.filename, declared_content_type=att.declared_type,
            sniffed_content_type=att.sniffed_type, size=att.size, sha256=att.sha256, blob=RAW,
            supported=att.supported, metadata=att.metadata)
        docs.append(doc.model_dump_json())
    event = MailParsed.caused_by(
        EVENT, message_id="<m@x>", body_text=parsed.body_text, defects=parsed.defects,
        in_reply_to=parsed.in_reply_to, references=parsed.references,
        skipped_parts=parsed.skipped_parts)
    event.model_dump_json()  # no lone surrogates or other unencodable text


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_tokens | st.binary(max_size=40), max_size=60))
def test_mime_shaped_noise_never_crashes(chunks: list[bytes]) -> None:
    _check(b"".join(chunks))


@settings(max_examples=100, deadline=None)
@given(st.data())
def test_mutated_real_mail_never_crashes(data: st.DataObject) -> None:
    raw = bytearray(samples.mail(html="<p>x</p>", attachments=[
        samples.pdf_attachment(),
        {"data": samples.CSV_TEXT.encode(), "maintype": "text", "subtype": "csv",
         "filename": "a.csv"},
    ]))
    for _ in range(data.draw(st.integers(1, 20))):
        pos = data.draw(st.integers(0, len(raw) - 1))
        action = data.draw(st.sampled_from(["flip", "cut", "dup"]))
        if action == "flip":
            raw[pos] = data.draw(st.integers(0, 255))
        elif action == "cut":
            del raw[pos: pos + data.draw(st.integers(1, 200))]
        else:
            raw[pos:pos] = raw[pos: pos + data.draw(st.integers(1, 200))]
        if not raw:
            break
    _check(bytes(raw))


@given(st.text(max_size=300) | st.none())
def test_any_name_becomes_a_safe_filename(name: str | None) -> None:
    safe = safe_filename(name, 7, "application/pdf")
    assert safe and safe not in (".", "..") and not safe.startswith(".")
    assert "/" not in safe and "\\" not in safe and "\x00" not in safe
    assert len(safe.encode("utf-8")) <= 200
    assert safe == safe.strip()
