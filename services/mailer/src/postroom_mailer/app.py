"""mailer: delivery.requested in; mail out through the relay; delivery.sent / .failed out.

The consumer composes the message (outside the transaction: fetch the original from the blob
store, render the templates) and, in its transaction, queues it as one ``deliveries`` row
keyed by ``delivery_id``; it never talks SMTP, so a redelivered request finds its row and
queues nothing. The :class:`~postroom_mailer.sender.Sender` in the background sends the rows.
"""

from __future__ import annotations

import logging
from datetime import datetime
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Query, Response
from fastapi.responses import JSONResponse
from prometheus_client import REGISTRY, CollectorRegistry
from sqlalchemy import event as sa_event
from sqlalchemy import insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from postroom_contracts import DeliveryFailed, DeliveryRequested
from postroom_runtime import (
    ConfigError,
    Outbox,
    PoisonMessage,
    ServiceRuntime,
    event_headers,
    load_settings,
    problem,
)
from postroom_runtime.store import utcnow

from . import relay as smtp
from . import store
from .compose import Composed, ComposeError, HeaderInjection, Templates, compose
from .config import MailerSettings
from .sender import Metrics, Sender
from .spec import SERVICE
from .store import Status, deliveries

log = logging.getLogger(__name__)

MIGRATIONS = Path(__file__).parent / "migrations"
# The durable JetStream consumer and idempotency scope, fixed in spec.py (never renamed).
CONSUMER = SERVICE.durable_for(DeliveryRequested)
MAX_PAGE = 500


class Mailer:
    """The consumer's prepare step, its handler and its dead-letter hook."""

    def __init__(self, runtime: ServiceRuntime, settings: MailerSettings,
                 sender: Sender) -> None:
        self.runtime = runtime
        self.settings = settings
        self.sender = sender
        self.templates = Templates(settings.mailer_template_dir)

    async def prepare(self, event: DeliveryRequested) -> Composed:
        """Outside the transaction: fetch the original and compose the message."""
        original = None
        if event.original is not None and event.kind in ("forward", "voicemail"):
            if self.runtime.blobs is None:
                raise RuntimeError("blob store not started")
            original = await self.runtime.blobs.get(event.original)  # missing: retried
        try:
            return compose(event, original, templates=self.templates,
                           message_id_domain=self.settings.mailer_message_id_domain,
                           default_from=self.settings.mailer_from_address,
                           default_envelope_from=self.settings.mailer_envelope_from)
        except (HeaderInjection, ComposeError) as exc:
            raise PoisonMessage(str(exc)) from exc

    async def handle(self, event: DeliveryRequested, session: AsyncSession, outbox: Outbox,
                     composed: Composed) -> None:
        """In the transaction: queue the message once per delivery_id."""
        now = utcnow()
        existing = (await session.execute(select(deliveries.c.status).where(
            deliveries.c.delivery_id == event.delivery_id))).first()
        if existing is not None:
            if existing.status != Status.FAILED:
                log.info("delivery already queued; request ignored",
                         extra={"delivery_id": event.delivery_id})
                return
            # a failed delivery requested again (a replayed dead letter): one more try
            await session.execute(update(deliveries).where(
                deliveries.c.delivery_id == event.delivery_id).values(
                status=Status.PENDING, next_attempt_at=now, dead_letter_pending=False,
                error=None, updated_at=now))
        else:
            await session.execute(insert(deliveries).values(
                delivery_id=event.delivery_id, tenant=event.tenant, mail_key=event.mail_key,
                kind=event.kind, event=event.model_dump_json().encode(),
                event_subject=event.nats_subject, event_headers=event_headers(event),
                message_id=composed.message_id, subject=composed.subject,
                envelope_from=composed.envelope_from, recipients=composed.recipients,
                message=composed.message, status=Status.PENDING, attempts=0, uncertain=0,
                next_attempt_at=now, dkim_signed=False, dead_letter_pending=False,
                created_at=now, updated_at=now))
        # wake the sender once this transaction has committed
        sa_event.listen(session.sync_session, "after_commit",
                        lambda _session: self.sender.kick(), once=True)

    async def on_dead_letter(self, event: DeliveryRequested | None, error: str) -> None:
        """The request was refused (CR/LF in a header, no original) or could not be composed
        after every attempt: delivery.failed, permanent; nothing was sent."""
        if event is None:
            return
        async with self.runtime.store.transaction() as session:
            row = (await session.execute(select(deliveries.c.status).where(
                deliveries.c.delivery_id == event.delivery_id))).first()
            if row is not None and row.status != Status.FAILED:
                log.warning("dead-lettered request is already queued; status kept")
                return
            failed = DeliveryFailed.caused_by(
                event, part="refused", delivery_id=event.delivery_id, kind=event.kind,
                to=list(event.to), permanent=True, smtp_code=None,
                error=error.removeprefix("poison: ")[:2000], attempts=0)
            already = await session.scalar(
                select(store.outbox.c.id).where(store.outbox.c.event_id == failed.event_id))
            if already is None:
                await Outbox(session, store.outbox).emit(failed)
        log.error("delivery refused", extra={"delivery_id": event.delivery_id})


# --- HTTP API -------------------------------------------------------------------------------


def _iso(value: datetime | None) -> str | None:
    value = store.utc(value)
    return value.isoformat() if value is not None else None


