"""The mailer as a process on a real nats-server, sending to a real SMTP sink (aiosmtpd):
forward, voicemail and reply delivered once; refused headers; relay down and up; 550; 451."""

from __future__ import annotations

import base64
import time

import mailer_samples as samples
from mailer_harness import until_async

from postroom_contracts import DeliveryRequested
from postroom_runtime.deadletters import replay_dead_letter
from postroom_testing.procs import until
from postroom_testing.smtp import Sink


def body(msg, kind: str) -> str:
    return msg.get_body((kind,)).get_content().replace("\r\n", "\n")


async def test_forward_voicemail_and_reply_are_sent_once(start_mailer, sink: Sink):
    mailer = await start_mailer(sink.url)
    raw = samples.plain_mail()
    wav = samples.wav_bytes()
    voicemail = samples.voicemail_mail(wavs=[wav])
    forward = samples.request("fw-000001", kind="forward", original=await mailer.put(raw))
    enhanced = samples.request(
        "vm-000001", kind="voicemail", original=await mailer.put(voicemail),
        template="voicemail", template_data={"transcripts": [samples.transcript(
            text="Call <me> back")]})
    reply = samples.request("re-000001", kind="reply", subject="Re: Invoice 42",
                            from_address="desk@acme.example", body_text="Paid.",
                            in_reply_to="<fw-1@example.com>", to=["bob@example.com"])
    for event in (forward, enhanced, reply):
        await mailer.request(event)
    # the same request again, past JetStream's de-duplication (another Nats-Msg-Id)
    await mailer.request(forward, msg_id="again-1")
    for event in (forward, enhanced, reply):
        sent = await mailer.wait_event("delivery.sent", event.delivery_id)
        assert sent["attempts"] == 1 and sent["relay"] == f"127.0.0.1:{sink.port}"
        assert sent["smtp_response"].startswith("2.0.0 Ok") or "Ok" in sent["smtp_response"]
    await sink.wait_for(3)
    # the repeated request was handled (acked) without a second send
    await until(lambda: mailer.of("delivery.sent") and len(sink.received) == 3)
    rows = (await mailer.get("/outbox")).json()
    assert sorted(r["delivery_id"] for r in rows) == ["fw-000001", "re-000001", "vm-000001"]
    assert all(r["status"] == "sent" for r in rows)

    by_id = {r.message_id: r for r in sink.received}
    assert set(by_id) == {"<fw-1@example.com>", "<vm-000001@mailer.test>",
                          "<re-000001@mailer.test>"}
    assert by_id["<fw-1@example.com>"].data.rstrip(b"\r\n") == raw.rstrip(b"\r\n")
    assert by_id["<fw-1@example.com>"].mail_from == "pbx@acme.example"
    vm = by_id["<vm-000001@mailer.test>"].message
    assert body(vm, "plain").startswith("Transcript (confidence 91 %):\nCall <me> back\n")
    assert "Call &lt;me&gt; back" in body(vm, "html")
    assert vm["Subject"].startswith("[Voicemail from Bob Smith 5551234] ")
    assert [p.get_content() for p in vm.iter_attachments()] == [wav]
    assert vm["In-Reply-To"] == "<thread-0@pbx.acme.example>"
    assert vm["DKIM-Signature"] is None
    re_ = by_id["<re-000001@mailer.test>"]
    assert re_.rcpt_tos == ["bob@example.com"]
    assert re_.message["In-Reply-To"] == "<fw-1@example.com>"
    assert await mailer.metric("postroom_mailer_sends_total", 'outcome="sent"') == 3


async def test_cr_lf_in_a_header_is_refused_and_nothing_sent(start_mailer, sink: Sink):
    mailer = await start_mailer(sink.url)
    event = samples.request("re-000009", kind="reply", subject="Hi\r\nBcc: x@example.com",
                            body_text="x")
    await mailer.request(event)
    failed = await mailer.wait_event("delivery.failed", event.delivery_id)
    assert failed["permanent"] is True and "CR or LF" in failed["error"]
    letters = await until_async(mailer.dead_letters)
    assert len(letters) == 1 and "CR or LF" in letters[0].letter.error
    assert sink.handler.attempts == 0
    assert (await mailer.get("/outbox")).json() == []


async def test_relay_down_then_up_delivers_exactly_once(start_mailer):
    sink = Sink()  # its port is chosen, nothing listens on it yet
    mailer = await start_mailer(sink.url, MAILER_RETRY_SCHEDULE="0.5s,0.5s,0.5s,0.5s,0.5s,"
                                "0.5s,0.5s,0.5s,0.5s,0.5s,0.5s,0.5s,0.5s,0.5s,0.5s,0.5s")
    event = samples.request("fw-000002", kind="forward",
                            original=await mailer.put(samples.plain_mail()))
    await mailer.request(event)

    async def temp_failures() -> bool:
        return await mailer.metric("postroom_mailer_sends_total", 'outcome="temp_failed"') >= 2

    await until_async(temp_failures)
    relay = (await mailer.get("/health/relay")).json()
    assert relay["reachable"] is False
    sink.start()
    try:
        sent = await mailer.wait_event("delivery.sent", event.delivery_id)
        assert sent["attempts"] >= 3
        assert len(sink.received) == 1 and sink.handler.attempts == 1
        assert (await mailer.get("/health/relay")).json()["reachable"] is True
    finally:
        sink.stop()


