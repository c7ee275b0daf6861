from __future__ import annotations

import re

import pytest

from postroom_contracts import BlobRef, DocumentRef, MailParsed
from postroom_transcriber.handlers import (
    call_details,
    delivery_id,
    parse_duration,
    recordings,
)

SHA = "0" * 64


def doc(index: int, filename: str, content_type: str) -> DocumentRef:
    return DocumentRef(document_id=f"d{index}", index=index, filename=filename,
                       content_type=content_type, size=1, sha256=SHA,
                       blob=BlobRef(bucket="b", key=f"k{index}", size=1, sha256=SHA))


def test_ip_office_subject_and_body() -> None:
    call = call_details("Voicemail Message (John Smith > Alice Jones) From:01234567890",
                        "Duration: 00:01:05\nReceived: Tue 01 Dec 2026 09:12")
    assert call.caller_name == "John Smith" and call.caller_number == "01234567890"
    assert call.mailbox_name == "Alice Jones" and call.duration_seconds == 65
    assert call.called_at == "Tue 01 Dec 2026 09:12"


def test_aura_messaging_forms() -> None:
    call = call_details("Voice Message from Robert Miller (555-0142)",
                        "Mailbox: 2001\nLength: 0:23\n")
    assert (call.caller_name, call.caller_number, call.mailbox, call.duration_seconds) == (
        "Robert Miller", "555-0142", "2001", 23)
    assert call_details("Voice Message from 5550142", "").caller_number == "5550142"


def test_generic_body_lines() -> None:
    call = call_details("New voicemail",
                        "Caller: Jane Doe (+44 20 7946 0958)\nExtension: Sales (204)\n"
                        "Duration: 1 min 5 sec\nDate: 2026-12-01 09:12")
    assert call.caller_name == "Jane Doe" and call.caller_number == "+44 20 7946 0958"
    assert call.mailbox == "204" and call.mailbox_name == "Sales"
    assert call.duration_seconds == 65 and call.called_at == "2026-12-01 09:12"


def test_a_mail_that_says_nothing_gives_nothing() -> None:
    assert call_details(None, None).model_dump() == dict.fromkeys(
        ("caller_name", "caller_number", "mailbox", "mailbox_name", "duration_seconds",
         "called_at"))


@pytest.mark.parametrize(("text", "seconds"), [
    ("00:00:23", 23), ("1:05", 65), ("83 seconds", 83), ("1m23s", 83), ("12", 12),
    ("soon", None)])
def test_durations(text: str, seconds: float | None) -> None:
    assert parse_duration(text) == seconds


def test_recordings_are_audio_types_or_wav_names_in_order() -> None:
    event = MailParsed(event_id="e" * 8, tenant="acme", mail_key="k" * 16, message_id="<m>",
                       documents=[doc(2, "b.WAV", "application/octet-stream"),
                                  doc(0, "a.bin", "audio/x-wav"),
                                  doc(1, "x.pdf", "application/pdf")])
    assert [d.index for d in recordings(event)] == [0, 2]
    did = delivery_id(event)
    assert re.fullmatch(r"[A-Za-z0-9._-]{8,128}", did)
    assert did == delivery_id(event.model_copy())
