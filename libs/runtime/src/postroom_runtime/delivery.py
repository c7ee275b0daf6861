"""Delivery semantics shared by every consumer.

For each JetStream message a consumer:
1. decodes the event; an undecodable payload is poison and goes straight to the dead letters;
2. skips it if ``processed_messages`` already holds (consumer, event_id) — JetStream's dedup
   window is minutes long, this table is kept past the streams' retention;
3. runs the handler inside one store transaction, within a time limit; the handler's outgoing
   events are written to the ``outbox`` table in that same transaction, with the idempotency
   row; while it runs, the message is kept alive with ``in_progress`` heartbeats, so a short
   ack wait brings a killed process's messages back within seconds while a long handler keeps
   its own. A consumer with a ``prepare`` step first runs it outside any transaction, several
   messages at once, and then commits the handlers (which only write) of the messages that are
   ready in one transaction (group commit); a group that fails is written again message by
   message, so a failure stays its message's own;
4. acks right after the commit: publishing the outbox is the job of the service's
   ``OutboxRelay``, a background task that publishes committed rows (``Nats-Msg-Id`` = the
   derived event id, so a re-publish is de-duplicated) whether or not messages arrive, and
   retries with backoff. A committed event is therefore never retried, never dead-lettered,
   and its ack never waits for the backlog;
5. on an error (or past the time limit) naks with exponential backoff; after ``max_deliver``
   attempts (or on a ``PoisonMessage``) copies the message to ``postroom.dlq.<consumer>`` and
   terminates it.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import contextvars
import logging
import traceback
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import timedelta
from enum import Enum
from typing import Any, Generic, TypeVar

from opentelemetry import context as otel_context
from opentelemetry import propagate
from pydantic import ValidationError
from sqlalchemy import Table, delete, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from postroom_contracts import DLQ_STREAM, EVENTS_STREAM, DeadLetter, Event, decode, dlq_subject

from .jetstream import MSG_ID, encode, event_headers
from .logs import mail_key_var
from .store import Store, utcnow

log = logging.getLogger(__name__)

E = TypeVar("E", bound=Event)


class PoisonMessage(Exception):
    """The message can never succeed: dead-letter it now instead of retrying."""


@dataclass
class Outbox:
    """Events a handler emits; written in the handler's transaction, published after commit.

    With ``rows`` (the consumer's own outboxes) an emitted event is collected there and the
    consumer inserts all of a transaction's rows in one statement before it commits."""

    session: AsyncSession
    table: Table
    emitted: list[Event] = field(default_factory=list)
    rows: list[dict[str, Any]] | None = None

    async def emit(self, event: Event) -> None:
        self.emitted.append(event)
        headers = event_headers(event)
        # the relay publishes later, in its own task: keep the trace this event belongs to
        propagate.inject(headers)
        row = {"event_id": event.event_id, "subject": event.nats_subject,
               "payload": encode(event), "headers": headers, "created_at": utcnow()}
        if self.rows is not None:
            self.rows.append(row)
        else:
            await self.session.execute(insert(self.table).values(**row))


Handler = Callable[[E, AsyncSession, Outbox], Awaitable[None]]
# with a prepare step: handler(event, session, outbox, prepared)
PreparedHandler = Callable[[E, AsyncSession, Outbox, Any], Awaitable[None]]
Prepare = Callable[[E], Awaitable[Any]]


def backoff_delay(attempt: int, base: float, cap: float) -> float:
    """Delay before redelivery number ``attempt + 1`` (attempt counts from 1)."""
    return float(min(cap, base * (2 ** max(0, attempt - 1))))


class OutboxRelay:
    """Publishes committed outbox rows, oldest first, and marks them published.

    One relay per service process and outbox table runs in the background (``start``): it
    flushes when a consumer commits (``kick``), every ``poll_interval`` seconds regardless (rows
    committed by a process that died, or by another replica), and after a failure with backoff.
    On PostgreSQL a flush claims its page with ``FOR UPDATE SKIP LOCKED`` and holds the claim
    until the rows are marked, so replicas never publish or mark the same rows; SQLite has one
    writer and one relay per process.
    """

    def __init__(
        self, store: Store, table: Table, broker: Any, timeout: float = 5.0, *,
        page: int = 500, poll_interval: float = 2.0, backoff_base: float = 0.2,
        backoff_max: float = 30.0,
    ) -> None:
        self.store = store
        self.table = table
        self.broker = broker
        self.timeout = timeout
        self.page = page
        self.poll_interval = poll_interval
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self.published_total = 0
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._flush_lock = asyncio.Lock()

    def kick(self) -> None:
        """Something was committed: flush soon."""
        self._wake.set()

    def start(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name=f"outbox-relay:{self.table.name}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        failures = 0
        while True:
            self._wake.clear()
            try:
                await self.flush()
                failures = 0
                wait = self.poll_interval
            except Exception as exc:
                failures += 1
                wait = backoff_delay(failures, self.backoff_base, self.backoff_max)
                log.warning("outbox publish failed; will retry",
                            extra={"table": self.table.name, "retry_in_s": wait,
                                   "failures": failures, "error": _describe(exc)})
            if failures:
                await asyncio.sleep(wait)  # a kick must not bypass the backoff
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), wait)

    async def flush(self, limit: int | None = None) -> int:
        """Publish every unpublished row now; raise the first publish error after marking
        what did get published."""
        page = limit or self.page
        published = 0
        async with self._flush_lock:  # one flush at a time in this process
            while True:
                count, full = await self._flush_page(page)
                published += count
                if not full:
                    return published

    async def _flush_page(self, page: int) -> tuple[int, bool]:
        columns = (self.table.c.id, self.table.c.subject, self.table.c.payload,
                   self.table.c.headers)
        query = (select(*columns).where(self.table.c.published_at.is_(None))
                 .order_by(self.table.c.id).limit(page))
        if self.store.is_sqlite:
            # a SQLite read snapshot cannot be upgraded to a write once another connection
            # committed: read, publish, then mark in a transaction of its own
            async with self.store.sessions() as session:
                rows = (await session.execute(query)).all()
            done, error = await self._publish(rows)
            if done:
                async with self.store.transaction() as session:
                    await self._mark(session, done)
        else:
            async with self.store.transaction() as session:
                rows = (await session.execute(
                    query.with_for_update(skip_locked=True))).all()
                done, error = await self._publish(rows)
                if done:
                    await self._mark(session, done)
        self.published_total += len(done)
        if error is not None:
            raise error
        return len(done), len(rows) == page

    async def _mark(self, session: AsyncSession, ids: list[int]) -> None:
        await session.execute(update(self.table).where(self.table.c.id.in_(ids))
                              .values(published_at=utcnow()))

    async def _publish(self, rows: Any) -> tuple[list[int], BaseException | None]:
        """Publish a page (pipelined, in order on the wire); the ids that JetStream acked."""
        results = await asyncio.gather(*(self._publish_one(row) for row in rows),
                                       return_exceptions=True)
        done = [row.id for row, result in zip(rows, results, strict=True)
                if not isinstance(result, BaseException)]
        errors = [r for r in results if isinstance(r, BaseException)]
        return done, (errors[0] if errors else None)

    async def _publish_one(self, row: Any) -> None:
        headers = dict(row.headers)
        # publish inside the trace of the handler that emitted the event
        token = otel_context.attach(propagate.extract(headers))
        try:
            await self.broker.publish(
                bytes(row.payload), subject=row.subject, headers=headers,
                stream=EVENTS_STREAM, timeout=self.timeout,
            )
        finally:
            otel_context.detach(token)


