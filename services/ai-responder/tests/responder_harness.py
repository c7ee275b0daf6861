"""Helpers of ai-responder's tests: a fake AI core and a fake OpenAI-compatible server
speaking HTTP on a free port, the bus as the other services use it (mail.received with its
raw mail in the blob store, mail.classified, reply.reviewed as the console publishes it) and
the service itself started in this process on a real nats-server."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.utils import make_msgid
from pathlib import Path
from typing import Any

import httpx
import nats
import uvicorn
from fastapi import FastAPI, Request, Response
from prometheus_client import CollectorRegistry
from sqlalchemy import select

from postroom_ai_responder import store
from postroom_ai_responder.app import build_runtime
from postroom_ai_responder.config import AiResponderSettings
from postroom_ai_responder.spec import SERVICE
from postroom_contracts import (
    EVENTS_STREAM,
    MailClassified,
    MailReceived,
    ReplyReviewed,
    Tenant,
    derive_event_id,
    mail_key,
)
from postroom_runtime import NatsBlobStore, ServiceRuntime, event_headers, seed_tenants
from postroom_testing import procs

REVIEW_KEY = "review-key"
DURABLES = [c.durable for c in SERVICE.consumes]
CLASSIFIED_DURABLE = SERVICE.durable_for(MailClassified)
GROUNDED = ("Our support team answers Monday to Friday, 8:00 to 18:00 CET, at "
            "+49 30 1234 5678.")
KNOWLEDGE = [
    {"id": "hours", "title": "Support hours", "text": GROUNDED},
    {"id": "returns", "title": "Returns",
     "text": "Goods can be returned within 30 days of delivery."},
]


def tenant(**policy: Any) -> Tenant:
    """acme with a `support` mailbox that replies; ``policy`` changes the reply policy."""
    reply = {"labels": ["support"], "mode": "draft", "knowledge": KNOWLEDGE,
             "assistant_name": "ACME Support",
             "disclaimer": {"en": "Drafted with an AI assistant."},
             "limits": {"sender": {"per_hour": 100, "burst": 50},
                        "thread": {"per_hour": 100, "burst": 50},
                        "tenant": {"per_hour": 1000, "burst": 100}}}
    reply.update(policy)
    return Tenant.model_validate({
        "slug": "acme", "name": "ACME GmbH", "domains": ["intake.example.com"],
        "mailboxes": {"support": {"actions": ["extract", "classify", "reply"],
                                  "reply": reply},
                      "orders": {"actions": ["extract"]}}})


class FakeHttp:
    """A FastAPI app served by uvicorn on 127.0.0.1 in this event loop, on a port the kernel
    gives it when it binds (none picked before and bound later, which another socket may
    have taken meanwhile)."""

    def __init__(self, app: FastAPI) -> None:
        self.port = 0
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0,
                                                    log_level="warning", lifespan="off"))
        self.task: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        self.task = asyncio.create_task(self.server.serve())

        def started() -> bool:
            if self.task is not None and self.task.done():
                self.task.result()  # it could not start: say why
            return bool(self.server.started)

        await procs.until(started, 60, what="fake server started")
        self.port = self.server.servers[0].sockets[0].getsockname()[1]

    async def stop(self) -> None:
        self.server.should_exit = True
        if self.task is not None:
            await asyncio.wait({self.task})  # a cancellation of the caller goes on


@dataclass
class FakeModel:
    """What the fake servers answer: ``answer(prompt)`` gives the text; ``down`` makes every
    call fail with HTTP 503; ``requests`` holds every request body."""

    answer: Callable[[str], str] = lambda prompt: GROUNDED
    down: bool = False
    requests: list[dict[str, Any]] = field(default_factory=list)


def fake_ai_core(model: FakeModel, key: str = "core-key") -> FakeHttp:
    """The AI core of seed 002: POST /generate, GET /health, bearer key."""
    app = FastAPI()

    @app.get("/health")
    async def health() -> Response:
        return Response(status_code=503 if model.down else 200)

    @app.post("/generate")
    async def generate(request: Request) -> Response:
        if request.headers.get("authorization") != f"Bearer {key}":
            return Response(status_code=401)
        body = await request.json()
        model.requests.append(body)
        if model.down:
            return Response(status_code=503)
        text = model.answer(body["prompt"])
        return Response(json.dumps({
            "response": text, "model": body["model"], "tokens_used": len(text.split()),
            "processing_time": 0.01,
            "suggested_subject": "Re: " + body["email_context"]["subject"]}),
            media_type="application/json")

    return FakeHttp(app)


def fake_openai(model: FakeModel) -> FakeHttp:
    """An OpenAI-compatible server: POST /v1/chat/completions, GET /v1/models."""
    app = FastAPI()

    @app.get("/v1/models")
    async def models() -> Response:
        if model.down:
            return Response(status_code=503)
        return Response(json.dumps({"data": [{"id": "fake-chat"}]}),
                        media_type="application/json")

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> Response:
        body = await request.json()
        model.requests.append(body)
        if model.down:
            return Response(status_code=503)
        prompt = "\n".join(m["content"] for m in body["messages"])
        text = model.answer(prompt)
        return Response(json.dumps({
            "id": "c1", "object": "chat.completion", "model": body["model"],
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": text}}],
            "usage": {"prompt_tokens": len(prompt.split()),
                      "completion_tokens": len(text.split()),
                      "total_tokens": len(prompt.split()) + len(text.split())}}),
            media_type="application/json")

    return FakeHttp(app)


def support_mail(*, subject: str = "When can I reach support?",
                 body: str = "Hello,\n\nwhen is your support team available?\n\nThanks,\nBob",
                 sender: str = "Bob Buyer <bob@customer.example>",
                 headers: dict[str, str] | None = None, message_id: str | None = None,
                 in_reply_to: str | None = None, references: str | None = None,
                 ) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = "support+acme@intake.example.com"
    msg["Subject"] = subject
    msg["Message-ID"] = message_id or make_msgid(domain="customer.example")
    if in_reply_to:
        msg["In-Reply-To"] = in_reply_to
    if references:
        msg["References"] = references
    for name, value in (headers or {}).items():
        msg[name] = value
    msg.set_content(body)
    return msg


class Bus:
    def __init__(self, nc: Any) -> None:
        self.nc = nc
        self.js = nc.jetstream()
        self.blobs = NatsBlobStore(self.js, "postroom-blobs")

    async def publish(self, event: Any) -> None:
        await self.js.publish(event.nats_subject, event.model_dump_json().encode(),
                              headers=event_headers(event))

    async def mail(self, msg: EmailMessage | bytes, *, label: str = "support",
                   mailbox: str = "support", envelope_from: str | None = None,
                   classify: bool = True, classified_first: bool = False,
                   recipients: list[str] | None = None) -> MailReceived:
        """mail.received (raw mail in the blob store) then mail.classified, as smtp-ingress
        and the classifier publish them (``classified_first``: the other way round, as a
        lagging mail.received consumer sees them)."""
        raw = msg if isinstance(msg, bytes) else msg.as_bytes()
        message_id = (str(msg["Message-ID"]) if isinstance(msg, EmailMessage)
                      else f"<{uuid.uuid4().hex}@x>")
        key = mail_key("acme", message_id, uuid.uuid4().hex)
        if envelope_from is None:
            envelope_from = "bob@customer.example"
        received = MailReceived(
            event_id=derive_event_id(key, "mail.received"), tenant="acme", mail_key=key,
            message_id=message_id, mailbox=mailbox,
            actions=["extract", "classify", "reply"] if mailbox == "support" else ["extract"],
            envelope_from=envelope_from,
            recipients=recipients or [f"{mailbox}+acme@intake.example.com"],
            size=len(raw), raw=await self.blobs.put(raw, content_type="message/rfc822"))
        if classified_first:
            await self.classified(received, label)
            # the classification is with the service, waiting for its mail, before the mail
            # is published (not a pause that a busy machine may not honour)
            await self.delivered_unacked(CLASSIFIED_DURABLE)
        await self.publish(received)
        if classify and not classified_first:
            await self.classified(received, label)
        return received

    async def consumer(self, durable: str) -> Any:
        return await self.js.consumer_info(EVENTS_STREAM, durable)

    async def delivered_unacked(self, durable: str) -> None:
        """Wait until the consumer ``durable`` has taken every message and holds one."""
        async def holding() -> bool:
            info = await self.consumer(durable)
            return info.num_pending == 0 and info.num_ack_pending == 1

        await procs.until(holding, 60, what=f"{durable} holding the message", interval=0.02)

    async def settled(self, service: Service) -> None:
        """Wait until ai-responder has handled everything published so far (each of its
        consumers has acked all) and published what it committed (its outbox is empty): a
        reply or delivery that is not in the stream then was never made."""
        async def idle() -> bool:
            for durable in DURABLES:
                info = await self.consumer(durable)
                if info.num_pending or info.num_ack_pending:
                    return False
            async with service.runtime.store.sessions() as session:
                unpublished = (await session.execute(select(store.outbox.c.id).where(
                    store.outbox.c.published_at.is_(None)).limit(1))).all()
            return not unpublished

        await procs.until(idle, 60, what="ai-responder settled", interval=0.05)

    async def classified(self, received: MailReceived, label: str) -> MailClassified:
        event = MailClassified(
            event_id=derive_event_id(received.event_id, "mail.classified"),
            causation_id=received.event_id, tenant="acme", mail_key=received.mail_key,
            email_id=received.message_id, classification=label, confidence=0.9,
            processed_at=received.occurred_at, processor_id="test", processing_time_ms=1,
            model_version="test")
        await self.publish(event)
        return event

    async def review(self, reply_id: str, key: str, decision: str = "approved",
                     body_text: str | None = None, by: str = "alice") -> ReplyReviewed:
        """What the console publishes when a person decides."""
        event = ReplyReviewed(
            event_id=derive_event_id(reply_id, "reply.reviewed", uuid.uuid4().hex),
            tenant="acme", mail_key=key, reply_id=reply_id, decision=decision,
            reviewed_by=by, body_text=body_text)
        await self.publish(event)
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

    async def of(self, event_type: str, key: str) -> list[dict[str, Any]]:
        return [e for e in await self.events(event_type) if e["mail_key"] == key]

    async def one(self, event_type: str, key: str, within: float = 60) -> dict[str, Any]:
        found = await procs.until(lambda: self.of(event_type, key), within,
                                  what=f"{event_type} of {key}", interval=0.05)
        assert len(found) == 1, found
        return found[0]


@dataclass
class Service:
    runtime: ServiceRuntime
    http: httpx.AsyncClient

    @property
    def responder(self) -> Any:
        return self.runtime.responder  # type: ignore[attr-defined]

    async def reply(self, reply_id: str) -> dict[str, Any]:
        response = await self.http.get(f"/replies/{reply_id}")
        response.raise_for_status()
        return dict(response.json())


async def start_service(nats_url: str, tmp_path: Path, *, database_url: str | None = None,
                        tenants: list[Tenant] | None = None, **overrides: Any) -> Service:
    nc = await nats.connect(nats_url)
    try:
        from postroom_runtime import provision_streams

        await provision_streams(nc.jetstream())
        await seed_tenants(nc.jetstream(), tenants or [tenant()], overwrite=True)
    finally:
        await nc.close()
    values: dict[str, Any] = dict(
        nats_url=nats_url, http_port=0,
        database_url=database_url or f"sqlite+aiosqlite:///{tmp_path}/ai_responder.db",
        consumer_max_deliver=5, consumer_backoff_base_seconds=0.05,
        consumer_backoff_max_seconds=0.5, reply_retry_seconds=0.3,
        ai_breaker_reset_seconds=1.0, ai_breaker_failure_threshold=2,
        processing_timeout=20, outbox_poll_seconds=0.1, reply_api_key=REVIEW_KEY)
    values.update(overrides)
    runtime = build_runtime(AiResponderSettings(**values), registry=CollectorRegistry(),
                            configure_logging=False)
    await runtime.start()
    key = values["reply_api_key"]
    http = httpx.AsyncClient(base_url=f"http://127.0.0.1:{runtime.http_port}", timeout=10,
                             headers={"Authorization": f"Bearer {key}"} if key else {})
    return Service(runtime, http)
