"""ai-responder: mail.received, mail.authenticated, mail.classified and reply.reviewed in;
reply.drafted, reply.skipped, reply.reviewed (its review API) and delivery.requested out.
The pipeline is in :mod:`.responder`; this module wires it to the runtime and serves the HTTP
API (replies with their audit trail, the review endpoint, the backend's state)."""

from __future__ import annotations

import asyncio
import hmac
import logging
import uuid
from datetime import UTC
from pathlib import Path
from typing import Any, Literal

from fastapi import FastAPI, Header, HTTPException, Query
from prometheus_client import REGISTRY, CollectorRegistry
from pydantic import BaseModel, Field
from sqlalchemy import select

from postroom_contracts import (
    EVENTS_STREAM,
    MailAuthenticated,
    MailClassified,
    MailReceived,
    ReplyReviewed,
    derive_event_id,
)
from postroom_runtime import Outbox, ServiceRuntime, TenantRegistry, cancel_and_wait, load_settings

from . import store
from .backends import (
    AiCoreBackend,
    Backend,
    GuardedBackend,
    LocalBackend,
    OpenAiBackend,
)
from .config import AiResponderSettings
from .metrics import Metrics
from .responder import Responder
from .spec import SERVICE

log = logging.getLogger(__name__)

MIGRATIONS = Path(__file__).parent / "migrations"
MAX_PAGE = 500
DELIVERY_SUBJECT = "postroom.delivery.requested."


def make_backend(settings: AiResponderSettings) -> Backend:
    if settings.ai_backend == "ai-core":
        assert settings.ai_api_url
        key = settings.ai_api_key.get_secret_value() if settings.ai_api_key else None
        return AiCoreBackend(settings.ai_api_url, key, settings.default_model,
                             path=settings.ai_api_path, health_path=settings.ai_api_health_path)
    if settings.ai_backend == "openai":
        assert settings.openai_base_url
        key = settings.openai_api_key.get_secret_value() if settings.openai_api_key else None
        return OpenAiBackend(settings.openai_base_url, key, settings.default_model)
    return LocalBackend(settings.local_model_path, threads=settings.local_model_threads,
                        context=settings.local_model_context)


class Review(BaseModel):
    decision: Literal["approved", "rejected"]
    reviewed_by: str = Field(default="api", min_length=1, max_length=200)
    body_text: str | None = Field(default=None, max_length=50_000)
    reason: str | None = Field(default=None, max_length=2000)


def _time(value: Any) -> Any:
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.isoformat().replace("+00:00", "Z")


def reply_json(row: Any) -> dict[str, Any]:
    m = dict(row._mapping)
    for key in ("queued_at", "drafted_at", "decided_at", "next_attempt_at"):
        m[key] = _time(m[key])
    for key in ("trace", "request"):
        m.pop(key, None)
    return m


def add_routes(app: FastAPI, runtime: ServiceRuntime, responder: Responder,
               settings: AiResponderSettings) -> None:
    def authorize(authorization: str | None) -> None:
        """Replies hold addresses and mail text: every /replies route wants the bearer
        REPLY_API_KEY, and is off without one (the console is the way in then)."""
        key = settings.reply_api_key.get_secret_value() if settings.reply_api_key else None
        if key is None:
            raise HTTPException(404, "the replies API is off (REPLY_API_KEY is not set)")
        given = (authorization or "").removeprefix("Bearer ").strip()
        if not hmac.compare_digest(given.encode(), key.encode()):
            raise HTTPException(401, "a valid bearer key is required")

    @app.get("/replies")
    async def list_replies(
        tenant: str | None = None, status: str | None = None, mail_key: str | None = None,
        limit: int = Query(100, ge=1, le=MAX_PAGE), offset: int = Query(0, ge=0),
        authorization: str | None = Header(default=None),
    ) -> list[dict[str, Any]]:
        """Replies, newest first: queued, pending, held, auto, approved, rejected, skipped."""
        authorize(authorization)
        r = store.replies
        query = select(r).order_by(r.c.queued_at.desc()).limit(limit).offset(offset)
        if tenant:
            query = query.where(r.c.tenant == tenant)
        if status:
            query = query.where(r.c.status == status)
        if mail_key:
            query = query.where(r.c.mail_key == mail_key)
        async with runtime.store.sessions() as session:
            rows = (await session.execute(query)).all()
        return [reply_json(row) for row in rows]

    @app.get("/replies/{reply_id}")
    async def get_reply(reply_id: str,
                        authorization: str | None = Header(default=None)) -> dict[str, Any]:
        """One reply with its audit trail (model, prompt version, sources, who decided, the
        delivery id)."""
        authorize(authorization)
        async with runtime.store.sessions() as session:
            row = await store.get_reply(session, reply_id)
            if row is None:
                raise HTTPException(404, "no such reply")
            trail = (await session.execute(
                select(store.audit).where(store.audit.c.reply_id == reply_id)
                .order_by(store.audit.c.id))).all()
        out = reply_json(row)
        out["audit"] = [{"at": _time(a.at), "action": a.action, "actor": a.actor,
                         "detail": a.detail} for a in trail]
        return out

    @app.post("/replies/{reply_id}/review", status_code=202)
    async def review(reply_id: str, body: Review,
                     authorization: str | None = Header(default=None)) -> dict[str, Any]:
        """Decide on a drafted reply (as the console does): publishes reply.reviewed; the
        decision is applied by the consumer, like any other. Bearer REPLY_API_KEY."""
        authorize(authorization)
        async with runtime.store.transaction() as session:
            row = await store.get_reply(session, reply_id)
            if row is None:
                raise HTTPException(404, "no such reply")
            if row.status not in ("pending", "held"):
                raise HTTPException(409, f"the reply is {row.status}")
            event = ReplyReviewed(
                event_id=derive_event_id(reply_id, ReplyReviewed.event_type,
                                         uuid.uuid4().hex),
                tenant=row.tenant, mail_key=row.mail_key, reply_id=reply_id,
                decision=body.decision, reviewed_by=body.reviewed_by,
                body_text=body.body_text, reason=body.reason)
            await Outbox(session, store.outbox).emit(event)
        runtime.relay_for(store.outbox).kick()
        return {"reply_id": reply_id, "event_id": event.event_id, "decision": body.decision}

    @app.get("/backend")
    async def backend() -> dict[str, Any]:
        """The AI backend in use, its model and its breaker."""
        inner = responder.backend.backend
        model = getattr(inner, "model_name", None) or getattr(inner, "model", None)
        return {"backend": responder.backend.name, "model": model,
                "breaker": await responder.backend.breaker_state(),
                "timeout_seconds": settings.processing_timeout}