def delivery_json(row: Any) -> dict[str, Any]:
    m = row._mapping
    return {
        "delivery_id": m["delivery_id"], "tenant": m["tenant"], "mail_key": m["mail_key"],
        "kind": m["kind"], "status": m["status"], "message_id": m["message_id"],
        "subject": m["subject"], "to": m["recipients"], "attempts": m["attempts"],
        "uncertain": m["uncertain"], "relay": m["relay"], "smtp_code": m["smtp_code"],
        "smtp_response": m["smtp_response"], "refused": m["refused"] or {},
        "error": m["error"], "dkim_signed": m["dkim_signed"],
        "created_at": _iso(m["created_at"]), "next_attempt_at": _iso(m["next_attempt_at"]),
        "sent_at": _iso(m["sent_at"]),
    }


def add_routes(app: FastAPI, runtime: ServiceRuntime, sender: Sender) -> None:
    listed = [c for c in deliveries.c if c.name not in ("message", "event")]

    @app.get("/outbox")
    async def list_outbox(
        status: Status | None = None, tenant: str | None = None,
        limit: int = Query(100, ge=1, le=MAX_PAGE), offset: int = Query(0, ge=0),
    ) -> list[dict[str, Any]]:
        """Deliveries, newest first."""
        query = select(*listed).order_by(deliveries.c.created_at.desc()).limit(limit)
        if status is not None:
            query = query.where(deliveries.c.status == status.value)
        if tenant is not None:
            query = query.where(deliveries.c.tenant == tenant)
        async with runtime.store.sessions() as session:
            rows = (await session.execute(query.offset(offset))).all()
        return [delivery_json(r) for r in rows]

    @app.get("/outbox/{delivery_id}", response_model=None)
    async def get_delivery(delivery_id: str) -> dict[str, Any] | JSONResponse:
        async with runtime.store.sessions() as session:
            row = (await session.execute(select(*listed).where(
                deliveries.c.delivery_id == delivery_id))).first()
        if row is None:
            return problem(404, "Delivery not found", f"no delivery {delivery_id!r}")
        return delivery_json(row)

    @app.get("/outbox/{delivery_id}/message", response_model=None)
    async def get_message(delivery_id: str) -> Response:
        async with runtime.store.sessions() as session:
            message = await session.scalar(select(deliveries.c.message).where(
                deliveries.c.delivery_id == delivery_id))
        if message is None:
            return problem(404, "Delivery not found", f"no delivery {delivery_id!r}")
        return Response(bytes(message), media_type="message/rfc822",
                        headers={"X-Content-Type-Options": "nosniff"})

    @app.get("/health/relay")
    async def relay_health() -> dict[str, Any]:
        """Whether the outbound relay answers (capture mode: always)."""
        if sender.relay is None:
            return {"relay": "capture", "reachable": True,
                    "capture_dir": str(sender.settings.mailer_capture_dir)}
        try:
            await smtp.reachable(sender.relay)
        except Exception as exc:
            sender.metrics.relay_up.set(0)
            return {"relay": sender.relay.address, "reachable": False,
                    "error": f"{type(exc).__name__}: {exc}"[:300]}
        sender.metrics.relay_up.set(1)
        return {"relay": sender.relay.address, "reachable": True}


def dkim_signer(settings: MailerSettings) -> smtp.DkimSigner | None:
    """The signer the settings ask for: none, or domain, selector and a key together."""
    key = settings.mailer_dkim_private_key
    parts = (settings.mailer_dkim_domain, settings.mailer_dkim_selector,
             key or settings.mailer_dkim_key_file)
    if not any(parts):
        return None
    if not all(parts):
        raise ConfigError("invalid configuration:\n  MAILER_DKIM_DOMAIN, MAILER_DKIM_SELECTOR "
                          "and MAILER_DKIM_KEY_FILE (or MAILER_DKIM_PRIVATE_KEY) go together")
    assert settings.mailer_dkim_domain and settings.mailer_dkim_selector
    if key is None:
        assert settings.mailer_dkim_key_file is not None
        try:
            pem = settings.mailer_dkim_key_file.read_bytes()
        except OSError as exc:
            raise ConfigError(f"invalid configuration:\n  MAILER_DKIM_KEY_FILE: {exc}") from None
    else:
        pem = key.encode()
    return smtp.DkimSigner(settings.mailer_dkim_domain, settings.mailer_dkim_selector, pem)


def build_runtime(
    settings: MailerSettings | None = None,
    *,
    registry: CollectorRegistry = REGISTRY,
    configure_logging: bool = True,
) -> ServiceRuntime:
    """The service, ready for ``await runtime.start()`` (or ``postroom_runtime.run``)."""
    settings = settings or load_settings(MailerSettings)
    try:
        relay = smtp.parse_relay_url(
            settings.mailer_relay_url, username=settings.mailer_relay_username,
            password=settings.mailer_relay_password,
            timeout=settings.mailer_relay_timeout_seconds,
            verify=settings.mailer_relay_tls_verify, ca_file=settings.mailer_relay_ca_file)
    except ValueError as exc:
        raise ConfigError(f"invalid configuration:\n  MAILER_RELAY_URL: {exc}") from None
    signer = dkim_signer(settings)
    runtime = ServiceRuntime(settings, migrations=MIGRATIONS, registry=registry,
                             configure_logging=configure_logging)
    sender = Sender(runtime, settings, relay, signer, Metrics(registry), CONSUMER)
    mailer = Mailer(runtime, settings, sender)
    runtime.consume(DeliveryRequested, mailer.handle, durable=CONSUMER,
                    processed=store.processed_messages, outbox=store.outbox,
                    on_dead_letter=mailer.on_dead_letter, prepare=mailer.prepare)
    add_routes(runtime.http, runtime, sender)

    async def start_sender(_: ServiceRuntime) -> None:
        sender.start()

    async def stop_sender(_: ServiceRuntime) -> None:
        await sender.stop()

    runtime.on_start.append(start_sender)
    runtime.on_stop.append(stop_sender)
    runtime.sender = sender  # type: ignore[attr-defined]
    return runtime
