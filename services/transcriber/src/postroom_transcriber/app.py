"""transcriber: mail.parsed in; voicemail.transcribed and delivery.requested out.

Only mails with a route (relayed by a tenant's PBX, or sent to its voicemail address) are
acted on; every other mail.parsed is acknowledged and left alone. For a routed mail, first
outside any transaction (the runtime's prepare step, kept alive by in_progress heartbeats):
fetch each recording from the blob store, decode it (µ-law, A-law, PCM, GSM 6.10, ADPCM),
transcribe it with the engine chain (Google behind a breaker then offline, or offline). Then
in the consumer transaction: one ``transcriptions`` row and one voicemail.transcribed per
recording, and one delivery.requested for the mail (kind 'voicemail' with the transcripts;
'forward' for a mail without recordings or not to be transcribed). An engine that fails for
good gives status 'failed', never a dead letter: the voicemail is forwarded all the same.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Query
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram
from sqlalchemy.ext.asyncio import AsyncSession

from postroom_contracts import (
    AudioFormat,
    CallDetails,
    DeliveryRequested,
    DocumentRef,
    MailParsed,
    VoicemailTranscribed,
    WordTiming,
)
from postroom_runtime import BlobStore, Outbox, ServiceRuntime, load_settings
from postroom_runtime.store import utcnow
from postroom_speech.audio import Audio, AudioError, decode
from postroom_speech.engines.chain import SpeechChain
from postroom_speech.factory import build_chain

from . import store
from .config import TranscriberSettings
from .handlers import call_details, delivery_id, recordings
from .spec import SERVICE

log = logging.getLogger(__name__)

MIGRATIONS = Path(__file__).parent / "migrations"
CONSUMER = SERVICE.durable_for(MailParsed)
MAX_PAGE = 500
BREAKER_STATES = {"closed": 0, "half-opened": 1, "opened": 2}


class Metrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.transcriptions = Counter(
            "postroom_transcriber_transcriptions",
            "Recordings handled, by status (transcribed, failed) and the engine that answered "
            "(or 'none')", ["status", "engine"], registry=registry)
        self.latency = Histogram(
            "postroom_transcriber_transcription_seconds",
            "Wall time to transcribe one recording (engines and fallback)", ["engine"],
            buckets=(0.25, 0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300), registry=registry)
        self.rtf = Histogram(
            "postroom_transcriber_real_time_factor",
            "Processing time over audio duration, per recording", ["engine"],
            buckets=(0.05, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1, 2, 5), registry=registry)
        self.engine_errors = Counter(
            "postroom_transcriber_engine_errors",
            "Engine calls that failed (error, timeout, open breaker), by engine",
            ["engine"], registry=registry)
        self.breaker = Gauge(
            "postroom_transcriber_breaker_state",
            "Circuit breaker of the cloud engine: 0 closed, 1 half-open, 2 open",
            ["engine"], registry=registry)
        self.deliveries = Counter(
            "postroom_transcriber_deliveries_requested",
            "delivery.requested events emitted, by kind", ["kind"], registry=registry)


@dataclass
class Recording:
    """One audio attachment, transcribed (or not) before the transaction."""

    doc: DocumentRef
    status: str
    text: str = ""
    confidence: float | None = None
    engine: str = "none"
    model: str | None = None
    fallback: bool = False
    duration: float = 0.0
    processing: float = 0.0
    audio: AudioFormat | None = None
    words: list[WordTiming] | None = None
    error: str | None = None


@dataclass
class Prepared:
    kind: str  # "skip" (not routed, or nowhere to forward), "forward", "voicemail"
    recordings: list[Recording] = field(default_factory=list)
    call: CallDetails = field(default_factory=CallDetails)
    language: str = "en-US"


class Transcriber:
    """The consumer's prepare step and its handler."""

    def __init__(self, runtime: ServiceRuntime, settings: TranscriberSettings,
                 chain: SpeechChain, metrics: Metrics) -> None:
        self.runtime = runtime
        self.settings = settings
        self.chain = chain
        self.metrics = metrics

    @property
    def blobs(self) -> BlobStore:
        if self.runtime.blobs is None:
            raise RuntimeError("blob store not started")
        return self.runtime.blobs

    async def prepare(self, event: MailParsed) -> Prepared:
        route = event.route
        if route is None:
            return Prepared("skip")
        if not route.forward_to:
            log.warning("routed mail with nowhere to forward to; nothing done",
                        extra={"mail_key": event.mail_key, "route_kind": route.kind})
            return Prepared("skip")
        audio_docs = recordings(event)
        if not route.transcribe or not audio_docs:
            return Prepared("forward")
        language = route.language or self.settings.transcribe_language
        call = call_details(event.subject, event.body_text)
        done = [await self.transcribe(doc, language) for doc in audio_docs]
        return Prepared("voicemail", done, call, language)

    async def transcribe(self, doc: DocumentRef, language: str) -> Recording:
        data = await self.blobs.get(doc.blob)  # missing or corrupt: raises, retried
        try:
            audio: Audio = await asyncio.to_thread(decode, data)
        except AudioError as exc:
            self.metrics.transcriptions.labels("failed", "none").inc()
            return Recording(doc, "failed", error=str(exc))
        fmt = AudioFormat(container=audio.container, encoding=audio.encoding,
                          sample_rate=audio.source_rate or audio.sample_rate,
                          channels=audio.channels)
        if audio.duration > self.settings.transcribe_max_audio_seconds:
            self.metrics.transcriptions.labels("failed", "none").inc()
            return Recording(doc, "failed", duration=audio.duration, audio=fmt,
                             error=f"recording of {audio.duration:.0f} s is longer than "
                             f"{self.settings.transcribe_max_audio_seconds:g} s")
        started = time.monotonic()
        outcome = await self.chain.transcribe(audio, language=language,
                                              words=self.settings.transcribe_words)
        processing = time.monotonic() - started
        for engine, _ in outcome.errors:
            self.metrics.engine_errors.labels(engine).inc()
        await self.update_breaker_gauge()
        t = outcome.transcript
        if t is None:
            self.metrics.transcriptions.labels("failed", "none").inc()
            log.warning("recording not transcribed", extra={
                "document_id": doc.document_id, "error": outcome.error})
            return Recording(doc, "failed", fallback=outcome.fallback,
                             duration=audio.duration, processing=processing, audio=fmt,
                             error=(outcome.error or "no engine answered")[:4000])
        self.metrics.transcriptions.labels("transcribed", t.engine).inc()
        self.metrics.latency.labels(t.engine).observe(processing)
        if audio.duration > 0:
            self.metrics.rtf.labels(t.engine).observe(processing / audio.duration)
        words = None
        if t.words is not None:
            words = [WordTiming(word=w.word, start_seconds=max(0.0, w.start_seconds),
                                end_seconds=max(0.0, w.end_seconds),
                                confidence=w.confidence) for w in t.words]
        confidence = None if t.confidence is None else min(1.0, max(0.0, t.confidence))
        log.info("recording transcribed", extra={
            "document_id": doc.document_id, "engine": t.engine, "fallback": outcome.fallback,
            "duration_seconds": round(audio.duration, 2),
            "processing_seconds": round(processing, 2)})
        return Recording(doc, "transcribed", text=t.text, confidence=confidence,
                         engine=t.engine, model=t.model, fallback=outcome.fallback,
                         duration=audio.duration, processing=processing, audio=fmt,
                         words=words)

    async def update_breaker_gauge(self) -> None:
        state = await self.chain.breaker_state()
        if state is not None:
            self.metrics.breaker.labels(self.chain.primary.name).set(
                BREAKER_STATES.get(state, 0))

    async def handle(self, event: MailParsed, session: AsyncSession, outbox: Outbox,
                     prepared: Prepared) -> None:
        if prepared.kind == "skip":
            return
        route = event.route
        assert route is not None
        common: dict[str, Any] = dict(
            delivery_id=delivery_id(event), to=list(route.forward_to), original=event.raw,
            original_envelope_from=event.envelope_from)
        if prepared.kind == "forward":
            await outbox.emit(DeliveryRequested.caused_by(event, kind="forward", **common))
            self.metrics.deliveries.labels("forward").inc()
            log.info("forward requested", extra={"recipients": len(route.forward_to)})
            return
        transcripts: list[dict[str, Any]] = []
        at = utcnow()
        default_engine = self.chain.primary.name
        for rec in prepared.recordings:
            vm = VoicemailTranscribed.caused_by(
                event, part=str(rec.doc.index), message_id=event.message_id,
                document_id=rec.doc.document_id, index=rec.doc.index,
                filename=rec.doc.filename, status=rec.status, text=rec.text,
                confidence=rec.confidence,
                engine=rec.engine if rec.engine != "none" else default_engine,
                model=rec.model, fallback=rec.fallback, language=prepared.language,
                duration_seconds=round(rec.duration, 3),
                processing_seconds=round(rec.processing, 3),
                real_time_factor=(round(rec.processing / rec.duration, 4)
                                  if rec.duration > 0 and rec.status == "transcribed"
                                  else None),
                audio=rec.audio, call=prepared.call, words=rec.words, error=rec.error)
            await store.add(session, event_id=vm.event_id, tenant=event.tenant,
                            mail_key=event.mail_key, index=rec.doc.index,
                            document_id=rec.doc.document_id, status=rec.status,
                            engine=vm.engine, language=prepared.language, text=rec.text,
                            confidence=rec.confidence, duration_seconds=rec.duration,
                            processing_seconds=rec.processing, error=rec.error,
                            call=prepared.call.model_dump(mode="json"), created_at=at)
            await outbox.emit(vm)
            transcripts.append(vm.model_dump(mode="json"))
        await outbox.emit(DeliveryRequested.caused_by(
            event, kind="voicemail", template="voicemail",
            template_data={"transcripts": transcripts,
                           "call": prepared.call.model_dump(mode="json")}, **common))
        self.metrics.deliveries.labels("voicemail").inc()
        log.info("voicemail delivery requested", extra={
            "recordings": len(transcripts), "recipients": len(route.forward_to)})


