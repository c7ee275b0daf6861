"""The voicemail path end to end, every service its own process: a PBX on loopback relays a
voicemail (8 kHz µ-law WAV of a spoken sentence) over SMTP; the outbound relay (a real SMTP
server started by the test) receives the mail enhanced with its transcript, the WAV intact,
exactly once; one trace runs from SMTP DATA through the transcriber and the mailer."""

from __future__ import annotations

import asyncio
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from email.utils import make_msgid
from pathlib import Path
from typing import Any

from e2e_stack import OtlpReceiver, Stack, stream_count, wait_until

from postroom_speech.wer import normalise
from postroom_testing.smtp import Sink

REPO = Path(__file__).resolve().parents[2]
CLIP = REPO / "libs/speech/tests/fixtures/voicemail/test_ulaw.wav"
# what the clip says: "Hello, this is Robert from Contoso. Please call me back about the
# invoice before Friday."
KEY_WORDS = {"robert", "invoice", "friday"}


def voicemail(to: str, wav: bytes) -> EmailMessage:
    """A voicemail notification as an Avaya PBX sends it (text and HTML, the WAV attached)."""
    msg = EmailMessage()
    msg["From"] = "IP Office Voicemail <voicemail@acme.example>"
    msg["To"] = to
    msg["Subject"] = "Voice Message from Robert Miller (5551234)"
    msg["Message-ID"] = make_msgid(domain="pbx.acme.example")
    msg["References"] = "<earlier@pbx.acme.example>"
    msg.set_content("You have a new voice message from Robert Miller (5551234) "
                    "in mailbox 201, length 00:00:06.\n")
    msg.add_alternative("<p>You have a new voice message from <b>Robert Miller</b> (5551234) "
                        "in mailbox 201, length 00:00:06.</p>", subtype="html")
    msg.add_attachment(wav, maintype="audio", subtype="wav", filename="Msg0001.WAV")
    return msg


def count(stack: Stack, subject: str) -> int:
    return asyncio.run(stream_count(stack.nats.url, subject))


def parse(data: bytes) -> Any:
    return BytesParser(policy=policy.default).parsebytes(data)


def test_pbx_voicemail_reaches_the_relay_enhanced_once(start_stack, relay: Sink) -> None:
    stack = start_stack(MAILER_RELAY_URL=relay.url)
    wav = CLIP.read_bytes()
    direct = voicemail("alice@acme.example", wav)
    plus = voicemail("voicemail+acme@intake.example.com", wav)
    assert stack.send(direct)[0] == 250
    assert stack.send(plus)[0] == 250

    received = wait_until(lambda: (got := relay.snapshot()) and len(got) >= 2 and got,
                          timeout=120)
    by_rcpt = {tuple(r.rcpt_tos): (r.mail_from, r.data) for r in received}
    # the PBX's own addressing is kept; the voicemail address forwards to the tenant's list
    assert set(by_rcpt) == {("alice@acme.example",), ("frontdesk@acme.example",)}
    for (rcpt,), (mail_from, data) in by_rcpt.items():
        assert mail_from == "voicemail@acme.example"  # the PBX's envelope sender, kept
        mail = parse(data)
        assert mail["Subject"].startswith("[Voicemail"), mail["Subject"]
        assert "Voice Message from Robert Miller" in mail["Subject"]
        assert "<earlier@pbx.acme.example>" in mail["References"]
        text = mail.get_body(preferencelist=("plain",)).get_content()
        html = mail.get_body(preferencelist=("html",)).get_content()
        heard = set(normalise(text).split())
        assert KEY_WORDS <= heard, text
        assert KEY_WORDS <= set(normalise(html).split()), html
        assert html.lower().index("invoice") < html.index("You have a new voice message")
        # the transcript comes before the PBX's own text
        assert text.lower().index("invoice") < text.index("You have a new voice message")
        attachments = [part for part in mail.iter_attachments()
                       if part.get_content_type() == "audio/wav"]
        assert [a.get_filename() for a in attachments] == ["Msg0001.WAV"]
        assert attachments[0].get_content() == wav, f"WAV to {rcpt} changed"

    # one delivery each: the events say so, and nothing more arrives at the relay
    wait_until(lambda: count(stack, "postroom.delivery.sent.acme") == 2, timeout=120)
    assert count(stack, "postroom.voicemail.transcribed.acme") == 2
    assert count(stack, "postroom.delivery.requested.acme") == 2
    assert count(stack, "postroom.delivery.failed.acme") == 0
    assert len(relay.snapshot()) == 2


def test_one_trace_from_smtp_data_through_transcriber_and_mailer(
    start_stack, relay: Sink, otlp: OtlpReceiver
) -> None:
    stack = start_stack(MAILER_RELAY_URL=relay.url, OTEL_EXPORTER_OTLP_ENDPOINT=otlp.endpoint,
                        OTEL_BSP_SCHEDULE_DELAY="100")
    assert stack.send(voicemail("alice@acme.example", CLIP.read_bytes()))[0] == 250
    wait_until(lambda: len(relay.snapshot()) == 1, timeout=120)

    def trace() -> set[str] | None:
        spans = otlp.snapshot()
        data = [s for s in spans if s["service"] == "smtp-ingress" and "DATA" in s["name"]]
        if not data:
            return None
        trace_id = data[0]["trace_id"]
        services = {s["service"] for s in spans if s["trace_id"] == trace_id}
        wanted = {"smtp-ingress", "attachment-extractor", "transcriber", "mailer", "classifier"}
        return services if wanted <= services else None

    services = wait_until(trace, timeout=60)
    assert {"smtp-ingress", "attachment-extractor", "transcriber", "mailer",
            "classifier"} <= services
