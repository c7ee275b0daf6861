"""Pure rules of the transcriber: which attachments are recordings, what the PBX said about
the call, and the ids of what we publish. No I/O here, so every rule is testable on its own.

Call details come from the PBX's notification mail:

- Avaya IP Office (Voicemail Pro): subject ``Voicemail Message (Caller Name > Mailbox Name)
  From:01234567890``; body lines such as ``Duration: 00:00:23``;
- Avaya Aura Messaging: subject ``Voice Message from Caller Name (5551234)`` or ``Voice
  Message from 5551234``; body ``From: ...``, ``Mailbox: 2001``, ``Length: 0:23``,
  ``Received: Tue 01 Dec 2026 09:12``;
- any PBX writing the generic ``Voice message from NAME (NUMBER)`` or ``Caller: ...``,
  ``Caller ID: ...``, ``Extension: ...``, ``Duration: 23 seconds``, ``Date: ...``.

A field the mail does not give stays None.
"""

from __future__ import annotations

import re

from postroom_contracts import CallDetails, DocumentRef, MailParsed, derive_event_id
from postroom_speech.audio import looks_like_audio

_NUMBER = r"\+?[\d][\d\s().\-/]{1,30}\d|\d"
_IP_OFFICE = re.compile(
    r"voice\s*mail\s+message\s*\(\s*(?P<caller_name>[^>)]*?)\s*>\s*(?P<mailbox_name>[^)]*?)"
    r"\s*\)\s*(?:from\s*:?\s*(?P<caller_number>" + _NUMBER + r"))?", re.I)
_FROM_NAME_NUMBER = re.compile(
    r"voice\s*(?:mail)?\s*(?:message)?\s+from\s+(?P<caller_name>[^()<>\d+][^()<>]*?)\s*"
    r"[(<]\s*(?P<caller_number>" + _NUMBER + r")\s*[)>]", re.I)
_FROM_NUMBER = re.compile(
    r"voice\s*(?:mail)?\s*(?:message)?\s+from\s+(?P<caller_number>" + _NUMBER + r")\b", re.I)
_FROM_NAME = re.compile(
    r"voice\s*(?:mail)?\s*(?:message)?\s+from\s+(?P<caller_name>[A-Za-z][\w .'\-]{0,60}?)\s*$",
    re.I)
_LINE = re.compile(r"^\s*(?P<key>[A-Za-z][A-Za-z ]{1,30}?)\s*:\s*(?P<value>.+?)\s*$", re.M)
_NAME_NUMBER_VALUE = re.compile(
    r"^(?P<name>[^()<>\d+][^()<>]*?)\s*[(<]\s*(?P<number>" + _NUMBER + r")\s*[)>]$")

CALLER_KEYS = {"from", "caller", "caller id", "calling number", "calling party", "caller number",
               "message from", "call from"}
MAILBOX_KEYS = {"mailbox", "extension", "to mailbox", "called number", "called party", "to"}
DURATION_KEYS = {"duration", "length", "message length", "message duration"}
TIME_KEYS = {"received", "time", "date", "call time", "time of call", "received at", "sent"}


def is_recording(doc: DocumentRef) -> bool:
    """An attachment the transcriber decodes: declared or sniffed audio, or a ``.wav`` name."""
    return looks_like_audio(doc.content_type, doc.filename)


def recordings(event: MailParsed) -> list[DocumentRef]:
    return sorted((d for d in event.documents if is_recording(d)), key=lambda d: d.index)


def transcription_id(event: MailParsed, index: int) -> str:
    return derive_event_id(event.event_id, "voicemail.transcribed", str(index))


def delivery_id(event: MailParsed) -> str:
    """The mailer's idempotency key: derived from the mail.parsed event (a UUID, so it fits
    ``^[A-Za-z0-9._-]+$`` and 8-128 characters); a redelivered event asks for the same."""
    return "vm-" + derive_event_id(event.event_id, "delivery.requested")


def parse_duration(text: str) -> float | None:
    """``00:01:23``, ``1:23``, ``83 seconds``, ``1 min 23 sec``, ``1m23s`` → seconds."""
    text = text.strip().lower()
    m = re.fullmatch(r"(?:(\d+):)?(\d{1,2}):(\d{2})(?:\.\d+)?", text)
    if m:
        hours, minutes, seconds = int(m.group(1) or 0), int(m.group(2)), int(m.group(3))
        return float(hours * 3600 + minutes * 60 + seconds)
    total, found = 0.0, False
    for value, unit in re.findall(r"(\d+(?:\.\d+)?)\s*(h|hours?|m|mins?|minutes?|s|secs?|"
                                  r"seconds?)(?![a-z])", text):
        found = True
        factor = 3600 if unit.startswith("h") else 60 if unit.startswith("m") else 1
        total += float(value) * factor
    if found:
        return total
    m = re.fullmatch(r"(\d+(?:\.\d+)?)", text)
    return float(m.group(1)) if m else None


def _clean_number(value: str | None) -> str | None:
    if value is None:
        return None
    value = value.strip().rstrip(".,;")
    return value or None


def _clean_name(value: str | None) -> str | None:
    if value is None:
        return None
    value = value.strip().strip("\"'").strip()
    return value or None


def call_details(subject: str | None, body: str | None) -> CallDetails:
    """What the PBX's subject and body say about the call."""
    found: dict[str, object] = {}
    subject = (subject or "").strip()
    for pattern in (_IP_OFFICE, _FROM_NAME_NUMBER, _FROM_NUMBER, _FROM_NAME):
        m = pattern.search(subject)
        if m:
            groups = m.groupdict()
            if groups.get("caller_name"):
                found["caller_name"] = _clean_name(groups["caller_name"])
            if groups.get("caller_number"):
                found["caller_number"] = _clean_number(groups["caller_number"])
            if groups.get("mailbox_name"):
                found["mailbox_name"] = _clean_name(groups["mailbox_name"])
            break
    for m in _LINE.finditer((body or "")[:20_000]):
        key, value = m.group("key").strip().lower(), m.group("value").strip()
        if key in CALLER_KEYS and not ("caller_number" in found and "caller_name" in found):
            nn = _NAME_NUMBER_VALUE.match(value)
            if nn:
                found.setdefault("caller_name", _clean_name(nn.group("name")))
                found.setdefault("caller_number", _clean_number(nn.group("number")))
            elif re.fullmatch(_NUMBER, value):
                found.setdefault("caller_number", _clean_number(value))
            elif "@" not in value:
                found.setdefault("caller_name", _clean_name(value))
        elif key in MAILBOX_KEYS and "mailbox" not in found and "@" not in value:
            nn = _NAME_NUMBER_VALUE.match(value)
            if nn:
                found["mailbox"] = _clean_number(nn.group("number"))
                found.setdefault("mailbox_name", _clean_name(nn.group("name")))
            else:
                found["mailbox"] = value[:100]
        elif key in DURATION_KEYS and "duration_seconds" not in found:
            seconds = parse_duration(value)
            if seconds is not None:
                found["duration_seconds"] = seconds
        elif key in TIME_KEYS and "called_at" not in found:
            found["called_at"] = value[:100]
    return CallDetails(**{k: v for k, v in found.items() if v is not None})
