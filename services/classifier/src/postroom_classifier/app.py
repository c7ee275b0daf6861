"""classifier: mail.parsed in; mail.classified out; mail.label_corrected kept for training.

Every mail is classified. First, outside any transaction (the runtime's prepare step): read
the raw mail from the blob store, take its header block (List-Unsubscribe, Precedence,
Auto-Submitted, Authentication-Results), ask spamd about it when one is configured, and run
the model in a worker thread. Then in the consumer transaction: one ``classifications`` row
and the mail.classified event through the outbox.

The model is the newest version in the classifier's store (``models``, written by
``postroom classifier train`` or the service's own retraining), else CLASSIFIER_MODEL_PATH,
else the one shipped in postroom-classify; the store is asked again every
CLASSIFIER_MODEL_POLL_SECONDS and a newer version replaces the model in one assignment.
Nothing is downloaded.

A correction (mail.label_corrected) is stored with the model input of its raw mail, so
training later needs neither the blob store nor the bus.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import Message
from pathlib import Path
from typing import Any

from fastapi import FastAPI, HTTPException, Query
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from postroom_classify import LABELS, Classification, Classifier, load_default
from postroom_classify import registry as model_registry
from postroom_classify.features import MailFeatures, features_from_eml, parse_headers
from postroom_classify.model import retrain
from postroom_contracts import MailClassified, MailLabelCorrected, MailParsed
from postroom_runtime import BlobNotFound, Outbox, ServiceRuntime, cancel_and_wait, load_settings
from postroom_runtime.store import utcnow

from . import store
from .config import ClassifierSettings
from .handlers import Decision, classification_id, decide, features
from .spam import Spamd, SpamdAddress, SpamdUnavailable, SpamVerdict
from .spec import SERVICE

log = logging.getLogger(__name__)

MIGRATIONS = Path(__file__).parent / "migrations"
CONSUMER = SERVICE.durable_for(MailParsed)
CORRECTIONS_CONSUMER = SERVICE.durable_for(MailLabelCorrected)
MAX_PAGE = 500
# the repository's corpus, when the service runs from a checkout (the embedded stack)
CHECKOUT_CORPUS = Path(__file__).resolve().parents[2] / "corpus"


class Metrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.classifications = Counter(
            "postroom_classifier_classifications",
            "Mails classified, by label", ["label"], registry=registry)
        self.latency = Histogram(
            "postroom_classifier_classification_seconds",
            "Model time to classify one mail (features and prediction)",
            buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1),
            registry=registry)
        self.confidence = Histogram(
            "postroom_classifier_confidence", "Confidence of the chosen label",
            buckets=(0.2, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 1.0), registry=registry)
        self.spamd_checks = Counter(
            "postroom_classifier_spamd_checks",
            "spamd checks by result: ok, unreachable, timeout, error, too_large (not sent)",
            ["result"], registry=registry)
        self.spamd_latency = Histogram(
            "postroom_classifier_spamd_seconds", "Time of one answered spamd check",
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10), registry=registry)
        self.spam_by_spamd = Counter(
            "postroom_classifier_spam_by_spamd",
            "Mails labelled spam because spamd said so while the model chose another label",
            registry=registry)
        self.corrections = Counter(
            "postroom_classifier_corrections",
            "Corrections stored, by the corrected label", ["label"], registry=registry)
        self.corrections_without_input = Counter(
            "postroom_classifier_corrections_without_input",
            "Corrections stored without model input (no raw mail): not learnt from",
            registry=registry)
        self.model_info = Gauge(
            "postroom_classifier_model_info", "The model in use (value 1), by version",
            ["version", "source"], registry=registry)
        self.model_polls = Counter(
            "postroom_classifier_model_polls",
            "Looks into the store for a newer model version", registry=registry)
        self.model_swaps = Counter(
            "postroom_classifier_model_swaps",
            "Newer model versions taken from the store while running", registry=registry)
        self.retrains = Counter(
            "postroom_classifier_retrains",
            "Automatic retraining runs by result (ok, failed)", ["result"], registry=registry)


@dataclass
class Prepared:
    mail: MailFeatures
    result: Classification
    decision: Decision
    headers_read: bool
    spam: SpamVerdict | None
    spamd_error: str | None


class ModelHolder:
    """The model in use; replaced as a whole (one attribute assignment) when a newer version
    appears, so a classification uses one model from start to end."""

    def __init__(self, model: Classifier, source: str, metrics: Metrics) -> None:
        self.metrics = metrics
        self.model = model
        self.source = source
        self.seq: int | None = None  # the store's version number, when it came from there
        metrics.model_info.labels(model.version, source).set(1)

    def swap(self, model: Classifier, source: str, seq: int | None) -> None:
        self.metrics.model_info.labels(self.model.version, self.source).set(0)
        self.model, self.source, self.seq = model, source, seq
        self.metrics.model_info.labels(model.version, source).set(1)


class ClassifierService:
    """The consumers' prepare steps and handlers, and the model's life cycle."""

    def __init__(self, runtime: ServiceRuntime, settings: ClassifierSettings,
                 model: ModelHolder, metrics: Metrics) -> None:
        self.runtime = runtime
        self.settings = settings
        self.models = model
        self.metrics = metrics
        self.processor_id = (settings.classifier_processor_id
                             or f"classifier-{socket.gethostname()}-{os.getpid()}")
        self.spamd = (Spamd(SpamdAddress.parse(settings.classifier_spamd_url),
                            settings.classifier_spamd_timeout_seconds)
                      if settings.classifier_spamd_url else None)
        self.retraining = False
        self.unloadable: str | None = None  # a stored version that failed to load
        # the version this process trained and the newest correction it learnt from: a
        # correction stored while training ran is newer than that, though older than the
        # version's created_at, and must start the next retraining
        self.trained: tuple[str, datetime | None] | None = None

    @property
    def model(self) -> Classifier:
        return self.models.model

    async def read_raw(self, event: MailParsed) -> bytes | None:
        wanted = self.settings.classifier_read_headers or self.spamd is not None
        if not wanted or event.raw is None:
            return None
        blobs = self.runtime.blobs
        if blobs is None:
            raise RuntimeError("blob store not started")
        return await blobs.get(event.raw)  # missing: raises, retried then dead-lettered

    async def ask_spamd(self, event: MailParsed, raw: bytes | None
                        ) -> tuple[SpamVerdict | None, str | None]:
        """spamd's verdict, or None and why not. Never raises: spamd is optional."""
        if self.spamd is None or raw is None:
            return None, None
        if len(raw) > self.settings.classifier_spamd_max_bytes:
            self.metrics.spamd_checks.labels("too_large").inc()
            return None, "too_large"
        try:
            verdict = await self.spamd.check(raw)
        except SpamdUnavailable as exc:
            self.metrics.spamd_checks.labels(exc.reason).inc()
            log.warning("spamd check failed; classifying without it", extra={
                "mail_key": event.mail_key, "tenant": event.tenant, "reason": exc.reason,
                "error": str(exc), "spamd": str(self.spamd.address)})
            return None, exc.reason
        self.metrics.spamd_checks.labels("ok").inc()
        self.metrics.spamd_latency.observe(verdict.seconds)
        return verdict, None

    async def prepare(self, event: MailParsed) -> Prepared:
        raw = await self.read_raw(event)
        headers: Message | None = None
        if raw is not None and self.settings.classifier_read_headers:
            headers = parse_headers(raw)
        mail = features(event, headers)
        model = self.model  # one model for this mail, even if a newer one arrives meanwhile
        spam, result = await asyncio.gather(self.ask_spamd(event, raw),
                                            asyncio.to_thread(model.classify, mail))
        verdict, error = spam
        threshold = None
        if verdict is not None:
            threshold = (self.settings.classifier_spam_threshold
                         if self.settings.classifier_spam_threshold is not None
                         else verdict.required)
        decision = decide(result, verdict.score if verdict else None, threshold)
        return Prepared(mail, result, decision, headers is not None, verdict, error)

    async def handle(self, event: MailParsed, session: AsyncSession, outbox: Outbox,
                     prepared: Prepared) -> None:
        r, d = prepared.result, prepared.decision
        at = utcnow()
        ms = round(r.seconds * 1000, 3)
        spam_score = prepared.spam.score if prepared.spam is not None else None
        classified = MailClassified.caused_by(
            event, email_id=event.message_id, classification=d.label,
            confidence=round(d.confidence, 6), processed_at=at,
            processor_id=self.processor_id, processing_time_ms=ms, scores=d.scores,
            model_version=r.model_version, spam_score=spam_score)
        assert classified.event_id == classification_id(event)
        await store.add(session, event_id=classified.event_id, tenant=event.tenant,
                        mail_key=event.mail_key, email_id=event.message_id, label=d.label,
                        confidence=classified.confidence, scores=d.scores,
                        model_version=r.model_version, processor_id=self.processor_id,
                        processing_time_ms=ms, spam_score=spam_score, processed_at=at,
                        routed=prepared.mail.routed, attachments=prepared.mail.attachments)
        await outbox.emit(classified)
        self.metrics.classifications.labels(d.label).inc()
        self.metrics.latency.observe(r.seconds)
        self.metrics.confidence.observe(d.confidence)
        if d.spam_by_spamd:
            self.metrics.spam_by_spamd.inc()
        log.info("mail classified", extra={
            "label": d.label, "confidence": round(d.confidence, 3),
            "model_label": r.label, "spam_score": spam_score,
            "spamd_error": prepared.spamd_error, "model_version": r.model_version,
            "processing_time_ms": ms, "headers_read": prepared.headers_read})

    # --- corrections ---------------------------------------------------------------------

    async def prepare_correction(self, event: MailLabelCorrected) -> MailFeatures | None:
        """The model input of the corrected mail from its raw mail: subject, body, headers,
        DMARC verdict (the handler replaces the attachment types and the route by those the
        mail's classification saw, which came from mail.parsed). None: no raw mail, or it is
        gone from the blob store (expired) - the correction is kept without input."""
        if event.raw is None:
            return None
        blobs = self.runtime.blobs
        if blobs is None:
            raise RuntimeError("blob store not started")
        try:
            data = await blobs.get(event.raw)
        except BlobNotFound:
            return None  # other errors: raised, the message is retried
        return await asyncio.to_thread(features_from_eml, data)

    async def handle_correction(self, event: MailLabelCorrected, session: AsyncSession,
                                outbox: Outbox, mail: MailFeatures | None) -> None:
        if mail is not None:
            seen = await store.classified_input(session, event.tenant, event.mail_key)
            if seen is not None and seen.routed is not None:
                mail.routed = bool(seen.routed)
                mail.attachments = list(seen.attachments or [])
        stored = await store.save_correction(session, {
            "tenant": event.tenant, "mail_key": event.mail_key,
            "correction_id": event.correction_id, "email_id": event.email_id,
            "label": event.label, "previous_label": event.previous_label,
            "previous_model_version": event.previous_model_version,
            "corrected_by": event.corrected_by[:200],
            "features": mail.to_json() if mail is not None else None,
            "corrected_at": event.occurred_at, "recorded_at": utcnow()})
        if not stored:
            log.info("older correction ignored: a later one is stored", extra={
                "mail_key": event.mail_key, "correction_id": event.correction_id})
            return
        self.metrics.corrections.labels(event.label).inc()
        if mail is None:
            self.metrics.corrections_without_input.inc()
            log.warning("correction stored without model input: the raw mail is not in the "
                        "blob store, training cannot learn from it", extra={
                            "mail_key": event.mail_key, "correction_id": event.correction_id,
                            "raw": event.raw.key if event.raw else None})
        else:
            log.info("correction stored", extra={
                "mail_key": event.mail_key, "label": event.label,
                "previous_label": event.previous_label, "corrected_by": event.corrected_by})

    # --- model versions ------------------------------------------------------------------

    async def refresh_model(self) -> bool:
        """Take the newest version from the store if it is not the one in use."""
        async with self.runtime.store.sessions() as session:
            latest = await model_registry.latest_model(session)
            if latest is None or latest.version in (self.model.version, self.unloadable):
                return False
            if self.models.seq is not None and latest.seq <= self.models.seq:
                return False
            data = await model_registry.load_model(session, latest.version)
        try:
            model = await asyncio.to_thread(Classifier.from_bytes, data)
        except Exception:
            # e.g. pickled by another scikit-learn: keep the current model, say so once
            self.unloadable = latest.version
            log.exception("model version cannot be loaded; keeping %s", self.model.version,
                          extra={"model_version": latest.version})
            return False
        previous = self.model.version
        self.models.swap(model, "store", latest.seq)
        self.metrics.model_swaps.inc()
        log.info("model version in use", extra={
            "model_version": model.version, "previous_version": previous,
            "corrections": latest.corrections})
        return True

    async def poll_models(self) -> None:
        while True:
            await asyncio.sleep(self.settings.classifier_model_poll_seconds)
            try:
                await self.refresh_model()
                self.metrics.model_polls.inc()
            except Exception:
                log.exception("reading the newest model version failed; will try again")

    def corpus_dir(self) -> Path | None:
        if self.settings.classifier_corpus_dir:
            return Path(self.settings.classifier_corpus_dir)
        return CHECKOUT_CORPUS if (CHECKOUT_CORPUS / "train.jsonl").exists() else None

    async def corrections_pending(self) -> tuple[int, datetime | None]:
        """Corrections recorded after the newest model version, and when the last came."""
        c = model_registry.corrections
        async with self.runtime.store.sessions() as session:
            latest = await model_registry.latest_model(session)
            query = select(func.count(), func.max(c.c.recorded_at)).where(
                c.c.features.is_not(None))
            if latest is not None:
                since: datetime | None = latest.created_at
                if self.trained is not None and self.trained[0] == latest.version:
                    since = self.trained[1]
                if since is not None:
                    query = query.where(c.c.recorded_at > since)
            count, last = (await session.execute(query)).one()
        if last is not None and last.tzinfo is None:
            last = last.replace(tzinfo=UTC)
        return int(count), last

    async def retrain_once(self) -> str | None:
        """Train on the corpus plus every stored correction (in a worker process) and store
        the result as the next version; None when there is nothing to do."""
        corpus = self.corpus_dir()
        if corpus is None:
            return None
        async with self.runtime.store.sessions() as session:
            stored = await model_registry.load_corrections(session)
        trained, report, mails = await self.runtime.run_cpu(
            retrain, corpus / "train.jsonl", stored.corrections, corpus / "heldout.jsonl")
        version = await model_registry.record_model(
            self.runtime.store.engine, trained, training_mails=mails, metrics=report,
            trained_by=self.processor_id)
        self.trained = (version, stored.latest)
        log.info("model retrained", extra={
            "model_version": version, "corrections": trained.corrections,
            "seconds": round(trained.seconds, 1), "rounds": trained.rounds,
            "macro_f1": round(report["macro_f1"], 4) if report else None})
        await self.refresh_model()
        return version

    async def retrain_when_corrected(self) -> None:
        """Retrain once CLASSIFIER_RETRAIN_AFTER_CORRECTIONS corrections arrived since the
        newest version and none for CLASSIFIER_RETRAIN_DEBOUNCE_SECONDS."""
        every = self.settings.classifier_retrain_after_corrections
        debounce = self.settings.classifier_retrain_debounce_seconds
        interval = max(0.5, min(debounce / 2, 10.0))
        while True:
            await asyncio.sleep(interval)
            try:
                count, last = await self.corrections_pending()
                if count < every or last is None:
                    continue
                if (datetime.now(UTC) - last).total_seconds() < debounce:
                    continue
                self.retraining = True
                started = time.perf_counter()
                await self.retrain_once()
                self.metrics.retrains.labels("ok").inc()
                log.info("retraining took", extra={
                    "seconds": round(time.perf_counter() - started, 1)})
            except asyncio.CancelledError:
                raise
            except Exception:
                self.metrics.retrains.labels("failed").inc()
                log.exception("retraining failed; will try again")
                await asyncio.sleep(max(debounce, 30.0))
            finally:
                self.retraining = False