# --- HTTP API -------------------------------------------------------------------------------


def transcription_json(row: Any) -> dict[str, Any]:
    m = dict(row._mapping)
    created = store_utc(m["created_at"])
    m["created_at"] = created.isoformat() if created else None
    return m


def store_utc(value: Any) -> Any:
    from datetime import UTC

    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


def add_routes(app: FastAPI, runtime: ServiceRuntime, transcriber: Transcriber) -> None:
    @app.get("/engines")
    async def engines() -> dict[str, Any]:
        """The engines in the order they are tried, and the cloud engine's breaker."""
        await transcriber.update_breaker_gauge()
        chain = transcriber.chain
        return {"engines": [e.describe() for e in chain.engines],
                "breaker": await chain.breaker_state()}

    @app.get("/transcriptions")
    async def list_transcriptions(
        tenant: str | None = None,
        mail_key: str | None = None,
        limit: int = Query(100, ge=1, le=MAX_PAGE),
        offset: int = Query(0, ge=0),
    ) -> list[dict[str, Any]]:
        async with runtime.store.sessions() as session:
            rows = await store.list_transcriptions(session, tenant=tenant, mail_key=mail_key,
                                                   limit=limit, offset=offset)
        return [transcription_json(r) for r in rows]


def build_runtime(
    settings: TranscriberSettings | None = None,
    *,
    registry: CollectorRegistry = REGISTRY,
    configure_logging: bool = True,
    chain: SpeechChain | None = None,
) -> ServiceRuntime:
    """The service, ready for ``await runtime.start()`` (or ``postroom_runtime.run``)."""
    settings = settings or load_settings(TranscriberSettings)
    runtime = ServiceRuntime(settings, migrations=MIGRATIONS, registry=registry,
                             configure_logging=configure_logging)
    if settings.google_cloud_project:
        import os

        os.environ.setdefault("GOOGLE_CLOUD_PROJECT", settings.google_cloud_project)
    chain = chain or build_chain(
        settings.transcribe_engine, timeout=settings.transcribe_timeout_seconds,
        breaker_threshold=settings.breaker_failure_threshold,
        breaker_ttl=settings.breaker_reset_seconds,
        google_model=settings.google_speech_model,
        google_endpoint=settings.google_speech_endpoint,
        google_insecure=settings.google_speech_insecure,
        offline_segment_seconds=settings.offline_segment_seconds,
        offline_concurrency=settings.transcribe_concurrency,
        offline_segment_workers=settings.offline_segment_workers)
    metrics = Metrics(registry)
    transcriber = Transcriber(runtime, settings, chain, metrics)

    async def check_engines() -> None:
        for engine in chain.engines:
            if engine.describe().get("installed") is False:
                raise RuntimeError(f"{engine.name}: model not installed")
        await transcriber.update_breaker_gauge()

    runtime.checks["engines"] = check_engines
    runtime.consume(MailParsed, transcriber.handle, durable=CONSUMER,
                    processed=store.processed_messages, outbox=store.outbox,
                    prepare=transcriber.prepare)
    add_routes(runtime.http, runtime, transcriber)
    return runtime
