"""Shared helpers of the console's tests: real contract events published on a real
nats-server (the runtime's header helper, the raw mail and documents in the blob store), the
console as a process, an HTTP client with a key."""

from __future__ import annotations

import json
import secrets
import sys
import threading
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import nats

from postroom_contracts import (
    EVENTS_STREAM,
    DeliveryRequested,
    DeliverySent,
    DkimVerdict,
    DmarcVerdict,
    DocumentRef,
    DocumentStored,
    Event,
    MailAuthenticated,
    MailClassified,
    MailParsed,
    MailReceived,
    SpfVerdict,
    VoicemailTranscribed,
    derive_event_id,
)
from postroom_runtime import NatsBlobStore, event_headers, provision_streams
from postroom_testing import procs
from postroom_testing.procs import ManagedProcess

ADMIN_KEY = "pr_0123456789ab_" + "A" * 32
LABELS_SCORES = ("meeting", "promotion", "intro", "voicemail", "order", "support", "spam",
                 "unknown")


async def until(check: Callable[[], Awaitable[Any]], what: str, within: float = 60) -> Any:
    """Poll ``check`` until it returns something truthy (returned), or fail after ``within``."""
    return await procs.until(check, within, what=what, interval=0.05)


async def outbox_empty(database_url: str) -> bool:
    """Whether the console has published every event it committed (its outbox in the store)."""
    from sqlalchemy import select

    from postroom_console.store import outbox
    from postroom_runtime import Store

    db = Store(database_url)
    try:
        async with db.sessions() as session:
            rows = (await session.execute(select(outbox.c.id).where(
                outbox.c.published_at.is_(None)).limit(1))).all()
        return not rows
    finally:
        await db.close()


def html_mail(key: str, subject: str, sender: str) -> bytes:
    return (
        f"From: {sender}\r\nTo: orders@acme.example\r\nSubject: {subject}\r\n"
        f"Message-ID: <{key}@example.org>\r\nMIME-Version: 1.0\r\n"
        "Content-Type: multipart/alternative; boundary=b1\r\n\r\n"
        "--b1\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nHello, order 42 attached.\r\n"
        "--b1\r\nContent-Type: text/html; charset=utf-8\r\n\r\n"
        "<html><body><h1 onclick=\"alert(1)\">Order 42</h1>"
        "<script>alert('x')</script>"
        "<img src=\"https://tracker.example/pixel.gif\" alt=\"pixel\">"
        "<img src=\"cid:logo@example.org\" alt=\"logo\">"
        "<a href=\"https://shop.example/o/42\">details</a></body></html>\r\n"
        "--b1--\r\n"
    ).encode()


@dataclass
class SentMail:
    tenant: str
    mail_key: str
    message_id: str
    subject: str
    sender: str
    label: str
    events: list[Event] = field(default_factory=list)
    document: bytes = b""
    document_id: str = ""
    trace_id: str = ""
    span_id: str = ""  # of the traceparent mail.received was published with


