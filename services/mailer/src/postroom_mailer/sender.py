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
from dataclasses import dataclass
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


@dataclass(frozen=True)
class Attempt:
    outcome: smtp.Outcome
    relay: str
    signed: bool


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
            stale = select(deliveries.c.delivery_id).where(
                deliveries.c.status == Status.CLAIMED)
            if not self.runtime.store.is_sqlite:
                stale = stale.where(deliveries.c.claimed_at < now - timedelta(
                    seconds=self.settings.mailer_send_lease_seconds))
            # claimed but never handed to the relay: certainly not sent, simply due again
            await session.execute(update(deliveries).where(
                deliveries.c.delivery_id.in_(stale.scalar_subquery())).values(
                status=Status.PENDING, claimed_by=None, updated_at=now))
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
            await session.execute(update(deliveries).where(deliveries.c.delivery_id.in_(ids))
                                  .values(status=Status.CLAIMED, claimed_by=self.instance,
                                          claimed_at=now, updated_at=now))
        return rows

    async def mark_sending(self, rows: list[Any]) -> None:
        """Committed right before the conversations: a crash from here on leaves these rows
        'sending' (uncertain); the rest of the claim stays 'claimed' (certainly not sent)."""
        now = utcnow()
        async with self.runtime.store.transaction() as session:
            await session.execute(update(deliveries).where(
                deliveries.c.delivery_id.in_([r.delivery_id for r in rows])).values(
                status=Status.SENDING, attempts=deliveries.c.attempts + 1, claimed_at=now,
                updated_at=now))

    async def send_due(self) -> int:
        """Claim a batch, then send it in waves of ``MAILER_SEND_CONCURRENCY`` conversations:
        each wave is committed 'sending' before it starts, and its results are recorded in
        one transaction (on SQLite every commit is an fsync; one per mail would be the
        ceiling)."""
        rows = await self.claim(self.settings.mailer_send_batch)
        step = self.settings.mailer_send_concurrency
        for start in range(0, len(rows), step):
            wave = rows[start:start + step]
            await self.mark_sending(wave)
            results = await asyncio.gather(*(self._deliver_safely(row) for row in wave))
            await self.record(list(zip(wave, results, strict=True)))
        return len(rows)

    async def _deliver_safely(self, row: Any) -> Attempt:
        try:
            return await self.deliver(row)
        except Exception as exc:  # e.g. the capture directory is not writable
            log.exception("send failed", extra={"delivery_id": row.delivery_id})
            return Attempt(smtp.Outcome("temporary", f"{type(exc).__name__}: {exc}"),
                           "capture" if self.relay is None else self.relay.address, False)

    # --- one delivery ------------------------------------------------------------------------

    async def deliver(self, row: Any) -> Attempt:
        """Hand one message over: capture, or one SMTP conversation (DKIM-signed first)."""
        message = bytes(row.message)
        recipients = list(row.recipients)
        started = time.perf_counter()
        if self.relay is None:
            await asyncio.to_thread(smtp.capture, self.settings.mailer_capture_dir,
                                    row.delivery_id, row.envelope_from, recipients, message)
            self.metrics.latency.observe(time.perf_counter() - started)
            self.metrics.sends.labels("captured").inc()
            return Attempt(smtp.Outcome("sent", "250 captured", 250, accepted=recipients),
                           "capture", False)
        signed = False
        if self.signer is not None:
            message = self.signer.sign(message)
            signed = True
        outcome = await smtp.send(self.relay, row.envelope_from, recipients, message)
        self.metrics.latency.observe(time.perf_counter() - started)
        self.metrics.sends.labels({"sent": "sent", "temporary": "temp_failed",
                                   "permanent": "failed"}[outcome.result]).inc()
        answered = outcome.code is not None
        self.metrics.relay_up.set(1 if answered else 0)
        self.last_relay_error = None if answered else outcome.response
        return Attempt(outcome, self.relay.address, signed)

    async def record(self, group: list[tuple[Any, Attempt]]) -> None:
        """The results of several conversations, with their events, in one transaction."""
        failed = False
        async with self.runtime.store.transaction() as session:
            for row, result in group:
                failed |= await self._record_one(session, row, result)
        self._outbox_relay.kick()
        if failed:
            self.kick()  # publish the dead letters at once

    async def _record_one(self, session: Any, row: Any, result: Attempt) -> bool:
        attempt = row.attempts + 1
        outcome = result.outcome
        now = utcnow()
        current = (await session.execute(select(deliveries).where(
            deliveries.c.delivery_id == row.delivery_id))).one()
        if current.status != Status.SENDING or current.claimed_by != self.instance:
            log.warning("delivery taken over while sending; result not recorded",
                        extra={"delivery_id": row.delivery_id})
            return False
        if outcome.result == "sent":
            event = decode(DeliveryRequested, bytes(row.event))
            await session.execute(update(deliveries).where(
                deliveries.c.delivery_id == row.delivery_id).values(
                status=Status.SENT, relay=result.relay, smtp_code=outcome.code,
                smtp_response=outcome.response[:4000], refused=outcome.refused,
                dkim_signed=result.signed, error=None, sent_at=now, updated_at=now))
            await Outbox(session, store.outbox).emit(DeliverySent.caused_by(
                event, delivery_id=row.delivery_id, kind=row.kind,
                message_id=row.message_id, to=outcome.accepted, refused=outcome.refused,
                relay=result.relay, smtp_response=outcome.response[:2000],
                attempts=attempt, dkim_signed=result.signed))
            log.info("mail sent", extra={"delivery_id": row.delivery_id,
                                         "attempt": attempt, "relay": result.relay})
            return False
        if outcome.result == "temporary" and attempt <= len(self.schedule):
            delay = self.schedule[attempt - 1]
            await session.execute(update(deliveries).where(
                deliveries.c.delivery_id == row.delivery_id).values(
                status=Status.PENDING, next_attempt_at=now + timedelta(seconds=delay),
                smtp_code=outcome.code, error=outcome.response[:4000], claimed_by=None,
                updated_at=now))
            log.warning("temporary failure; will retry",
                        extra={"delivery_id": row.delivery_id, "attempt": attempt,
                               "retry_in_s": delay, "error": outcome.response[:300]})
            return False
        permanent = outcome.result == "permanent"
        error = outcome.response if permanent else (
            f"gave up after {attempt} attempts: {outcome.response}")
        await self._fail(session, current, attempt, permanent=permanent, code=outcome.code,
                         error=error)
        return True

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
                deliveries.c.status.in_([Status.PENDING, Status.CLAIMED, Status.SENDING])))
            oldest = await session.scalar(select(func.min(deliveries.c.next_attempt_at)).where(
                deliveries.c.status == Status.PENDING))
        self.metrics.queue.set(depth or 0)
        oldest = store.utc(oldest)
        age = (utcnow() - oldest).total_seconds() if oldest is not None else 0.0
        self.metrics.oldest.set(max(age, 0.0))
