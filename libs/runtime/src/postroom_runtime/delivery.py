"""Delivery semantics shared by every consumer.

For each JetStream message a consumer:
1. decodes the event; an undecodable payload is poison and goes straight to the dead letters;
2. skips it if ``processed_messages`` already holds (consumer, event_id) — JetStream's dedup
   window is minutes long, this table is forever;
3. runs the handler inside one store transaction; the handler's outgoing events are written to
   the ``outbox`` table in that same transaction, with the idempotency row;
4. after commit, publishes the outbox (``Nats-Msg-Id`` = derived event id, so a re-publish after
   a crash is de-duplicated) and only then acks;
5. on an error naks with exponential backoff; after ``max_deliver`` attempts (or on a
   ``PoisonMessage``) copies the message to ``postroom.dlq.<consumer>`` and terminates it.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import traceback
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from pydantic import ValidationError
from sqlalchemy import Table, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from postroom_contracts import DLQ_STREAM, EVENTS_STREAM, DeadLetter, Event, dlq_subject

from .jetstream import MSG_ID, encode, event_headers
from .logs import mail_key_var
from .store import Store, utcnow

log = logging.getLogger(__name__)

E = TypeVar("E", bound=Event)


class PoisonMessage(Exception):
    """The message can never succeed: dead-letter it now instead of retrying."""


@dataclass
class Outbox:
    """Events a handler emits; written in the handler's transaction, published after commit."""

    session: AsyncSession
    table: Table
    emitted: list[Event] = field(default_factory=list)

    async def emit(self, event: Event) -> None:
        self.emitted.append(event)
        await self.session.execute(
            insert(self.table).values(
                event_id=event.event_id,
                subject=event.nats_subject,
                payload=encode(event),
                headers=event_headers(event),
                created_at=utcnow(),
            )
        )


Handler = Callable[[E, AsyncSession, Outbox], Awaitable[None]]


def backoff_delay(attempt: int, base: float, cap: float) -> float:
    """Delay before redelivery number ``attempt + 1`` (attempt counts from 1)."""
    return float(min(cap, base * (2 ** max(0, attempt - 1))))


class OutboxRelay:
    """Publishes committed outbox rows, oldest first, and marks them published."""

    def __init__(self, store: Store, table: Table, broker: Any, timeout: float = 5.0) -> None:
        self.store = store
        self.table = table
        self.broker = broker
        self.timeout = timeout

    async def flush(self, limit: int = 500) -> int:
        published = 0
        while True:
            async with self.store.sessions() as session:
                rows = (
                    await session.execute(
                        select(self.table.c.id, self.table.c.subject, self.table.c.payload,
                               self.table.c.headers)
                        .where(self.table.c.published_at.is_(None))
                        .order_by(self.table.c.id)
                        .limit(limit)
                    )
                ).all()
            if not rows:
                return published
            done: list[int] = []
            try:
                for row in rows:
                    await self.broker.publish(
                        bytes(row.payload), subject=row.subject, headers=dict(row.headers),
                        stream=EVENTS_STREAM, timeout=self.timeout,
                    )
                    done.append(row.id)
            finally:
                # one commit for the page; rows published before a failure are marked too
                # (if this commit is lost they are published again: Nats-Msg-Id dedups them)
                if done:
                    async with self.store.transaction() as session:
                        await session.execute(
                            update(self.table).where(self.table.c.id.in_(done))
                            .values(published_at=utcnow())
                        )
            published += len(done)
            if len(rows) < limit:
                return published


@dataclass
class DeliveryPolicy:
    max_deliver: int = 5
    backoff_base: float = 1.0
    backoff_max: float = 60.0
    publish_timeout: float = 5.0


