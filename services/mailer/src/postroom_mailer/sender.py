"""The sender loop: hands queued deliveries to the relay, one process's share at a time.

Each process runs one :class:`Sender`. It claims due ``pending`` rows (on PostgreSQL with
``FOR UPDATE SKIP LOCKED``, so replicas never claim the same row; SQLite has one sender per
process and one process per database), commits them as ``sending`` *before* the SMTP
conversation, sends them, and records the outcome together with delivery.sent or
delivery.failed in the runtime's outbox, in one transaction.

A row still ``sending`` after a crash is uncertain: the relay may have accepted it before the
process died and the result was recorded. By default (``MAILER_RESEND_UNCERTAIN=true``) it is
sent again: at least once in that small window, with the same Message-ID so receivers can
tell a duplicate. With ``false`` it fails (delivery.failed, permanent=false, and a dead
letter) for a person to check the relay's log.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import os
import time
import uuid
from datetime import timedelta
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from sqlalchemy import delete, func, select, update

from postroom_contracts import (
    DLQ_STREAM,
    DeadLetter,
    DeliveryFailed,
    DeliveryRequested,
    DeliverySent,
    decode,
    dlq_subject,
)
from postroom_runtime import MSG_ID, Outbox, ServiceRuntime
from postroom_runtime.store import utcnow

from . import relay as smtp
from . import store
from .config import MailerSettings
from .store import Status, deliveries

log = logging.getLogger(__name__)


class Metrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.sends = Counter("postroom_mailer_sends_total",
                             "Send attempts by outcome (sent, captured, temp_failed, failed)",
                             ["outcome"], registry=registry)
        self.latency = Histogram("postroom_mailer_send_seconds",
                                 "Time of one SMTP conversation (or capture)", registry=registry,
                                 buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5,
                                          10, 30, 60))
        self.queue = Gauge("postroom_mailer_queue_depth",
                           "Deliveries waiting (pending or sending)", registry=registry)
        self.oldest = Gauge("postroom_mailer_oldest_due_seconds",
                            "Age of the oldest due pending delivery", registry=registry)
        self.uncertain = Counter("postroom_mailer_uncertain_total",
                                 "Rows found 'sending' after a crash", registry=registry)
        self.relay_up = Gauge("postroom_mailer_relay_up",
                              "1 when the last conversation with the relay got an answer",
                              registry=registry)


class Sender:
    def __init__(self, runtime: ServiceRuntime, settings: MailerSettings,
                 relay: smtp.RelayConfig | None, signer: smtp.DkimSigner | None,
                 metrics: Metrics, consumer: str) -> None:
        self.runtime = runtime
        self.settings = settings
        self.relay = relay
        self.signer = signer
        self.metrics = metrics
        self.consumer = consumer
        self.schedule = settings.retry_schedule
        self.instance = f"{os.getpid()}-{uuid.uuid4().hex[:12]}"
        self.uncertain_found = 0
        self.last_relay_error: str | None = None
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._outbox_relay = runtime.relay_for(store.outbox)

    # --- lifecycle ---------------------------------------------------------------------------

    def kick(self) -> None:
        self._wake.set()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="mailer-sender")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        last_recovery = 0.0
        first = True
        while True:
            try:
                now = time.monotonic()
                if first or (not self.runtime.store.is_sqlite
                             and now - last_recovery > self.settings.mailer_send_lease_seconds / 2):
                    await self.recover(at_start=first)
                    first = False
                    last_recovery = now
                await self.publish_dead_letters()
                sent = await self.send_due()
                await self.update_gauges()
                if sent:
                    continue
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("sender loop failed; will try again")
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.settings.mailer_sender_poll_seconds)

    # --- claiming ----------------------------------------------------------------------------

    async def recover(self, *, at_start: bool) -> int:
        """Rows left ``sending`` by a process that died: resend them, or fail them."""
        now = utcnow()
        query = select(deliveries).where(deliveries.c.status == Status.SENDING)
        if self.runtime.store.is_sqlite:
            if not at_start:
                return 0  # one process per SQLite database: only the previous run's rows
        else:
            query = query.where(
                deliveries.c.claimed_at
                < now - timedelta(seconds=self.settings.mailer_send_lease_seconds),
            ).with_for_update(skip_locked=True)
        found = 0
        async with self.runtime.store.transaction() as session:
            rows = (await session.execute(query)).all()
            for row in rows:
                found += 1
                if self.settings.mailer_resend_uncertain:
                    await session.execute(update(deliveries).where(
                        deliveries.c.delivery_id == row.delivery_id).values(
                        status=Status.PENDING, next_attempt_at=now, claimed_by=None,
                        uncertain=row.uncertain + 1, updated_at=now))
                else:
                    await self._fail(session, row, row.attempts, permanent=False, code=None,
                                     error="uncertain: the mailer stopped during the SMTP "
                                     "conversation; the relay may have accepted the mail "
                                     "(check its log before replaying)",
                                     uncertain=row.uncertain + 1)
        if found:
            self.uncertain_found += found
            self.metrics.uncertain.inc(found)
            log.warning("deliveries found in flight after a restart",
                        extra={"uncertain": found,
                               "action": "resend" if self.settings.mailer_resend_uncertain
                               else "failed"})
            self._outbox_relay.kick()
        return found

    async def claim(self, limit: int) -> list[Any]:
        now = utcnow()
        query = (select(deliveries)
                 .where(deliveries.c.status == Status.PENDING,
                        deliveries.c.next_attempt_at <= now)
                 .order_by(deliveries.c.next_attempt_at).limit(limit))
        if not self.runtime.store.is_sqlite:
            query = query.with_for_update(skip_locked=True)
        async with self.runtime.store.transaction() as session:
            rows = (await session.execute(query)).all()
            if not rows:
                return []
            ids = [r.delivery_id for r in rows]
            # committed before the conversation: a crash from here on leaves them 'sending'
            await session.execute(update(deliveries).where(deliveries.c.delivery_id.in_(ids))
                                  .values(status=Status.SENDING, attempts=deliveries.c.attempts
                                          + 1, claimed_by=self.instance, claimed_at=now,
                                          updated_at=now))
        return rows

    async def send_due(self) -> int:
        rows = await self.claim(self.settings.mailer_send_concurrency)
        if rows:
            await asyncio.gather(*(self.send_one(row) for row in rows))
        return len(rows)

    # --- one delivery ------------------------------------------------------------------------

    async def send_one(self, row: Any) -> None:
        attempt = row.attempts + 1
        message = bytes(row.message)
        recipients = list(row.recipients)
        signed = False
        started = time.perf_counter()
        if self.relay is None:
            await asyncio.to_thread(smtp.capture, self.settings.mailer_capture_dir,
                                    row.delivery_id, row.envelope_from, recipients, message)
            outcome = smtp.Outcome("sent", "250 captured", 250, accepted=recipients)
            relay_name = "capture"
            metric = "captured"
        else:
            if self.signer is not None:
                message = self.signer.sign(message)
                signed = True
            outcome = await smtp.send(self.relay, row.envelope_from, recipients, message)
            relay_name = self.relay.address
            metric = {"sent": "sent", "temporary": "temp_failed",
                      "permanent": "failed"}[outcome.result]
            answered = outcome.code is not None
            self.metrics.relay_up.set(1 if answered else 0)
            self.last_relay_error = None if answered else outcome.response
        self.metrics.latency.observe(time.perf_counter() - started)
        self.metrics.sends.labels(metric).inc()
        now = utcnow()
        async with self.runtime.store.transaction() as session:
            current = (await session.execute(select(deliveries).where(
                deliveries.c.delivery_id == row.delivery_id))).one()
            if current.status != Status.SENDING or current.claimed_by != self.instance:
                log.warning("delivery taken over while sending; result not recorded",
                            extra={"delivery_id": row.delivery_id})
                return
            event = decode(DeliveryRequested, bytes(row.event))
            if outcome.result == "sent":
                await session.execute(update(deliveries).where(
                    deliveries.c.delivery_id == row.delivery_id).values(
                    status=Status.SENT, relay=relay_name, smtp_code=outcome.code,
                    smtp_response=outcome.response[:4000], refused=outcome.refused,
                    dkim_signed=signed, error=None, sent_at=now, updated_at=now))
                await Outbox(session, store.outbox).emit(DeliverySent.caused_by(
                    event, delivery_id=row.delivery_id, kind=row.kind,
                    message_id=row.message_id, to=outcome.accepted, refused=outcome.refused,
                    relay=relay_name, smtp_response=outcome.response[:2000],
                    attempts=attempt, dkim_signed=signed))
                log.info("mail sent", extra={"delivery_id": row.delivery_id,
                                             "attempt": attempt, "relay": relay_name})
            elif outcome.result == "temporary" and attempt <= len(self.schedule):
                delay = self.schedule[attempt - 1]
                await session.execute(update(deliveries).where(
                    deliveries.c.delivery_id == row.delivery_id).values(
                    status=Status.PENDING, next_attempt_at=now + timedelta(seconds=delay),
                    smtp_code=outcome.code, error=outcome.response[:4000], claimed_by=None,
                    updated_at=now))
                log.warning("temporary failure; will retry",
                            extra={"delivery_id": row.delivery_id, "attempt": attempt,
                                   "retry_in_s": delay, "error": outcome.response[:300]})
            else:
                permanent = outcome.result == "permanent"
                error = outcome.response if permanent else (
                    f"gave up after {attempt} attempts: {outcome.response}")
                await self._fail(session, current, attempt, permanent=permanent,
                                 code=outcome.code, error=error)
        self._outbox_relay.kick()
        if outcome.result != "sent":
            self.kick()  # publish the dead letter (if any) at once

    async def _fail(self, session: Any, row: Any, attempts: int, *, permanent: bool,
                    code: int | None, error: str, uncertain: int | None = None) -> None:
        """Record the failure, emit delivery.failed, queue the dead letter; forget the
        request in the idempotency table so a replay of the dead letter is handled again."""
        now = utcnow()
        values: dict[str, Any] = dict(status=Status.FAILED, smtp_code=code, error=error[:4000],
                                      dead_letter_pending=True, claimed_by=None,
                                      updated_at=now)
        if uncertain is not None:
            values["uncertain"] = uncertain
        await session.execute(update(deliveries).where(
            deliveries.c.delivery_id == row.delivery_id).values(**values))
        event = decode(DeliveryRequested, bytes(row.event))
        await Outbox(session, store.outbox).emit(DeliveryFailed.caused_by(
            event, part=str(attempts), delivery_id=row.delivery_id, kind=row.kind,
            to=list(row.recipients), permanent=permanent, smtp_code=code,
            error=error[:2000], attempts=max(attempts, 0)))
        await session.execute(delete(store.processed_messages).where(
            store.processed_messages.c.consumer == self.consumer,
            store.processed_messages.c.event_id == event.event_id))
        log.error("delivery failed", extra={"delivery_id": row.delivery_id,
                                            "permanent": permanent, "attempts": attempts,
                                            "error": error[:300]})

    async def publish_dead_letters(self) -> None:
        async with self.runtime.store.sessions() as session:
            rows = (await session.execute(select(deliveries).where(
                deliveries.c.dead_letter_pending.is_(True)).limit(100))).all()
        for row in rows:
            letter = DeadLetter(
                consumer=self.consumer, original_subject=row.event_subject,
                original_msg_id=dict(row.event_headers).get(MSG_ID),
                deliveries=max(row.attempts, 1), error=(row.error or "failed")[:4000],
                payload_b64=base64.b64encode(bytes(row.event)).decode(),
                headers=dict(row.event_headers), mail_key=row.mail_key,
            )
            await self.runtime.broker.publish(
                letter.model_dump_json().encode(), subject=dlq_subject(self.consumer),
                headers={MSG_ID: f"dlq:{self.consumer}:{row.delivery_id}:{row.attempts}"},
                stream=DLQ_STREAM, timeout=self.settings.publish_timeout_seconds,
            )
            async with self.runtime.store.transaction() as session:
                await session.execute(update(deliveries).where(
                    deliveries.c.delivery_id == row.delivery_id,
                    deliveries.c.status == Status.FAILED).values(dead_letter_pending=False))

    async def update_gauges(self) -> None:
        async with self.runtime.store.sessions() as session:
            depth = await session.scalar(select(func.count()).select_from(deliveries).where(
                deliveries.c.status.in_([Status.PENDING, Status.SENDING])))
            oldest = await session.scalar(select(func.min(deliveries.c.next_attempt_at)).where(
                deliveries.c.status == Status.PENDING))
        self.metrics.queue.set(depth or 0)
        oldest = store.utc(oldest)
        age = (utcnow() - oldest).total_seconds() if oldest is not None else 0.0
        self.metrics.oldest.set(max(age, 0.0))
