"""classifier: mail.parsed in; mail.classified out.

Every mail is classified. First, outside any transaction (the runtime's prepare step): read
the raw mail's header block from the blob store (List-Unsubscribe, Precedence,
Auto-Submitted, Authentication-Results) and run the model in a worker thread. Then in the
consumer transaction: one ``classifications`` row and the mail.classified event through the
outbox. The model is the one shipped in postroom-classify (or CLASSIFIER_MODEL_PATH), loaded
at start; nothing is downloaded.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from dataclasses import dataclass
from datetime import UTC
from email.message import Message
from pathlib import Path
from typing import Any

from fastapi import FastAPI, HTTPException, Query
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from postroom_classify import LABELS, Classification, Classifier, load_default
from postroom_classify.features import parse_headers
from postroom_contracts import MailClassified, MailParsed
from postroom_runtime import Outbox, ServiceRuntime, load_settings
from postroom_runtime.store import utcnow

from . import store
from .config import ClassifierSettings
from .handlers import classification_id, features
from .spec import SERVICE

log = logging.getLogger(__name__)

MIGRATIONS = Path(__file__).parent / "migrations"
CONSUMER = SERVICE.durable_for(MailParsed)
MAX_PAGE = 500


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


@dataclass
class Prepared:
    result: Classification
    headers_read: bool


class ClassifierService:
    """The consumer's prepare step and its handler."""

    def __init__(self, runtime: ServiceRuntime, settings: ClassifierSettings,
                 model: Classifier, metrics: Metrics) -> None:
        self.runtime = runtime
        self.settings = settings
        self.model = model
        self.metrics = metrics
        self.processor_id = (settings.classifier_processor_id
                             or f"classifier-{socket.gethostname()}-{os.getpid()}")

    async def read_headers(self, event: MailParsed) -> Message | None:
        if not self.settings.classifier_read_headers or event.raw is None:
            return None
        blobs = self.runtime.blobs
        if blobs is None:
            raise RuntimeError("blob store not started")
        data = await blobs.get(event.raw)  # missing: raises, retried then dead-lettered
        return parse_headers(data)

    async def prepare(self, event: MailParsed) -> Prepared:
        headers = await self.read_headers(event)
        mail = features(event, headers)
        result = await asyncio.to_thread(self.model.classify, mail)
        return Prepared(result, headers is not None)

    async def handle(self, event: MailParsed, session: AsyncSession, outbox: Outbox,
                     prepared: Prepared) -> None:
        r = prepared.result
        at = utcnow()
        ms = round(r.seconds * 1000, 3)
        classified = MailClassified.caused_by(
            event, email_id=event.message_id, classification=r.label,
            confidence=round(r.confidence, 6), processed_at=at,
            processor_id=self.processor_id, processing_time_ms=ms, scores=r.scores,
            model_version=r.model_version, spam_score=None)
        assert classified.event_id == classification_id(event)
        await store.add(session, event_id=classified.event_id, tenant=event.tenant,
                        mail_key=event.mail_key, email_id=event.message_id, label=r.label,
                        confidence=classified.confidence, scores=r.scores,
                        model_version=r.model_version, processor_id=self.processor_id,
                        processing_time_ms=ms, spam_score=None, processed_at=at)
        await outbox.emit(classified)
        self.metrics.classifications.labels(r.label).inc()
        self.metrics.latency.observe(r.seconds)
        self.metrics.confidence.observe(r.confidence)
        log.info("mail classified", extra={
            "label": r.label, "confidence": round(r.confidence, 3),
            "processing_time_ms": ms, "headers_read": prepared.headers_read})


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
        """The loaded model's version and labels."""
        return {"model_version": service.model.version, "labels": list(LABELS)}

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
    metrics = Metrics(registry)
    service = ClassifierService(runtime, settings, model, metrics)

    async def check_model() -> None:
        if not service.model.classes:
            raise RuntimeError("model has no labels")

    runtime.checks["model"] = check_model
    runtime.consume(MailParsed, service.handle, durable=CONSUMER,
                    processed=store.processed_messages, outbox=store.outbox,
                    prepare=service.prepare)
    add_routes(runtime.http, runtime, service)
    return runtime
