"""Composing: forward unchanged, voicemail enhanced, new mails, header injection refused."""

from __future__ import annotations

from email import policy
from email.parser import BytesParser
from pathlib import Path

import mailer_samples as samples
import pytest

from postroom_mailer.compose import (
    ComposeError,
    HeaderInjection,
    Templates,
    compose,
    message_id_for,
)

TEMPLATES = Templates()


def build(event, original=None, templates=TEMPLATES):
    return compose(event, original, templates=templates, message_id_domain="mailer.test",
                   default_from="postroom@mailer.test", default_envelope_from=None)


def parsed(data: bytes):
    return BytesParser(policy=policy.default).parsebytes(data)


def body(msg, kind: str) -> str:
    return msg.get_body((kind,)).get_content().replace("\r\n", "\n")


def attachments(msg) -> list[bytes]:
    return [p.get_content() for p in msg.iter_attachments()]


def test_forward_is_the_original_byte_for_byte():
    raw = samples.plain_mail()
    out = build(samples.request("fw-000001", kind="forward"), raw)
    assert out.message == raw
    assert out.message_id == "<fw-1@example.com>"
    assert out.envelope_from == "pbx@acme.example"


def test_voicemail_transcript_on_top_of_text_and_html():
    wav = samples.wav_bytes()
    raw = samples.voicemail_mail(wavs=[wav])
    event = samples.request("vm-000001", kind="voicemail", template="voicemail",
                            template_data={"transcripts": [samples.transcript(
                                text="Meet <b>me</b> & Bob at 3")]})
    out = build(event, raw)
    msg = parsed(out.message)
    text = body(msg, "plain")
    html = body(msg, "html")
    assert text.startswith("Transcript (confidence 91 %):\nMeet <b>me</b> & Bob at 3\n")
    assert text.rstrip().endswith("You have a new voicemail from 5551234.")
    body_start = html.index("<body>") + len("<body>")
    assert html[body_start:].lstrip().startswith('<div class="postroom-voicemail"')
    assert "Meet &lt;b&gt;me&lt;/b&gt; &amp; Bob at 3" in html
    assert "<b>me</b>" not in html
    assert msg["Subject"] == "[Voicemail from Bob Smith 5551234] Message from 5551234"
    assert "From: Bob Smith 5551234" in text and "Duration: 0:12" in text
    assert attachments(msg) == [wav]
    assert msg["In-Reply-To"] == "<thread-0@pbx.acme.example>"
    assert msg["References"] == "<thread-0@pbx.acme.example>"
    assert msg["Message-ID"] == message_id_for("vm-000001", "mailer.test") == out.message_id
    assert msg["DKIM-Signature"] is None


def test_voicemail_failed_transcript_and_several_recordings_in_order():
    wavs = [samples.wav_bytes(0.3), samples.wav_bytes(0.6)]
    raw = samples.voicemail_mail(wavs=wavs)
    event = samples.request("vm-000002", kind="voicemail", template_data={"transcripts": [
        samples.transcript(1, text="second one"),
        samples.transcript(0, status="failed", text="", confidence=None,
                           error="engine timed out"),
    ]})
    msg = parsed(build(event, raw).message)
    text = body(msg, "plain")
    first, second = text.index("Voicemail 1 of 2"), text.index("Voicemail 2 of 2")
    assert first < text.index("Transcription unavailable: engine timed out") < second
    assert second < text.index("second one")
    assert attachments(msg) == wavs


def test_voicemail_with_only_an_attachment_gets_text_and_html_bodies():
    wav = samples.wav_bytes()
    raw = samples.voicemail_mail(wavs=[wav], with_body=False)
    event = samples.request("vm-000003", kind="voicemail",
                            template_data={"transcripts": [samples.transcript(text="hi")]})
    msg = parsed(build(event, raw).message)
    assert "hi" in body(msg, "plain")
    assert "hi" in body(msg, "html")
    assert attachments(msg) == [wav]


def test_subject_marker_without_caller_and_not_twice():
    raw = samples.voicemail_mail()
    event = samples.request("vm-000004", kind="voicemail", template_data={"transcripts": [
        samples.transcript(call={})]})
    once = build(event, raw)
    assert parsed(once.message)["Subject"] == "[Voicemail] Message from 5551234"
    again = build(event, once.message)
    assert parsed(again.message)["Subject"] == "[Voicemail] Message from 5551234"


def test_tenant_template_overrides_the_packaged_one(tmp_path: Path):
    (tmp_path / "acme").mkdir()
    (tmp_path / "acme" / "voicemail.txt.j2").write_text(
        "ACME says: {{ transcripts[0].text }}\n")
    templates = Templates(tmp_path)
    raw = samples.voicemail_mail()
    data = {"transcripts": [samples.transcript(text="hello")]}
    acme = parsed(build(samples.request("vm-000005", kind="voicemail", template_data=data),
                        raw, templates).message)
    other = parsed(build(samples.request("vm-000006", kind="voicemail", tenant="other",
                                         template_data=data), raw, templates).message)
    assert body(acme, "plain").startswith("ACME says: hello\n")
    assert body(other, "plain").startswith("Transcript (confidence")


def test_reply_is_a_new_threaded_mail():
    event = samples.request(
        "re-000001", kind="reply", subject="Re: Invoice 42", from_address="desk@acme.example",
        body_text="Thanks, paid.", body_html="<p>Thanks, <b>paid</b>.</p>",
        in_reply_to="<fw-1@example.com>", references=["<fw-0@example.com>"],
        headers={"Auto-Submitted": "auto-replied"})
    out = build(event)
    msg = parsed(out.message)
    assert msg["Subject"] == "Re: Invoice 42" and msg["From"] == "desk@acme.example"
    assert msg["To"] == "alice@acme.example"
    assert msg["In-Reply-To"] == "<fw-1@example.com>"
    assert msg["References"] == "<fw-0@example.com> <fw-1@example.com>"
    assert msg["Auto-Submitted"] == "auto-replied"
    assert msg["Message-ID"] == "<re-000001@mailer.test>"
    assert body(msg, "plain") == "Thanks, paid.\n"
    assert "<b>paid</b>" in body(msg, "html")


@pytest.mark.parametrize("fields", [
    {"subject": "Hi\r\nBcc: victim@example.com"},
    {"subject": "Hi\nX: y"},
    {"headers": {"X-Note": "a\rb"}},
    {"from_address": "a@example.com\n"},
    {"in_reply_to": "<x@y>\r\n"},
    {"references": ["<a@b>", "<c@d>\nX: y"]},
])
def test_cr_or_lf_in_a_header_value_is_refused(fields):
    with pytest.raises(HeaderInjection):
        build(samples.request("re-000002", kind="reply", body_text="x", **fields))


def test_forward_without_original_cannot_be_composed():
    with pytest.raises(ComposeError):
        build(samples.request("fw-000002", kind="forward"))
