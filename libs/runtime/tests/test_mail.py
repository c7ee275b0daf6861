"""postroom_runtime.mail: the headers and the event every intake source builds (smtp-ingress,
mailbox-sync)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from postroom_contracts import BlobRef, derive_event_id, mail_key
from postroom_runtime import mail

# --- decoded headers: the fast path for plain ASCII gives what the header class gives -------


def _decoded_by_header_class(value: str) -> str:
    try:
        text = str(mail._UNSTRUCTURED("subject", mail._unfold(value)))
    except Exception:
        text = mail._unfold(value)
    return mail.text(text).strip()


@settings(max_examples=2000, deadline=None)
@given(st.text(alphabet=st.sampled_from([*'ab "<>@.,;:()\\\t=?_\r\n', "\x00", "\x0b", "\x1f",
                                         "\x7f", "ü"]), max_size=30))
def test_decoded_header_fast_path_matches_the_header_class(value: str) -> None:
    assert mail._decoded({"subject": value}, "subject") == _decoded_by_header_class(value)


def test_decoded_header_still_decodes_encoded_words() -> None:
    raw = {"subject": "=?utf-8?q?Bestellung_M=C3=A4rz?=", "from": "Plain <a@b.example>"}
    assert mail._decoded(raw, "subject") == "Bestellung März"
    assert mail._decoded(raw, "from") == "Plain <a@b.example>"


def test_mailbox_envelope_from_prefers_return_path() -> None:
    raw = (b"Return-Path: <bounce@list.example>\r\nFrom: Ann <ann@example.com>\r\n"
           b"Message-ID: <1@example.com>\r\n\r\nbody\r\n")
    assert mail.mailbox_envelope_from(mail.read_headers(raw)) == "bounce@list.example"
    bounce = raw.replace(b"<bounce@list.example>", b"<>")
    assert mail.mailbox_envelope_from(mail.read_headers(bounce)) == ""
    plain = b"From: Ann <ann@example.com>\r\n\r\nbody\r\n"
    assert mail.mailbox_envelope_from(mail.read_headers(plain)) == "ann@example.com"


def test_header_section_of_a_mail_with_lf_line_endings() -> None:
    raw = b"Subject: hi\nMessage-ID: <lf@example.com>\n\nbody\n"
    assert mail.header_section(raw) == b"Subject: hi\nMessage-ID: <lf@example.com>\n\n"
    assert mail.read_headers(raw).message_id == "<lf@example.com>"


def test_received_event_key_and_id_follow_tenant_message_id_and_content() -> None:
    raw = b"Message-ID: <k@example.com>\r\nSubject: s\r\n\r\nbody\r\n"
    headers = mail.read_headers(raw)
    ref = BlobRef(bucket="b", key="sha256/" + "0" * 64, size=len(raw), sha256="0" * 64)
    event = mail.received_event(
        tenant="acme", mailbox="support", actions=["reply"], recipients=["ai@acme.example"],
        headers=headers, content_sha256="c" * 64, envelope_from="", raw=ref, source="imap",
        tls=True,
    )
    assert event.mail_key == mail_key("acme", "<k@example.com>", "c" * 64)
    assert event.event_id == derive_event_id(event.mail_key, "mail.received")
    assert (event.source, event.tls, event.authenticated, event.smtp) == ("imap", True, False, None)