class Bus:
    """Publishes a mail's events as the services do (same subjects and headers)."""

    def __init__(self, nc: Any) -> None:
        self.nc = nc
        self.js = nc.jetstream()
        self.blobs = NatsBlobStore(self.js, "postroom-blobs")

    @classmethod
    async def connect(cls, url: str) -> Bus:
        nc = await nats.connect(url)
        await provision_streams(nc.jetstream())
        return cls(nc)

    async def close(self) -> None:
        await self.nc.close()

    async def publish(self, event: Event, extra: dict[str, str] | None = None) -> int:
        ack = await self.js.publish(event.nats_subject, event.model_dump_json().encode(),
                                    headers=event_headers(event, extra))
        return int(ack.seq)

    async def stream_last(self) -> int:
        return int((await self.js.stream_info(EVENTS_STREAM)).state.last_seq)

    async def mail(self, *, tenant: str = "acme", subject: str = "Order 42",
                   sender: str = "buyer@example.org", label: str = "order",
                   at: datetime | None = None, stages: int = 8,
                   voicemail: bool = True) -> SentMail:
        """A mail's whole journey: mail.received -> mail.authenticated -> document.stored ->
        mail.parsed -> mail.classified -> voicemail.transcribed -> delivery.requested ->
        delivery.sent (the first ``stages`` of them)."""
        key = uuid.uuid4().hex[:20]
        message_id = f"<{key}@example.org>"
        at = at or datetime.now(UTC)
        raw = await self.blobs.put(html_mail(key, subject, sender),
                                   content_type="message/rfc822")
        trace_id = secrets.token_hex(16)
        sent = SentMail(tenant, key, message_id, subject, sender, label, trace_id=trace_id)
        received = MailReceived(
            event_id=derive_event_id(key, "mail.received"), occurred_at=at, tenant=tenant,
            mail_key=key, message_id=message_id, mailbox="orders", envelope_from=sender,
            recipients=[f"orders@{tenant}.example"], header_from=sender, subject=subject,
            size=raw.size, raw=raw)
        authenticated = MailAuthenticated.caused_by(
            received, occurred_at=at + timedelta(milliseconds=20), message_id=message_id,
            authserv_id="mx.postroom.test",
            spf=SpfVerdict(result="pass", identity="mailfrom", domain="example.org"),
            dkim=[DkimVerdict(result="pass", domain="example.org", selector="s1")],
            dmarc=DmarcVerdict(result="pass", header_from="example.org"),
            authentication_results="mx.postroom.test; spf=pass; dkim=pass; dmarc=pass")
        document = f"%PDF-1.4 order {key}".encode()
        doc_ref = await self.blobs.put(document, content_type="application/pdf")
        document_id = derive_event_id(key, "document", "0")
        sent.document, sent.document_id = document, document_id
        stored = DocumentStored.caused_by(
            received, "0", occurred_at=at + timedelta(milliseconds=40),
            document_id=document_id, index=0, filename="Bestellung 42.pdf",
            declared_content_type="application/pdf",
            sniffed_content_type="application/pdf", size=len(document),
            sha256=doc_ref.sha256, blob=doc_ref, supported=True)
        parsed = MailParsed.caused_by(
            received, occurred_at=at + timedelta(milliseconds=60), message_id=message_id,
            subject=subject, header_from=sender, body_text="Hello, order 42 attached.",
            has_html=True, document_ids=[document_id],
            documents=[DocumentRef(document_id=document_id, index=0,
                                   filename="Bestellung 42.pdf",
                                   content_type="application/pdf", size=len(document),
                                   sha256=doc_ref.sha256, blob=doc_ref)],
            raw=raw)
        scores = {name: (0.93 if name == label else 0.01) for name in LABELS_SCORES}
        classified = MailClassified.caused_by(
            parsed, occurred_at=at + timedelta(milliseconds=80), email_id=message_id,
            classification=label, confidence=0.93,
            processed_at=at + timedelta(milliseconds=80), processor_id="classifier-test",
            processing_time_ms=1.5, scores=scores, model_version="logreg-tfidf-test")
        transcribed = VoicemailTranscribed.caused_by(
            parsed, "0", occurred_at=at + timedelta(milliseconds=100), message_id=message_id,
            document_id=document_id, index=0, filename="msg.wav", status="transcribed",
            text="Please call me back", engine="offline", language="en-US",
            duration_seconds=3.0, processing_seconds=0.5)
        delivery_id = f"fwd-{key}"
        requested = DeliveryRequested.caused_by(
            parsed, occurred_at=at + timedelta(milliseconds=120), delivery_id=delivery_id,
            kind="forward", to=["alice@acme.example"], original=raw)
        delivered = DeliverySent.caused_by(
            requested, occurred_at=at + timedelta(milliseconds=150), delivery_id=delivery_id,
            kind="forward", message_id=f"<fwd-{key}@mailer.test>", to=["alice@acme.example"],
            relay="127.0.0.1:2525", smtp_response="250 OK", attempts=1)
        events: list[Event] = [received, authenticated, stored, parsed, classified]
        if voicemail:
            events.append(transcribed)
        events += [requested, delivered]
        for event in events[:stages]:
            extra = None
            if isinstance(event, MailReceived):
                sent.span_id = secrets.token_hex(8)
                extra = {"traceparent": f"00-{trace_id}-{sent.span_id}-01"}
            await self.publish(event, extra)
            sent.events.append(event)
        return sent