# --- HTTP API -------------------------------------------------------------------------------


def _utc(value: Any) -> Any:
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


def classification_json(row: Any) -> dict[str, Any]:
    m = dict(row._mapping)
    m["processed_at"] = _utc(m["processed_at"]).isoformat().replace("+00:00", "Z")
    return m


def add_routes(app: FastAPI, runtime: ServiceRuntime, service: ClassifierService) -> None:
    @app.get("/model")
    async def model() -> dict[str, Any]:
        """The model in use: version, where it came from (store, file, shipped), labels; and
        whether spamd is asked."""
        return {"model_version": service.model.version, "source": service.models.source,
                "labels": list(LABELS),
                "spamd": str(service.spamd.address) if service.spamd else None,
                "retraining": service.retraining}

    @app.get("/corrections")
    async def list_corrections(
        tenant: str | None = None,
        limit: int = Query(100, ge=1, le=MAX_PAGE),
        offset: int = Query(0, ge=0),
    ) -> list[dict[str, Any]]:
        """The latest correction of each mail (without the model input), newest first."""
        async with runtime.store.sessions() as session:
            rows = await store.list_corrections(session, tenant=tenant, limit=limit,
                                                offset=offset)
        out = []
        for row in rows:
            m = dict(row._mapping)
            for key in ("corrected_at", "recorded_at"):
                m[key] = _utc(m[key]).isoformat().replace("+00:00", "Z")
            out.append(m)
        return out

    @app.get("/models")
    async def list_models(limit: int = Query(20, ge=1, le=MAX_PAGE)) -> list[dict[str, Any]]:
        """Model versions in the store, newest first (without the model bytes)."""
        t = model_registry.models
        async with runtime.store.sessions() as session:
            rows = (await session.execute(
                select(*(c for c in t.c if c.name != "model"))
                .order_by(t.c.seq.desc()).limit(limit))).all()
        out = []
        for row in rows:
            m = dict(row._mapping)
            m["created_at"] = _utc(m["created_at"]).isoformat().replace("+00:00", "Z")
            out.append(m)
        return out

    @app.get("/classifications")
    async def list_classifications(
        tenant: str | None = None,
        mail_key: str | None = None,
        label: str | None = None,
        limit: int = Query(100, ge=1, le=MAX_PAGE),
        offset: int = Query(0, ge=0),
    ) -> list[dict[str, Any]]:
        async with runtime.store.sessions() as session:
            rows = await store.list_classifications(
                session, tenant=tenant, mail_key=mail_key, label=label, limit=limit,
                offset=offset)
        return [classification_json(r) for r in rows]

    @app.get("/results/{email_id:path}")
    async def result(email_id: str) -> dict[str, Any]:
        """The latest classification of a Message-ID, in the seed's shape."""
        t = store.classifications
        async with runtime.store.sessions() as session:
            row = (await session.execute(
                select(t).where(t.c.email_id == email_id)
                .order_by(t.c.processed_at.desc()).limit(1))).first()
        if row is None:
            raise HTTPException(404, "no classification for this email_id")
        m = classification_json(row)
        return {"email_id": m["email_id"], "classification": m["label"],
                "confidence": m["confidence"], "processed_at": m["processed_at"],
                "processor_id": m["processor_id"],
                "processing_time_ms": m["processing_time_ms"]}