class Consumer(Generic[E]):
    """Wraps a handler with Postroom's delivery semantics; register ``consumer.handle``."""

    def __init__(
        self,
        *,
        name: str,
        event_type: type[E],
        handler: Handler[E],
        store: Store,
        processed: Table,
        outbox: Table,
        broker: Any,
        policy: DeliveryPolicy,
        on_dead_letter: Callable[[E | None, str], Awaitable[None]] | None = None,
        concurrency: int = 1,
    ) -> None:
        self.name = name
        self.event_type = event_type
        self.handler = handler
        self.store = store
        self.processed = processed
        self.outbox_table = outbox
        self.broker = broker
        self.policy = policy
        self.relay = OutboxRelay(store, outbox, broker, policy.publish_timeout)
        self.on_dead_letter = on_dead_letter
        # FastStream runs a fetched batch concurrently: bound it (SQLite has one writer), and
        # never run two copies of the same event at once in this process.
        self._slots = asyncio.Semaphore(concurrency)
        self._in_flight: set[str] = set()

    async def handle(self, msg: Any) -> None:
        """Entry point for a FastStream NATS message (ack policy MANUAL)."""
        meta = _metadata(msg.raw_message)
        attempt = meta.num_delivered if meta else 1
        try:
            event = self.event_type.model_validate_json(msg.body)
        except ValidationError as exc:
            await self._dead_letter(msg, attempt, f"undecodable {self.event_type.event_type}: "
                                    f"{exc.error_count()} errors: {exc.errors()[0]['msg']}", None)
            return
        if event.event_id in self._in_flight:
            # a duplicate of an event being handled right now: look again once it is done
            await msg.nack(delay=self.policy.backoff_base)
            return
        self._in_flight.add(event.event_id)
        token = mail_key_var.set(event.mail_key)
        try:
            async with self._slots:
                await self._process(msg, event, attempt)
        finally:
            mail_key_var.reset(token)
            self._in_flight.discard(event.event_id)

    async def _process(self, msg: Any, event: E, attempt: int) -> None:
        if attempt > self.policy.max_deliver and not await self._processed(event):
            # delivered again after the last attempt and never committed: the process died
            # while handling it (a committed event whose ack was lost is acked below instead)
            await self._dead_letter(msg, attempt, "gave up: handler never finished", event)
            return
        try:
            async with self.store.transaction() as session:
                done = await self._processed(event, session)
                if not done:
                    await self.handler(event, session, Outbox(session, self.outbox_table))
                    await session.execute(
                        insert(self.processed).values(
                            consumer=self.name, event_id=event.event_id, processed_at=utcnow()
                        )
                    )
            if done:
                log.info("duplicate delivery skipped", extra={"consumer": self.name})
            await self.relay.flush()
        except PoisonMessage as exc:
            await self._dead_letter(msg, attempt, f"poison: {exc}", event)
            return
        except Exception as exc:
            if isinstance(exc, IntegrityError) and await self._processed(event):
                # a concurrent replica committed the same event first: it is done
                log.info("event processed concurrently elsewhere", extra={"consumer": self.name})
                await self.relay.flush()
                await msg.ack()
                return
            # any other constraint violation rolled the handler back: retry, never ack it
            if attempt >= self.policy.max_deliver:
                await self._dead_letter(msg, attempt, _describe(exc), event)
                return
            delay = backoff_delay(attempt, self.policy.backoff_base, self.policy.backoff_max)
            log.warning(
                "handler failed; will retry",
                extra={"consumer": self.name, "attempt": attempt, "retry_in_s": delay,
                       "error": _describe(exc)},
            )
            await msg.nack(delay=delay)
            return
        await msg.ack()

    async def _processed(self, event: E, session: AsyncSession | None = None) -> bool:
        """Whether this consumer's idempotency table holds the event (committed before)."""
        query = select(self.processed.c.event_id).where(
            self.processed.c.consumer == self.name,
            self.processed.c.event_id == event.event_id,
        )
        if session is not None:
            return await session.scalar(query) is not None
        async with self.store.sessions() as own:
            return await own.scalar(query) is not None

    async def _dead_letter(self, msg: Any, attempt: int, error: str, event: E | None) -> None:
        raw = msg.raw_message
        meta = _metadata(raw)
        seq = meta.sequence.stream if meta else None
        headers = {k: v for k, v in (raw.headers or {}).items()}
        letter = DeadLetter(
            consumer=self.name,
            original_subject=raw.subject,
            original_msg_id=headers.get(MSG_ID),
            stream_sequence=seq,
            deliveries=attempt,
            error=error[:4000],
            payload_b64=base64.b64encode(msg.body).decode(),
            headers=headers,
            mail_key=event.mail_key if event else headers.get("Postroom-Mail-Key"),
        )
        await self.broker.publish(
            letter.model_dump_json().encode(),
            subject=dlq_subject(self.name),
            headers={MSG_ID: f"dlq:{self.name}:{seq}:{attempt}"},
            stream=DLQ_STREAM,
            timeout=self.policy.publish_timeout,
        )
        log.error("message dead-lettered",
                  extra={"consumer": self.name, "attempt": attempt, "error": error[:500],
                         "mail_key": letter.mail_key})
        if self.on_dead_letter is not None:
            try:
                await self.on_dead_letter(event, error)
                await self.relay.flush()
            except Exception:
                log.exception("dead-letter hook failed", extra={"consumer": self.name})
        await msg.reject()


def _metadata(raw: Any) -> Any:
    """JetStream metadata of a message, or None (core NATS, or FastStream's test broker)."""
    try:
        return raw.metadata
    except Exception:
        return None


def _describe(exc: BaseException) -> str:
    last = traceback.extract_tb(exc.__traceback__)[-1:] if exc.__traceback__ else []
    where = f" at {last[0].filename.rsplit('/', 1)[-1]}:{last[0].lineno}" if last else ""
    return f"{type(exc).__name__}: {exc}{where}"
