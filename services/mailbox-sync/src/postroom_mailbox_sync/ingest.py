"""One path for every source: a raw mail becomes a blob and a ``mail.received`` event, once.

1. the tenant and its mailbox must be routable in the tenant registry (as an SMTP recipient
   must be): otherwise ``Unroutable`` and nothing is stored;
2. the mail key (tenant, Message-ID, content) already in ``mails``: a duplicate, recorded
   (the caller's rows, e.g. the UID and the folder's position) without a new event;
3. else the raw MIME goes to the blob store (claim check), and one transaction writes the
   ``mails`` row, the caller's rows and the event into the outbox; the runtime's relay
   publishes it (``Nats-Msg-Id`` = the event id derived from the key).

A crash anywhere before the commit leaves nothing but perhaps a blob (content-addressed: put
again, same key); the source is read again and the mail gets the same key.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Literal

from opentelemetry.trace import SpanKind
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from postroom_contracts import BlobRef, MailReceived, Tenant
from postroom_runtime import Outbox, ServiceRuntime, TenantRegistry, mail_key_var
from postroom_runtime.mail import mailbox_envelope_from, read_headers, received_event
from postroom_runtime.store import utcnow

from .metrics import Metrics
from .store import known_mail, mails, outbox

log = logging.getLogger("postroom_mailbox_sync")

Source = Literal["imap", "webhook"]
Extra = Callable[[AsyncSession, str, bool], Awaitable[None]]  # (session, mail key, duplicate)


class Unroutable(Exception):
    """The tenant is unknown or disabled, or has no such mailbox."""


@dataclass(frozen=True)
class Ingested:
    mail_key: str
    event_id: str
    duplicate: bool


class Ingestor:
    def __init__(self, runtime: ServiceRuntime, metrics: Metrics) -> None:
        self.runtime = runtime
        self.metrics = metrics
        self.registry: TenantRegistry | None = None
        self.relay = runtime.relay_for(outbox)
        self.tracer = runtime.tracer_provider.get_tracer("postroom_mailbox_sync")

    def route(self, tenant: str, mailbox: str) -> tuple[Tenant, list[str]]:
        """The tenant and the actions of its mailbox; ``Unroutable`` says why not."""
        found = self.registry.get(tenant) if self.registry is not None else None
        if found is None or not found.enabled:
            raise Unroutable(f"tenant {tenant!r} is not registered or not enabled")
        route = found.route(mailbox)
        if route is None:
            raise Unroutable(f"tenant {tenant!r} has no mailbox {mailbox!r}")
        return found, [str(a) for a in route.actions]

    async def ingest(self, raw: bytes, *, source: Source, tenant: str, mailbox: str,
                     recipient: str, tls: bool, account_id: str | None = None,
                     extra: Extra | None = None) -> Ingested:
        started = time.perf_counter()
        with self.tracer.start_as_current_span(
            f"{source} ingest", kind=SpanKind.CONSUMER,
            attributes={"postroom.source": source, "postroom.tenant": tenant,
                        "mail.size": len(raw)},
        ) as span:
            _, actions = self.route(tenant, mailbox)
            content = hashlib.sha256(raw).hexdigest()
            headers = read_headers(raw)
            blobs = self.runtime.blobs
            assert blobs is not None
            # the key first: a duplicate needs no blob
            probe = received_event(
                tenant=tenant, mailbox=mailbox, actions=actions, recipients=[recipient],
                headers=headers, content_sha256=content,
                envelope_from=mailbox_envelope_from(headers), raw=_placeholder(len(raw)),
                source=source, tls=tls, authenticated=False)
            token = mail_key_var.set(probe.mail_key)
            span.set_attribute("postroom.mail_key", probe.mail_key)
            try:
                async with self.runtime.store.transaction() as session:
                    duplicate = await known_mail(session, probe.mail_key)
                    if duplicate:
                        if extra is not None:
                            await extra(session, probe.mail_key, True)
                if duplicate:
                    self.metrics.mails.labels(source, "duplicate").inc()
                    log.info("duplicate mail: no new event", extra={"source": source})
                    return Ingested(probe.mail_key, probe.event_id, True)
                ref = await blobs.put(raw, "message/rfc822")
                event = probe.model_copy(update={"raw": ref, "size": ref.size})
                try:
                    await self._commit(event, content, source, account_id, extra)
                except IntegrityError:
                    # the same mail committed concurrently (another folder, a retried upload)
                    async with self.runtime.store.transaction() as session:
                        if extra is not None:
                            await extra(session, event.mail_key, True)
                    self.metrics.mails.labels(source, "duplicate").inc()
                    return Ingested(event.mail_key, event.event_id, True)
                self.relay.kick()
                self.metrics.mails.labels(source, "ingested").inc()
                self.metrics.ingest_seconds.labels(source).observe(
                    time.perf_counter() - started)
                log.info("mail received", extra={"source": source, "tenant": tenant,
                                                 "size": ref.size})
                return Ingested(event.mail_key, event.event_id, False)
            finally:
                mail_key_var.reset(token)

    async def _commit(self, event: MailReceived, content: str, source: str,
                      account_id: str | None, extra: Extra | None) -> None:
        async with self.runtime.store.transaction() as session:
            await session.execute(mails.insert().values(
                mail_key=event.mail_key, tenant=event.tenant,
                message_id=event.message_id[:1000], content_sha256=content,
                event_id=event.event_id, source=source, account_id=account_id,
                size=event.size, ingested_at=utcnow()))
            if extra is not None:
                await extra(session, event.mail_key, False)
            await Outbox(session, outbox).emit(event)


def _placeholder(size: int) -> BlobRef:
    """A reference to fill the event before the blob is stored (the key needs no blob)."""
    return BlobRef(bucket="pending", key="sha256/" + "0" * 64, size=size, sha256="0" * 64)
