"""Sample mails and requests shared by the mailer's tests."""

from __future__ import annotations

import io
import math
import struct
import wave
from email.message import EmailMessage
from email.policy import SMTP
from typing import Any

from postroom_contracts import BlobRef, DeliveryRequested, derive_event_id


def wav_bytes(seconds: float = 0.5, rate: int = 8000) -> bytes:
    """A short 16-bit PCM tone (the bytes only have to survive the trip unchanged)."""
    frames = int(seconds * rate)
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(b"".join(
            struct.pack("<h", int(8000 * math.sin(2 * math.pi * 440 * i / rate)))
            for i in range(frames)))
    return out.getvalue()


def voicemail_mail(*, wavs: list[bytes] | None = None, with_body: bool = True,
                   html: bool = True) -> bytes:
    """A PBX voicemail notification: text (and HTML) body, WAV attachment(s), a thread."""
    msg = EmailMessage()
    msg["From"] = "Voicemail <pbx@acme.example>"
    msg["To"] = "alice@acme.example"
    msg["Subject"] = "Message from 5551234"
    msg["Date"] = "Mon, 30 Nov 2026 10:00:00 +0000"
    msg["Message-ID"] = "<vm-1@pbx.acme.example>"
    msg["In-Reply-To"] = "<thread-0@pbx.acme.example>"
    msg["References"] = "<thread-0@pbx.acme.example>"
    msg["DKIM-Signature"] = "v=1; a=rsa-sha256; d=acme.example; s=pbx; b=AAAA"
    if with_body:
        msg.set_content("You have a new voicemail from 5551234.\n")
        if html:
            msg.add_alternative("<html><body><p>You have a new voicemail.</p></body></html>",
                                subtype="html")
    for i, data in enumerate(wavs if wavs is not None else [wav_bytes()]):
        msg.add_attachment(data, maintype="audio", subtype="wav", filename=f"msg{i + 1}.wav")
    return msg.as_bytes(policy=SMTP)


def plain_mail(subject: str = "Invoice 42", body: str = "Hello.\r\n.\r\nLine after a dot\r\n"
               ) -> bytes:
    return (f"From: a@example.com\r\nTo: alice@acme.example\r\nSubject: {subject}\r\n"
            f"Message-ID: <fw-1@example.com>\r\nMIME-Version: 1.0\r\n"
            f"Content-Type: text/plain; charset=utf-8\r\n\r\n{body}").encode()


def transcript(index: int = 0, **fields: Any) -> dict[str, Any]:
    data = {"index": index, "filename": f"msg{index + 1}.wav", "status": "transcribed",
            "text": "Please call me back at three", "confidence": 0.91, "engine": "moonshine",
            "language": "en-US", "duration_seconds": 12.0, "error": None,
            "call": {"caller_name": "Bob Smith", "caller_number": "5551234"}}
    data.update(fields)
    return data


def request(delivery_id: str, *, kind: str = "forward", original: BlobRef | None = None,
            to: list[str] | None = None, tenant: str = "acme", **fields: Any
            ) -> DeliveryRequested:
    return DeliveryRequested(
        event_id=derive_event_id("test", delivery_id), tenant=tenant,
        mail_key=f"key-{delivery_id}"[:64], delivery_id=delivery_id, kind=kind,
        to=to or ["alice@acme.example"], original=original,
        original_envelope_from="pbx@acme.example", **fields)