async def draft_reply(bus: Bus, mail: SentMail, *, status: str = "pending",
                      held_reasons: tuple[str, ...] = (),
                      draft_text: str = "Thank you, we ship on Friday.") -> Any:
    """reply.drafted for ``mail`` as ai-responder publishes it (after its classification)."""
    from postroom_contracts import ReplyDrafted, reply_id_for

    cause = mail.events[-1]
    event = ReplyDrafted.caused_by(
        cause, reply_id=reply_id_for(mail.tenant, mail.mail_key), mailbox="support",
        to=[mail.sender], from_address=f"support@{mail.tenant}.example",
        subject=f"Re: {mail.subject}", body_text=f"Hello,\n\n{draft_text}\n\n-- Support",
        draft_text=draft_text, in_reply_to=mail.message_id, references=[mail.message_id],
        language="en", model="reply-test", backend="local", prompt_version="test-1",
        status=status, held_reasons=list(held_reasons), latency_ms=12.5,
        email_id=mail.message_id)
    await bus.publish(event)
    return event


class Console:
    """The console process and an HTTP client for it."""

    def __init__(self, proc: ManagedProcess, port: int) -> None:
        self.proc = proc
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.http = httpx.AsyncClient(base_url=self.url, timeout=30)

    def client(self, key: str | None) -> httpx.AsyncClient:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        return httpx.AsyncClient(base_url=self.url, headers=headers, timeout=30)

    async def admin(self, method: str, path: str, **kw: Any) -> httpx.Response:
        return await self.http.request(method, path,
                                       headers={"Authorization": f"Bearer {ADMIN_KEY}"}, **kw)

    async def projection(self) -> dict[str, Any]:
        response = await self.admin("GET", "/api/v1/admin/projection")
        assert response.status_code == 200, response.text
        return dict(response.json())

    async def caught_up(self, bus: Bus, within: float = 60) -> dict[str, Any]:
        last = await bus.stream_last()

        async def check() -> dict[str, Any] | None:
            state = await self.projection()
            return state if state["position"] >= last else None

        return dict(await until(check, f"projection at {last}", within))

    async def tenant_key(self, tenant: str, name: str | None = None) -> str:
        response = await self.admin("POST", "/api/v1/keys",
                                    json={"name": name or f"{tenant}-key", "tenant": tenant})
        assert response.status_code == 201, response.text
        return str(response.json()["key"])

    async def close(self) -> None:
        await self.http.aclose()


def console_env(nats_url: str, database_url: str, port: int, **env: str) -> dict[str, str]:
    return {"NATS_URL": nats_url, "DATABASE_URL": database_url, "HTTP_PORT": str(port),
            "BLOB_BACKEND": "nats", "CONSOLE_ADMIN_KEY": ADMIN_KEY, "LOG_LEVEL": "INFO",
            "OUTBOX_POLL_SECONDS": "0.2", "CONSOLE_BATCH_SIZE": "64", **env}


def console_argv() -> list[str]:
    return [sys.executable, "-m", "postroom_console"]


def dump(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


class FakeMailboxSync:
    """mailbox-sync's ``GET /api/v1/accounts`` over a real socket."""

    def __init__(self, accounts: list[dict[str, Any]]) -> None:
        body = json.dumps({"accounts": accounts}).encode()

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                status = 200 if self.path == "/api/v1/accounts" else 404
                if self.headers.get("Authorization") != "Bearer sync-token":
                    status = 401
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


def mailbox_sync_accounts() -> list[dict[str, Any]]:
    """Two accounts in the shape of mailbox-sync's list: Account.public() plus status."""
    return [
        {"id": "acme-support", "kind": "imap", "origin": "api", "tenant": "acme",
         "mailbox": "support", "address": "support@acme.example", "host": "imap.acme.example",
         "port": 993, "security": "tls", "username": "support", "auth": "password",
         "folders": ["INBOX"], "mode": "idle", "enabled": True,
         "status": {"state": "ok", "last_error": None, "folders": [
             {"folder": "INBOX", "state": "idle", "mode": "idle", "last_error": None,
              "last_sync_at": "2026-12-01T10:00:00+00:00", "ingested": 12,
              "duplicates": 0}]}},
        {"id": "globex-info", "kind": "imap", "origin": "api", "tenant": "globex",
         "mailbox": "info", "address": "info@globex.example", "folders": ["INBOX"],
         "enabled": True,
         "status": {"state": "error", "last_error": "login failed", "folders": []}}]
