"""The transcriber as a process on a real nats-server: mail.parsed events in (their recordings
put in the blob store as the extractor puts them), voicemail.transcribed and
delivery.requested read back from the stream."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import nats
import pytest

from postroom_contracts import (
    EVENTS_STREAM,
    DeliveryRequested,
    DocumentRef,
    MailParsed,
    RouteDecision,
    VoicemailTranscribed,
    derive_event_id,
)
from postroom_runtime import NatsBlobStore, event_headers, provision_streams
from postroom_speech.wer import normalise
from postroom_testing.procs import free_port
from postroom_testing.speech import FakeSpeechServer
from postroom_transcriber.handlers import delivery_id

FIXTURES = Path(__file__).resolve().parents[3] / "libs/speech/tests/fixtures/voicemail"
PBX_SUBJECT = "Voicemail Message (Robert Miller > Alice Jones) From:01234567890"
PBX_BODY = "You have a new voice message.\nDuration: 00:00:06\nReceived: Tue 01 Dec 2026 09:12\n"


class Bus:
    def __init__(self, nc: Any) -> None:
        self.nc = nc
        self.js = nc.jetstream()
        self.blobs = NatsBlobStore(self.js, "postroom-blobs")

    async def parsed(self, *, route: RouteDecision | None, attachments: list[tuple[str, str,
                     bytes]], subject: str = PBX_SUBJECT) -> MailParsed:
        key = uuid.uuid4().hex[:16]
        raw = (f"From: pbx@acme.example\r\nTo: alice@acme.example\r\nSubject: {subject}\r\n"
               f"Message-ID: <{key}@pbx.acme.example>\r\n\r\n{PBX_BODY}").encode()
        docs = []
        for index, (filename, content_type, data) in enumerate(attachments):
            ref = await self.blobs.put(data, content_type=content_type)
            docs.append(DocumentRef(document_id=derive_event_id(key, "document", str(index)),
                                    index=index, filename=filename, content_type=content_type,
                                    size=len(data), sha256=ref.sha256, blob=ref))
        event = MailParsed(
            event_id=derive_event_id(key, "mail.parsed"), tenant="acme", mail_key=key,
            message_id=f"<{key}@pbx.acme.example>", subject=subject,
            header_from="pbx@acme.example", body_text=PBX_BODY,
            document_ids=[d.document_id for d in docs], documents=docs, route=route,
            raw=await self.blobs.put(raw, content_type="message/rfc822"))
        await self.js.publish(event.nats_subject, event.model_dump_json().encode(),
                              headers=event_headers(event))
        return event

    async def events(self, event_type: str) -> list[dict[str, Any]]:
        info = await self.js.stream_info(EVENTS_STREAM)
        out = []
        for seq in range(info.state.first_seq, info.state.last_seq + 1):
            try:
                msg = await self.js.get_msg(EVENTS_STREAM, seq)
            except nats.js.errors.NotFoundError:
                continue
            if msg.subject.startswith(f"postroom.{event_type}."):
                out.append(json.loads(msg.data))
        return out

    async def wait_for(self, event_type: str, mail_key: str, count: int = 1,
                       within: float = 180) -> list[dict[str, Any]]:
        deadline = asyncio.get_running_loop().time() + within
        while True:
            found = [e for e in await self.events(event_type) if e["mail_key"] == mail_key]
            if len(found) >= count:
                return found
            assert asyncio.get_running_loop().time() < deadline, \
                f"no {event_type} for {mail_key}"
            await asyncio.sleep(0.1)


@pytest.fixture
async def bus(nats_server: Any) -> AsyncIterator[Bus]:
    nc = await nats.connect(nats_server.url)
    await provision_streams(nc.jetstream())
    try:
        yield Bus(nc)
    finally:
        await nc.close()


def start_service(service_process: Any, nats_server: Any, tmp_path: Path, **env: str) -> Any:
    port = free_port()
    proc = service_process(
        ["postroom-transcriber"], name="transcriber",
        env={"NATS_URL": nats_server.url, "HTTP_PORT": str(port), "BLOB_BACKEND": "nats",
             "DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path}/transcriber.db",
             "CONSUMER_BACKOFF_BASE_SECONDS": "0.1", "LOG_LEVEL": "INFO", **env},
        ready_url=f"http://127.0.0.1:{port}/health/ready")
    proc.http = f"http://127.0.0.1:{port}"
    return proc


def route(language: str = "en-US", transcribe: bool = True,
          forward_to: tuple[str, ...] = ("alice@acme.example",)) -> RouteDecision:
    return RouteDecision(kind="pbx", pbx="office", matched_by="network", transcribe=transcribe,
                         language=language, forward_to=list(forward_to), forward_mode="original")


async def consumer_idle(bus: Bus) -> bool:
    info = await bus.js.consumer_info(EVENTS_STREAM, "transcriber-mail-parsed")
    return info.num_pending == 0 and info.num_ack_pending == 0


async def until(check: Any, what: str, within: float = 60) -> None:
    deadline = asyncio.get_running_loop().time() + within
    while not await check():
        assert asyncio.get_running_loop().time() < deadline, what
        await asyncio.sleep(0.1)


async def test_voicemail_forward_and_ignored_mails_offline(
        bus: Bus, service_process: Any, nats_server: Any, tmp_path: Path) -> None:
    service = start_service(service_process, nats_server, tmp_path)
    await service.astart()
    wav = (FIXTURES / "test_ulaw.wav").read_bytes()

    voicemail = await bus.parsed(route=route(), attachments=[
        ("Message 0042.wav", "audio/x-wav", wav)])
    forward = await bus.parsed(route=route(), attachments=[
        ("notes.pdf", "application/pdf", b"%PDF-1.7 not audio")], subject="Fax from 0123")
    no_transcribe = await bus.parsed(route=route(transcribe=False), attachments=[
        ("msg.wav", "audio/wav", wav)])
    ordinary = await bus.parsed(route=None, attachments=[("msg.wav", "audio/wav", wav)])
    nowhere = await bus.parsed(route=route(forward_to=()), attachments=[
        ("msg.wav", "audio/wav", wav)])
    broken = await bus.parsed(route=route(), attachments=[
        ("broken.wav", "audio/wav", b"RIFF\x00\x00\x00\x00WAVEjunk"),
        ("Message 0043.wav", "audio/wav", wav)])

    [vm] = [VoicemailTranscribed.model_validate(e)
            for e in await bus.wait_for("voicemail.transcribed", voicemail.mail_key)]
    assert vm.status == "transcribed" and vm.engine == "moonshine" and not vm.fallback
    assert {"robert", "invoice", "friday"} <= set(normalise(vm.text).split()), vm.text
    assert vm.causation_id == voicemail.event_id
    assert vm.document_id == voicemail.documents[0].document_id and vm.index == 0
    assert vm.filename == "Message 0042.wav" and vm.language == "en-US"
    assert vm.audio is not None and vm.audio.encoding == "ULAW"
    assert vm.audio.sample_rate == 8000 and vm.audio.channels == 1
    assert 5.5 < vm.duration_seconds < 6.5 and vm.real_time_factor is not None
    assert vm.call.caller_name == "Robert Miller" and vm.call.caller_number == "01234567890"
    assert vm.call.mailbox_name == "Alice Jones" and vm.call.duration_seconds == 6
    assert vm.call.called_at == "Tue 01 Dec 2026 09:12"

    [dr] = [DeliveryRequested.model_validate(e)
            for e in await bus.wait_for("delivery.requested", voicemail.mail_key)]
    assert dr.kind == "voicemail" and dr.template == "voicemail"
    assert dr.to == ["alice@acme.example"] and dr.original == voicemail.raw
    assert dr.delivery_id == delivery_id(voicemail)
    assert dr.template_data["transcripts"] == [vm.model_dump(mode="json")]
    assert dr.template_data["call"]["caller_name"] == "Robert Miller"

    # an unreadable recording is 'failed'; the next one is still transcribed; one delivery
    first, second = sorted(await bus.wait_for("voicemail.transcribed", broken.mail_key, 2),
                           key=lambda e: e["index"])
    assert first["status"] == "failed" and "cannot decode audio" in first["error"]
    assert first["audio"] is None and second["status"] == "transcribed"
    [dr] = await bus.wait_for("delivery.requested", broken.mail_key)
    assert [t["status"] for t in dr["template_data"]["transcripts"]] == ["failed", "transcribed"]

    for mail in (forward, no_transcribe):
        [fw] = [DeliveryRequested.model_validate(e)
                for e in await bus.wait_for("delivery.requested", mail.mail_key)]
        assert fw.kind == "forward" and fw.original == mail.raw and fw.template is None
        assert fw.to == ["alice@acme.example"]

    await until(lambda: consumer_idle(bus), "the consumer still holds messages")
    for quiet in (ordinary, nowhere, forward, no_transcribe):
        assert [e for e in await bus.events("voicemail.transcribed")
                if e["mail_key"] == quiet.mail_key] == []
    for quiet in (ordinary, nowhere):
        assert [e for e in await bus.events("delivery.requested")
                if e["mail_key"] == quiet.mail_key] == []

    async with httpx.AsyncClient(base_url=service.http) as http:
        engines = (await http.get("/engines")).json()
        assert [e["engine"] for e in engines["engines"]] == ["moonshine"]
        assert engines["breaker"] is None
        rows = (await http.get("/transcriptions",
                               params={"mail_key": voicemail.mail_key})).json()
        assert [r["status"] for r in rows] == ["transcribed"] and rows[0]["text"] == vm.text
        metrics = (await http.get("/metrics")).text
    assert 'postroom_transcriber_transcriptions_total{engine="moonshine",status="transcribed"}' \
        ' 2.0' in metrics
    assert 'postroom_transcriber_transcriptions_total{engine="none",status="failed"} 1.0' \
        in metrics
    assert 'postroom_transcriber_deliveries_requested_total{kind="forward"} 2.0' in metrics
    assert "postroom_transcriber_real_time_factor_bucket" in metrics


async def test_google_down_falls_back_and_a_language_nobody_has_still_forwards(
        bus: Bus, service_process: Any, nats_server: Any, tmp_path: Path) -> None:
    fake = await FakeSpeechServer("hello from the fake").start()
    service = start_service(
        service_process, nats_server, tmp_path, TRANSCRIBE_ENGINE="google",
        GOOGLE_SPEECH_ENDPOINT=fake.endpoint, GOOGLE_SPEECH_INSECURE="true",
        BREAKER_FAILURE_THRESHOLD="1", BREAKER_RESET_SECONDS="3600",
        TRANSCRIBE_TIMEOUT_SECONDS="60")
    try:
        await service.astart()
        wav = (FIXTURES / "test_ulaw.wav").read_bytes()
        first = await bus.parsed(route=route(), attachments=[("a.wav", "audio/wav", wav)])
        [vm] = await bus.wait_for("voicemail.transcribed", first.mail_key)
        assert vm["engine"] == "google" and vm["text"] == "hello from the fake"
        assert not vm["fallback"] and vm["status"] == "transcribed"

        await fake.stop()  # Google goes away: the breaker opens, offline takes over
        second = await bus.parsed(route=route(), attachments=[("b.wav", "audio/wav", wav)])
        [vm] = await bus.wait_for("voicemail.transcribed", second.mail_key)
        assert vm["engine"] == "moonshine" and vm["fallback"] and vm["status"] == "transcribed"
        assert "invoice" in normalise(vm["text"]).split()
        [dr] = await bus.wait_for("delivery.requested", second.mail_key)
        assert dr["kind"] == "voicemail"

        # German: Google unreachable (breaker open), no offline German model: failed, and
        # the voicemail is still forwarded, with the error for the mail's note
        german = await bus.parsed(route=route(language="de-DE"), attachments=[
            ("c.wav", "audio/wav", wav)])
        [vm] = await bus.wait_for("voicemail.transcribed", german.mail_key)
        assert vm["status"] == "failed" and vm["text"] == "" and vm["fallback"]
        assert "circuit breaker open" in vm["error"]
        assert "no offline model for de-DE" in vm["error"]
        [dr] = await bus.wait_for("delivery.requested", german.mail_key)
        assert dr["kind"] == "voicemail"
        assert dr["template_data"]["transcripts"][0]["status"] == "failed"

        async with httpx.AsyncClient(base_url=service.http) as http:
            engines = (await http.get("/engines")).json()
            metrics = (await http.get("/metrics")).text
        assert engines["breaker"] == "opened"
        assert [e["engine"] for e in engines["engines"]] == ["google", "moonshine"]
        assert 'postroom_transcriber_breaker_state{engine="google"} 2.0' in metrics
        assert 'postroom_transcriber_engine_errors_total{engine="google"} 2.0' in metrics
    finally:
        await fake.stop()