async def test_550_fails_for_good_with_one_attempt_and_a_dead_letter(start_mailer,
                                                                     sink: Sink):
    sink.handler.default = "550 5.1.1 No such user"
    mailer = await start_mailer(sink.url)
    event = samples.request("fw-000003", kind="forward",
                            original=await mailer.put(samples.plain_mail()))
    await mailer.request(event)
    failed = await mailer.wait_event("delivery.failed", event.delivery_id)
    assert failed["permanent"] is True and failed["smtp_code"] == 550
    assert failed["attempts"] == 1
    letters = await until_async(mailer.dead_letters)
    letter = letters[0].letter
    assert letter.consumer == "mailer-delivery-requested"
    assert letter.original_subject == event.nats_subject
    replayed = DeliveryRequested.model_validate_json(base64.b64decode(letter.payload_b64))
    assert replayed.delivery_id == event.delivery_id
    assert sink.handler.attempts == 1  # no retry storm: the row is terminal
    row = (await mailer.get(f"/outbox/{event.delivery_id}")).json()
    assert row["status"] == "failed" and row["attempts"] == 1

    # a person fixes the cause and replays the dead letter: sent, once
    sink.handler.default = "250 2.0.0 Ok"
    await replay_dead_letter(mailer.js, letters[0].sequence)
    sent = await mailer.wait_event("delivery.sent", event.delivery_id)
    assert sent["attempts"] == 2
    assert sink.handler.attempts == 2 and len(sink.received) == 1


async def test_451_then_250_is_retried_on_the_schedule(start_mailer, sink: Sink):
    sink.handler.replies = ["451 4.3.0 Try again later"]
    mailer = await start_mailer(sink.url, MAILER_RETRY_SCHEDULE="2s,10s")
    event = samples.request("fw-000004", kind="forward",
                            original=await mailer.put(samples.plain_mail()))
    await mailer.request(event)
    await until(lambda: sink.handler.attempts >= 1, within=30)
    first = time.monotonic()
    sent = await mailer.wait_event("delivery.sent", event.delivery_id)
    waited = time.monotonic() - first
    assert sent["attempts"] == 2 and sink.handler.attempts == 2
    assert waited >= 1.5  # the schedule's first delay (2 s), not an immediate retry
    assert len(sink.received) == 1


async def test_temporary_failures_until_the_schedule_runs_out(start_mailer, sink: Sink):
    sink.handler.default = "421 4.7.0 Busy"
    mailer = await start_mailer(sink.url, MAILER_RETRY_SCHEDULE="0.2s,0.2s")
    event = samples.request("fw-000005", kind="forward",
                            original=await mailer.put(samples.plain_mail()))
    await mailer.request(event)
    failed = await mailer.wait_event("delivery.failed", event.delivery_id)
    assert failed["permanent"] is False and failed["attempts"] == 3
    assert sink.handler.attempts == 3
    letters = await until_async(mailer.dead_letters)
    assert letters[0].letter.deliveries == 3
    assert "gave up after 3 attempts" in letters[0].letter.error



async def test_some_recipients_refused_is_sent_with_the_refusals(start_mailer, sink: Sink):
    sink.handler.refuse_rcpt = {"gone@acme.example": "550 5.1.1 No such user"}
    mailer = await start_mailer(sink.url)
    event = samples.request("fw-000006", kind="forward",
                            original=await mailer.put(samples.plain_mail()),
                            to=["alice@acme.example", "gone@acme.example"])
    await mailer.request(event)
    sent = await mailer.wait_event("delivery.sent", event.delivery_id)
    assert sent["to"] == ["alice@acme.example"]
    assert sent["refused"] == {"gone@acme.example": "550 5.1.1 No such user"}
    assert sink.received[0].rcpt_tos == ["alice@acme.example"]


async def test_an_original_that_cannot_be_read_fails_for_good(start_mailer, sink: Sink):
    mailer = await start_mailer(sink.url, CONSUMER_MAX_DELIVER="2")
    missing = samples.request("fw-000007", kind="forward",
                              original=await mailer.put(b"x"))  # a real ref...
    gone = missing.original.model_copy(update={"key": "sha256/" + "0" * 64, "sha256": "0" * 64})
    event = missing.model_copy(update={"original": gone})  # ...to nothing
    await mailer.request(event)
    failed = await mailer.wait_event("delivery.failed", event.delivery_id)
    assert failed["permanent"] is True and failed["attempts"] == 0
    letters = await until_async(mailer.dead_letters)
    assert letters[0].letter.deliveries == 2
    assert sink.handler.attempts == 0