async def prune(store: Store, *, processed: Table | None = None, outbox: Table | None = None,
                processed_retention: float, outbox_retention: float) -> dict[str, int]:
    """Delete idempotency rows and published outbox rows past their retention."""
    now = utcnow()
    removed: dict[str, int] = {}
    async with store.transaction() as session:
        if processed is not None:
            cutoff = now - timedelta(seconds=processed_retention)
            result = await session.execute(
                delete(processed).where(processed.c.processed_at < cutoff))
            removed[processed.name] = result.rowcount or 0
        if outbox is not None:
            cutoff = now - timedelta(seconds=outbox_retention)
            result = await session.execute(
                delete(outbox).where(outbox.c.published_at.is_not(None),
                                     outbox.c.published_at < cutoff))
            removed[outbox.name] = result.rowcount or 0
    return removed


@dataclass
class DeliveryPolicy:
    max_deliver: int = 5
    backoff_base: float = 1.0
    backoff_max: float = 60.0
    publish_timeout: float = 5.0
    handler_timeout: float = 300.0  # one attempt's time limit
    heartbeat_interval: float = 5.0  # in_progress while a message is held; < the ack wait


class Outcome(Enum):
    ACK = "ack"
    NACK = "nack"
    REJECT = "reject"


@dataclass(eq=False)
class _Write:
    """One message's write phase (its handler in a transaction), waiting for a writer."""

    msg: Any
    event: Any
    attempt: int
    prepared: Any
    context: contextvars.Context  # the message's own: its trace, its mail key in the logs
    result: asyncio.Future[tuple[Outcome, float | None]]
    taken: bool = False


