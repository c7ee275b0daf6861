"""The projection's engine: an ordered consumer on POSTROOM_EVENTS from the position kept in
the console's store; each batch of messages is applied and the position advanced in one
transaction, then the batch's events go to the live feed.

Robustness: a message at or below the stored position is skipped (a redelivery after a
reconnect or a consumer reset changes nothing); when the stream is ahead but nothing arrived
for ``CONSOLE_RESUBSCRIBE_SECONDS`` (a consumer lost with the connection), it subscribes again
from the stored position; an event that cannot be applied is logged with its sequence and
mail key and recorded in ``projection_failures``, and the projection goes on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import nats.errors
from nats.js import api
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from sqlalchemy import bindparam, delete, insert, select, update

from postroom_contracts import EVENTS, EVENTS_STREAM
from postroom_runtime import ServiceRuntime
from postroom_runtime.store import utcnow

from . import store
from .handlers import Batch, Incoming, apply, mail_key_of

log = logging.getLogger(__name__)

OnApplied = Callable[[Batch], Awaitable[None]]
IDLE_HEARTBEAT_SECONDS = 2.0
LAG_POLL_SECONDS = 1.0
BATCH_GAP_SECONDS = 0.003
BATCH_WINDOW_SECONDS = 0.05


class Metrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.position = Gauge("postroom_console_projection_position",
                              "Stream sequence the projection has applied up to",
                              registry=registry)
        self.stream_last = Gauge("postroom_console_stream_last_sequence",
                                 "Last sequence of POSTROOM_EVENTS", registry=registry)
        self.lag = Gauge("postroom_console_projection_lag",
                         "Events in the stream the projection has not applied yet",
                         registry=registry)
        self.events = Counter("postroom_console_projected_events",
                              "Events applied to the projection", registry=registry)
        self.failures = Counter("postroom_console_projection_failures",
                                "Events that could not be applied (projection_failures)",
                                registry=registry)
        self.batch_seconds = Histogram(
            "postroom_console_projection_batch_seconds",
            "Time to apply and commit one batch",
            buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
            registry=registry)


class Projector:
    def __init__(self, runtime: ServiceRuntime, *, batch_size: int,
                 resubscribe_seconds: float, metrics: Metrics,
                 on_applied: OnApplied | None = None) -> None:
        self.runtime = runtime
        self.batch_size = batch_size
        self.resubscribe_seconds = resubscribe_seconds
        self.metrics = metrics
        self.on_applied = on_applied
        self.position = 0
        self.stream_last = 0
        self.rebuilt_at: Any = None
        self._task: asyncio.Task[None] | None = None
        self._lag_task: asyncio.Task[None] | None = None
        self._sub: Any = None
        self._last_activity = time.monotonic()
        self._resubscribe = asyncio.Event()
        self._lock = asyncio.Lock()  # a batch and a rebuild never overlap
        # bumped by a rebuild: messages a consumer of an earlier generation still holds are
        # dropped instead of being applied on top of the emptied read model
        self.generation = 0

    # -- lifecycle -----------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    @property
    def lag(self) -> int:
        return max(0, self.stream_last - self.position)

    async def start(self) -> None:
        self.position, self.rebuilt_at = await self._load_position()
        self.metrics.position.set(self.position)
        await self.refresh_stream_last()
        self._task = asyncio.create_task(self._run(), name="console-projector")
        self._lag_task = asyncio.create_task(self._watch(), name="console-projection-lag")

    async def stop(self) -> None:
        for task in (self._lag_task, self._task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        await self._unsubscribe()

    async def _load_position(self) -> tuple[int, Any]:
        t = store.projection_state
        async with self.runtime.store.transaction() as session:
            row = (await session.execute(
                select(t.c.last_sequence, t.c.rebuilt_at).where(t.c.name == store.PROJECTION))
            ).first()
            if row is None:
                await session.execute(insert(t).values(name=store.PROJECTION, last_sequence=0,
                                                       rebuilt_at=None))
                return 0, None
            return int(row.last_sequence), row.rebuilt_at

    # -- stream position and lag --------------------------------------------------------------

    async def refresh_stream_last(self) -> int:
        info = await self.runtime.js.stream_info(EVENTS_STREAM)
        self.stream_last = int(info.state.last_seq)
        self.metrics.stream_last.set(self.stream_last)
        self.metrics.lag.set(self.lag)
        return self.stream_last

    async def _watch(self) -> None:
        """Keep the lag current; subscribe again when the consumer went quiet while behind."""
        while True:
            await asyncio.sleep(LAG_POLL_SECONDS)
            try:
                await self.refresh_stream_last()
            except Exception as exc:
                log.warning("cannot read the stream's state", extra={"error": str(exc)})
                continue
            quiet = time.monotonic() - self._last_activity
            if self.lag > 0 and quiet > self.resubscribe_seconds:
                log.warning("projection behind and its consumer quiet: subscribing again",
                            extra={"position": self.position, "stream_last": self.stream_last})
                self._last_activity = time.monotonic()
                self._resubscribe.set()

    # -- the consumer --------------------------------------------------------------------------

    async def _subscribe(self) -> Any:
        config = api.ConsumerConfig(
            filter_subjects=list(EVENTS.subjects),
            deliver_policy=api.DeliverPolicy.BY_START_SEQUENCE,
            opt_start_seq=self.position + 1,
            inactive_threshold=60.0,
        )
        self._sub = await self.runtime.js.subscribe(
            "", stream=EVENTS_STREAM, config=config, ordered_consumer=True,
            idle_heartbeat=IDLE_HEARTBEAT_SECONDS)
        self._last_activity = time.monotonic()
        log.info("projection subscribed", extra={"from_sequence": self.position + 1})
        return self._sub

    async def _unsubscribe(self) -> None:
        sub, self._sub = self._sub, None
        if sub is not None:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()

    async def _run(self) -> None:
        delay = 0.5
        while True:
            try:
                generation = self.generation
                sub = await self._subscribe()
                delay = 0.5
                while not self._resubscribe.is_set():
                    try:
                        first = await sub.next_msg(timeout=0.5)
                    except nats.errors.TimeoutError:
                        continue
                    msgs = await self._fill(sub, first)
                    self._last_activity = time.monotonic()
                    await self.apply_messages(msgs, generation)
                self._resubscribe.clear()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("projection consumer failed; subscribing again",
                            extra={"error": f"{type(exc).__name__}: {exc}",
                                   "position": self.position, "retry_in_s": delay})
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10)
            finally:
                await self._unsubscribe()

    async def _fill(self, sub: Any, first: Any) -> list[Any]:
        """A batch: what is buffered, and what keeps arriving (less than BATCH_GAP apart, for
        at most BATCH_WINDOW): catching up, transactions are large; live, an event waits a
        few milliseconds at most."""
        msgs = [first]
        loop = asyncio.get_running_loop()
        until = loop.time() + BATCH_WINDOW_SECONDS
        while len(msgs) < self.batch_size:
            if sub.pending_msgs > 0:
                msgs.append(await sub.next_msg(timeout=1.0))
                continue
            remaining = until - loop.time()
            if remaining <= 0:
                break
            try:
                msgs.append(await sub.next_msg(timeout=min(BATCH_GAP_SECONDS, remaining)))
            except nats.errors.TimeoutError:
                break
        return msgs

    async def apply_messages(self, msgs: list[Any], generation: int | None = None) -> None:
        incoming = []
        for msg in msgs:
            seq = msg.metadata.sequence.stream
            incoming.append(Incoming(seq, msg.subject, dict(msg.headers or {}), msg.data))
        await self.apply_batch(incoming, generation)

    async def apply_batch(self, incoming: list[Incoming], generation: int | None = None) -> None:
        """Apply ``incoming`` (in stream order) in one transaction with the new position.

        When that transaction fails while the store answers, the data is at fault (a value
        one backend refuses): the events are applied one by one, and one that still cannot
        be written is recorded in ``projection_failures`` and skipped. When the store does
        not answer, it raises: the consumer subscribes again from the stored position, so
        nothing is lost or applied twice."""
        async with self._lock:
            if generation is not None and generation != self.generation:
                return
            fresh = [m for m in incoming if m.sequence > self.position]
            if not fresh:
                return
            try:
                await self._commit(fresh)
            except Exception as exc:
                if not await self._store_answers():
                    raise
                log.warning("batch not written; applying its events one by one", extra={
                    "first_sequence": fresh[0].sequence, "last_sequence": fresh[-1].sequence,
                    "error": f"{type(exc).__name__}: {exc}"[:500]})
                for msg in fresh:
                    try:
                        await self._commit([msg])
                    except Exception as one:
                        if not await self._store_answers():
                            raise
                        await self._commit_failure(msg, f"{type(one).__name__}: {one}")

    async def _store_answers(self) -> bool:
        try:
            await asyncio.wait_for(self.runtime.store.ping(), 5)
            return True
        except Exception:
            return False

    async def _commit(self, fresh: list[Incoming]) -> None:
        started = time.perf_counter()
        batch = Batch()
        async with self.runtime.store.transaction() as session:
            await self._load(session, batch, fresh)
            for msg in fresh:
                error = apply(batch, msg)
                if error is not None:
                    log.error("event not applied to the projection", extra={
                        "sequence": msg.sequence, "mail_key": mail_key_of(msg),
                        "subject": msg.subject, "error": error})
            await self._write(session, batch)
        self._advance(batch, len(fresh), time.perf_counter() - started)
        if self.on_applied is not None:
            try:
                await self.on_applied(batch)
            except Exception:
                log.exception("live feed failed")

    async def _commit_failure(self, msg: Incoming, error: str) -> None:
        """An event whose rows cannot be written: recorded, the position moves past it."""
        log.error("event not applied to the projection", extra={
            "sequence": msg.sequence, "mail_key": mail_key_of(msg), "subject": msg.subject,
            "error": error})
        batch = Batch(last_sequence=msg.sequence)
        batch.failures.append({"sequence": msg.sequence, "subject": msg.subject,
                               "mail_key": mail_key_of(msg), "error": error})
        async with self.runtime.store.transaction() as session:
            await self._write(session, batch)
        self._advance(batch, 1, 0.0)

    def _advance(self, batch: Batch, events: int, seconds: float) -> None:
        self.position = batch.last_sequence
        self.metrics.position.set(self.position)
        self.metrics.events.inc(events)
        self.metrics.failures.inc(len(batch.failures))
        self.metrics.lag.set(self.lag)
        self.metrics.batch_seconds.observe(seconds)

    async def _load(self, session: Any, batch: Batch, msgs: list[Incoming]) -> None:
        keys: set[str] = set()
        event_ids: set[str] = set()
        delivery_ids: set[str] = set()
        for msg in msgs:
            key = mail_key_of(msg)
            try:
                payload = msg.payload()
            except ValueError:
                payload = {}
            if payload:
                key = payload.get("mail_key") or key
                if payload.get("event_id"):
                    event_ids.add(str(payload["event_id"]))
                if payload.get("delivery_id"):
                    delivery_ids.add(str(payload["delivery_id"]))
            if isinstance(key, str):
                keys.add(key)
        m, t, d = store.mails, store.timeline, store.deliveries
        if keys:
            for row in (await session.execute(select(m).where(m.c.mail_key.in_(keys)))).all():
                batch.mails[row.mail_key] = dict(row._mapping)
        if event_ids:
            found = await session.execute(select(t.c.event_id).where(t.c.event_id.in_(event_ids)))
            batch.seen_event_ids.update(found.scalars())
        if delivery_ids:
            rows = await session.execute(select(d).where(d.c.delivery_id.in_(delivery_ids)))
            for row in rows.all():
                batch.deliveries[row.delivery_id] = dict(row._mapping)

    async def _write(self, session: Any, batch: Batch) -> None:
        m, d = store.mails, store.deliveries
        fit = store.fit
        new = [fit(m, batch.mails[k]) for k in batch.new_mails]
        if new:
            await session.execute(insert(m), new)
        dirty = [fit(m, batch.mails[k]) for k in batch.dirty_mails - batch.new_mails]
        if dirty:
            columns = [c.name for c in m.columns if c.name != "mail_key"]
            stmt = update(m).where(m.c.mail_key == bindparam("_key")).values(
                {c: bindparam(c) for c in columns})
            await session.execute(stmt, [{**{c: r[c] for c in columns}, "_key": r["mail_key"]}
                                         for r in dirty])
        new_d = [fit(d, batch.deliveries[k]) for k in batch.new_deliveries]
        if new_d:
            await session.execute(insert(d), new_d)
        dirty_d = [fit(d, batch.deliveries[k])
                   for k in batch.dirty_deliveries - batch.new_deliveries]
        if dirty_d:
            columns = [c.name for c in d.columns if c.name != "delivery_id"]
            stmt = update(d).where(d.c.delivery_id == bindparam("_id")).values(
                {c: bindparam(c) for c in columns})
            await session.execute(stmt, [{**{c: r[c] for c in columns},
                                          "_id": r["delivery_id"]} for r in dirty_d])
        if batch.timeline:
            await session.execute(insert(store.timeline),
                                  [fit(store.timeline, r) for r in batch.timeline])
        if batch.failures:
            now = utcnow()
            await session.execute(insert(store.projection_failures), [
                fit(store.projection_failures, {**f, "failed_at": now})
                for f in batch.failures])
        await session.execute(update(store.projection_state)
                              .where(store.projection_state.c.name == store.PROJECTION)
                              .values(last_sequence=batch.last_sequence))

    # -- rebuild -------------------------------------------------------------------------------

    async def rebuild(self) -> None:
        """Drop the read model (not the API keys or corrections) and read the stream again
        from its first message."""
        async with self._lock:
            await self._unsubscribe()
            async with self.runtime.store.transaction() as session:
                for table in store.PROJECTION_TABLES:
                    await session.execute(delete(table))
                now = utcnow()
                await session.execute(update(store.projection_state)
                                      .where(store.projection_state.c.name == store.PROJECTION)
                                      .values(last_sequence=0, rebuilt_at=now))
            self.position = 0
            self.generation += 1
            self.rebuilt_at = now
            self.metrics.position.set(0)
            self._resubscribe.set()  # the consumer loop subscribes again from 1
        log.info("projection rebuilding from the start of the stream")