def build_runtime(
    settings: AiResponderSettings | None = None,
    *,
    registry: CollectorRegistry = REGISTRY,
    configure_logging: bool = True,
    backend: Backend | None = None,
) -> ServiceRuntime:
    """The service, ready for ``await runtime.start()`` (or ``postroom_runtime.run``)."""
    settings = settings or load_settings(AiResponderSettings)
    runtime = ServiceRuntime(settings, migrations=MIGRATIONS, registry=registry,
                             configure_logging=configure_logging)
    guarded = GuardedBackend(backend or make_backend(settings),
                             timeout=settings.processing_timeout,
                             threshold=settings.ai_breaker_failure_threshold,
                             reset_seconds=settings.ai_breaker_reset_seconds)
    metrics = Metrics(registry)
    responder = Responder(runtime, settings, guarded, metrics)

    async def backend_state() -> dict[str, object]:
        """The AI backend, reported in /health/ready without deciding readiness: while it is
        down replies wait queued and the breaker spares it; a pod taken out of service for
        it would only stop the review API and stall a rollout until the backend is back."""
        try:
            await guarded.check()
        except Exception as exc:
            return {"state": "unavailable", "backend": guarded.name,
                    "error": f"{type(exc).__name__}: {exc}"[:300]}
        return {"state": "ok", "backend": guarded.name}

    async def mailer_state() -> dict[str, object]:
        """The mailer is reachable through NATS when a durable consumer of delivery.requested
        exists on the stream; a request published while it is down waits there (reported,
        not deciding readiness, for the same reason as the backend)."""
        for info in await runtime.js.consumers_info(EVENTS_STREAM):
            subject = info.config.filter_subject or ""
            if subject.startswith(DELIVERY_SUBJECT) or any(
                    s.startswith(DELIVERY_SUBJECT) for s in info.config.filter_subjects or ()):
                return {"state": "ok", "consumer": info.name}
        return {"state": "unavailable",
                "error": "no mailer consumes delivery.requested (requests wait in the stream)"}

    async def check_tenants() -> None:
        if responder.tenants is None or not responder.tenants.loaded.is_set():
            raise RuntimeError("tenant registry not loaded")

    runtime.details["ai_backend"] = backend_state
    runtime.details["mailer"] = mailer_state
    runtime.checks["tenants"] = check_tenants
    if guarded.name == "local":
        async def check_local_model() -> None:
            """The local model is part of this process: not loaded, it is not ready."""
            await guarded.backend.check()

        runtime.checks["local_model"] = check_local_model
    # every mail passes these two: a (no-op) prepare step lets their rows group-commit, one
    # transaction for all the messages that are ready instead of one each
    for event_type, handler in ((MailReceived, responder.on_received),
                                (MailAuthenticated, responder.on_authenticated)):
        runtime.consume(event_type, handler, durable=SERVICE.durable_for(event_type),
                        processed=store.processed_messages, outbox=store.outbox,
                        prepare=responder.nothing_to_prepare)
    runtime.consume(MailClassified, responder.on_classified,
                    durable=SERVICE.durable_for(MailClassified),
                    processed=store.processed_messages, outbox=store.outbox,
                    prepare=responder.prepare_classified)
    runtime.consume(ReplyReviewed, responder.on_reviewed,
                    durable=SERVICE.durable_for(ReplyReviewed),
                    processed=store.processed_messages, outbox=store.outbox)
    tasks: list[asyncio.Task[None]] = []

    async def start(_: ServiceRuntime) -> None:
        responder.tenants = TenantRegistry(runtime.js)
        await responder.tenants.start()
        try:
            await guarded.backend.start()
        except Exception:
            # the service runs; mail waits in the store and /health/ready says why
            log.exception("the AI backend could not be started")

    async def start_tasks(_: ServiceRuntime) -> None:
        tasks.append(asyncio.create_task(responder.run_drafter(), name="drafter"))

    async def stop(_: ServiceRuntime) -> None:
        for task in tasks:
            await cancel_and_wait(task)
        if responder.tenants is not None:
            await responder.tenants.stop()
        await guarded.backend.close()

    runtime.on_start.append(start)
    runtime.on_started.append(start_tasks)
    runtime.on_stop.append(stop)
    add_routes(runtime.http, runtime, responder, settings)
    runtime.responder = responder  # type: ignore[attr-defined]  # tests and benchmarks
    return runtime