class Consumer(Generic[E]):
    """Wraps a handler with Postroom's delivery semantics; register ``consumer.handle``.

    Without ``prepare`` each message runs its handler in its own transaction, ``concurrency``
    at a time. With ``prepare`` (work that needs no transaction and may be done twice: fetch,
    parse, store content-addressed blobs) up to ``concurrency`` messages prepare at once, and
    their write phases (the handler, which then only writes) run in at most
    ``write_concurrency`` transactions at a time, each committing every write phase that is
    ready, up to ``group_max`` (group commit: one commit and one fsync for many messages). A
    group whose transaction fails is rolled back and each of its messages runs again alone,
    so a failure stays the failing message's own.
    """

    def __init__(
        self,
        *,
        name: str,
        event_type: type[E],
        handler: Handler[E] | PreparedHandler[E],
        store: Store,
        processed: Table,
        outbox: Table,
        broker: Any,
        policy: DeliveryPolicy,
        relay: OutboxRelay | None = None,
        on_dead_letter: Callable[[E | None, str], Awaitable[None]] | None = None,
        concurrency: int = 1,
        prepare: Prepare[E] | None = None,
        write_concurrency: int = 1,
        group_max: int = 64,
    ) -> None:
        self.name = name  # the durable consumer name, also the idempotency scope
        self.event_type = event_type
        self.handler = handler
        self.prepare = prepare
        self.store = store
        self.processed = processed
        self.outbox_table = outbox
        self.broker = broker
        self.policy = policy
        self.relay = relay or OutboxRelay(store, outbox, broker, policy.publish_timeout)
        self.on_dead_letter = on_dead_letter
        # FastStream runs a fetched batch concurrently: bound it (SQLite has one writer), and
        # never run two copies of the same event at once in this process.
        self._slots = asyncio.Semaphore(concurrency)
        self._write_slots = asyncio.Semaphore(write_concurrency)
        self.group_max = group_max
        self._waiting: deque[_Write] = deque()  # prepared, waiting for a writer
        self._in_flight: set[str] = set()
        self._lookups: dict[str, list[asyncio.Future[bool]]] = {}
        self._lookup_task: asyncio.Task[None] | None = None
        self.groups_committed = 0  # transactions that committed more than one message

    async def handle(self, msg: Any) -> None:
        """Entry point for a FastStream NATS message (ack policy MANUAL)."""
        heartbeat = asyncio.create_task(self._heartbeat(msg))
        delay: float | None = None
        try:
            outcome, delay = await self._decide(msg)
        finally:
            heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await heartbeat
        if outcome is Outcome.ACK:
            await msg.ack()
        elif outcome is Outcome.NACK:
            await msg.nack(delay=delay)
        else:
            await msg.reject()

    async def _heartbeat(self, msg: Any) -> None:
        """Tell JetStream the message is still being worked on (it is waiting for a slot, or
        its handler runs): the ack wait can then be short."""
        raw = msg.raw_message
        if not hasattr(raw, "in_progress"):
            return
        while True:
            await asyncio.sleep(self.policy.heartbeat_interval)
            try:
                await raw.in_progress()
            except Exception as exc:  # connection gone: redelivery will sort it out
                log.debug("in_progress failed", extra={"error": str(exc)})

    async def _decide(self, msg: Any) -> tuple[Outcome, float | None]:
        meta = _metadata(msg.raw_message)
        attempt = meta.num_delivered if meta else 1
        try:
            event = decode(self.event_type, msg.body)
        except ValidationError as exc:
            return await self._dead_letter(
                msg, attempt, f"undecodable {self.event_type.event_type}: "
                f"{exc.error_count()} errors: {exc.errors()[0]['msg']}", None)
        if event.event_id in self._in_flight:
            # a duplicate of an event being handled right now: look again once it is done
            return Outcome.NACK, self.policy.backoff_base
        self._in_flight.add(event.event_id)
        token = mail_key_var.set(event.mail_key)
        try:
            if attempt > self.policy.max_deliver and not await self._processed(event):
                # delivered again after the last attempt and never committed: the process died
                # while handling it (a committed event whose ack was lost is acked instead)
                return await self._dead_letter(msg, attempt, "gave up: handler never finished",
                                               event)
            if self.prepare is None:
                async with self._slots:
                    return await self._write_alone(_Write(
                        msg, event, attempt, None, contextvars.copy_context(),
                        asyncio.get_running_loop().create_future()))
            return await self._prepare_and_write(msg, event, attempt)
        finally:
            mail_key_var.reset(token)
            self._in_flight.discard(event.event_id)

    async def _prepare_and_write(self, msg: Any, event: E, attempt: int
                                 ) -> tuple[Outcome, float | None]:
        assert self.prepare is not None
        try:
            if await self._seen(event.event_id):  # a copy of an event done before: no work
                log.info("duplicate delivery skipped", extra={"consumer": self.name})
                return Outcome.ACK, None
            async with self._slots, asyncio.timeout(self.policy.handler_timeout):
                prepared = await self.prepare(event)
        except PoisonMessage as exc:
            return await self._dead_letter(msg, attempt, f"poison: {exc}", event)
        except Exception as exc:
            return await self._failed(msg, attempt, exc, event)
        job = _Write(msg, event, attempt, prepared, contextvars.copy_context(),
                     asyncio.get_running_loop().create_future())
        self._waiting.append(job)
        async with self._write_slots:
            # the writer commits what is waiting, in arrival order, until this one is taken
            while not job.taken:
                group: list[_Write] = []
                while self._waiting and len(group) < self.group_max:
                    taken = self._waiting.popleft()
                    taken.taken = True
                    group.append(taken)
                await self._write_group(group)
        return await job.result

    async def _write_group(self, group: list[_Write]) -> None:
        try:
            if len(group) > 1:
                try:
                    outcomes = await self._write_together(group)
                except Exception as exc:
                    log.info("group transaction failed; each message again on its own",
                             extra={"consumer": self.name, "messages": len(group),
                                    "error": _describe(exc)})
                else:
                    self.groups_committed += 1
                    for job, outcome in zip(group, outcomes, strict=True):
                        job.result.set_result(outcome)
                    return
            for job in group:
                # in the message's own context: its trace and mail key in the logs
                job.result.set_result(await asyncio.create_task(
                    self._write_alone(job), context=job.context))
        finally:
            for job in group:  # cancelled (shutting down): the messages come back
                if not job.result.done():
                    job.result.cancel()

    async def _write_together(self, group: list[_Write]) -> list[tuple[Outcome, float | None]]:
        """Every handler of ``group`` in one transaction; raises if any fails."""
        rows: list[dict[str, Any]] = []
        now = utcnow()
        async with self.store.transaction() as session:
            # the idempotency rows first (in one order, so two replicas cannot deadlock): an
            # event committed before, or by another replica right now, fails the group, and
            # each of its messages then looks for itself
            await session.execute(insert(self.processed), sorted((
                {"consumer": self.name, "event_id": job.event.event_id, "processed_at": now}
                for job in group), key=lambda row: row["event_id"]))
            for job in group:
                outbox = Outbox(session, self.outbox_table, rows=rows)
                await asyncio.create_task(self._call_handler(job, session, outbox),
                                          context=job.context)
            if rows:
                await session.execute(insert(self.outbox_table), rows)
        self.relay.kick()
        return [(Outcome.ACK, None)] * len(group)

    async def _call_handler(self, job: _Write, session: AsyncSession, outbox: Outbox) -> None:
        async with asyncio.timeout(self.policy.handler_timeout):
            if self.prepare is None:
                await self.handler(job.event, session, outbox)  # type: ignore[call-arg]
            else:
                await self.handler(job.event, session, outbox, job.prepared)  # type: ignore[call-arg]

    async def _finish(self, session: AsyncSession, jobs: list[_Write],
                      rows: list[dict[str, Any]]) -> None:
        """The outbox rows and the idempotency rows, in the handlers' transaction."""
        if rows:
            await session.execute(insert(self.outbox_table), rows)
        if jobs:
            now = utcnow()
            await session.execute(insert(self.processed), [
                {"consumer": self.name, "event_id": job.event.event_id, "processed_at": now}
                for job in jobs])

    async def _write_alone(self, job: _Write) -> tuple[Outcome, float | None]:
        """One message's handler in its own transaction, and what to do with the message."""
        msg, event, attempt = job.msg, job.event, job.attempt
        try:
            rows: list[dict[str, Any]] = []
            async with self.store.transaction() as session:
                done = await self._processed(event, session)
                if not done:
                    await self._call_handler(job, session,
                                             Outbox(session, self.outbox_table, rows=rows))
                    await self._finish(session, [job], rows)
        except PoisonMessage as exc:
            return await self._dead_letter(msg, attempt, f"poison: {exc}", event)
        except Exception as exc:
            if isinstance(exc, IntegrityError) and await self._processed(event):
                # a concurrent replica committed the same event first: it is done
                log.info("event processed concurrently elsewhere", extra={"consumer": self.name})
                return Outcome.ACK, None
            # any other constraint violation rolled the handler back: retry, never ack it
            return await self._failed(msg, attempt, exc, event)
        if done:
            log.info("duplicate delivery skipped", extra={"consumer": self.name})
        else:
            self.relay.kick()
        return Outcome.ACK, None

    async def _failed(self, msg: Any, attempt: int, exc: BaseException, event: E
                      ) -> tuple[Outcome, float | None]:
        """An attempt failed: retry with backoff, or dead-letter after the last attempt."""
        error = (f"handler exceeded its time limit of {self.policy.handler_timeout:g} s"
                 if isinstance(exc, TimeoutError) else _describe(exc))
        if attempt >= self.policy.max_deliver:
            return await self._dead_letter(msg, attempt, error, event)
        delay = backoff_delay(attempt, self.policy.backoff_base, self.policy.backoff_max)
        log.warning(
            "handler failed; will retry",
            extra={"consumer": self.name, "attempt": attempt, "retry_in_s": delay,
                   "error": error},
        )
        return Outcome.NACK, delay

    async def _seen(self, event_id: str) -> bool:
        """Whether the idempotency table holds the event; the lookups of the messages that
        arrive together (a fetched batch) share one query."""
        result: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._lookups.setdefault(event_id, []).append(result)
        if self._lookup_task is None:
            self._lookup_task = asyncio.create_task(self._look_up())
        return await result

    async def _look_up(self) -> None:
        try:
            while self._lookups:
                batch, self._lookups = self._lookups, {}
                try:
                    async with self.store.sessions() as session:
                        found = set(await session.scalars(select(self.processed.c.event_id).where(
                            self.processed.c.consumer == self.name,
                            self.processed.c.event_id.in_(list(batch)))))
                except Exception as exc:
                    for waiting in batch.values():
                        for future in waiting:
                            if not future.done():
                                future.set_exception(exc)
                    continue
                for event_id, waiting in batch.items():
                    for future in waiting:
                        if not future.done():
                            future.set_result(event_id in found)
        finally:
            self._lookup_task = None

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

    async def _dead_letter(
        self, msg: Any, attempt: int, error: str, event: E | None
    ) -> tuple[Outcome, float | None]:
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
        try:
            await self.broker.publish(
                letter.model_dump_json().encode(),
                subject=dlq_subject(self.name),
                headers={MSG_ID: f"dlq:{self.name}:{seq}:{attempt}"},
                stream=DLQ_STREAM,
                timeout=self.policy.publish_timeout,
            )
        except Exception as exc:
            # keep the message: it is dead-lettered on its next delivery
            log.warning("dead-letter publish failed; will retry",
                        extra={"consumer": self.name, "error": _describe(exc)})
            return Outcome.NACK, self.policy.backoff_max
        log.error("message dead-lettered",
                  extra={"consumer": self.name, "attempt": attempt, "error": error[:500],
                         "mail_key": letter.mail_key})
        if self.on_dead_letter is not None:
            try:
                await self.on_dead_letter(event, error)
                self.relay.kick()
            except Exception:
                log.exception("dead-letter hook failed", extra={"consumer": self.name})
        return Outcome.REJECT, None


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