def build_runtime(
    settings: ClassifierSettings | None = None,
    *,
    registry: CollectorRegistry = REGISTRY,
    configure_logging: bool = True,
    model: Classifier | None = None,
) -> ServiceRuntime:
    """The service, ready for ``await runtime.start()`` (or ``postroom_runtime.run``)."""
    settings = settings or load_settings(ClassifierSettings)
    runtime = ServiceRuntime(settings, migrations=MIGRATIONS, registry=registry,
                             configure_logging=configure_logging)
    if model is None:
        model = (Classifier.load(Path(settings.classifier_model_path))
                 if settings.classifier_model_path else load_default())
        source = "file" if settings.classifier_model_path else "shipped"
    else:
        source = "given"
    metrics = Metrics(registry)
    service = ClassifierService(runtime, settings, ModelHolder(model, source, metrics), metrics)

    async def check_model() -> None:
        if not service.model.classes:
            raise RuntimeError("model has no labels")

    runtime.checks["model"] = check_model  # spamd is optional: not a readiness check
    runtime.consume(MailParsed, service.handle, durable=CONSUMER,
                    processed=store.processed_messages, outbox=store.outbox,
                    prepare=service.prepare)
    runtime.consume(MailLabelCorrected, service.handle_correction,
                    durable=CORRECTIONS_CONSUMER, processed=store.processed_messages,
                    outbox=store.outbox, prepare=service.prepare_correction)
    tasks: list[asyncio.Task[None]] = []

    async def load_newest(_: ServiceRuntime) -> None:
        # before the consumers start: the first mail already gets the newest version
        try:
            await service.refresh_model()
        except Exception:
            log.exception("reading the newest model version failed; using %s",
                          service.model.version)

    async def start_tasks(_: ServiceRuntime) -> None:
        tasks.append(asyncio.create_task(service.poll_models(), name="model-poll"))
        if settings.classifier_retrain_after_corrections > 0:
            if service.corpus_dir() is None:
                log.warning("CLASSIFIER_RETRAIN_AFTER_CORRECTIONS is set but there is no "
                            "training corpus (CLASSIFIER_CORPUS_DIR): no automatic retraining")
            else:
                tasks.append(asyncio.create_task(service.retrain_when_corrected(),
                                                 name="retrain"))

    async def stop_tasks(_: ServiceRuntime) -> None:
        for task in tasks:
            await cancel_and_wait(task)

    runtime.on_start.append(load_newest)
    runtime.on_started.append(start_tasks)
    runtime.on_stop.append(stop_tasks)
    add_routes(runtime.http, runtime, service)
    return runtime
