"""The projection's engine: an ordered consumer on POSTROOM_EVENTS from the position kept in
the console's store; each batch of messages is applied and the position advanced in one
transaction, then the batch's events go to the live feed.

Replicas: only the replica holding the projector lock (``leader.py``) projects; the others
serve the API from the same store and feed their WebSocket clients by polling the
``timeline`` table for rows after the last sequence they fed (``CONSOLE_FOLLOW_POLL_SECONDS``),
and try to take the lock every ``CONSOLE_LEADER_RETRY_SECONDS``: when the leader dies, one of
them projects on from the stored position. The position update is conditional on the
position the writer started from, so a second writer (a lock lost without noticing) or a
rebuild requested on another replica makes the batch roll back; the writer then reloads the
position and subscribes again.

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
from opentelemetry import propagate, trace
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from sqlalchemy import bindparam, delete, insert, select, update
from sqlalchemy.exc import IntegrityError

from postroom_contracts import EVENTS, EVENTS_STREAM, reply_id_for
from postroom_contracts.subjects import PREFIX
from postroom_runtime import ServiceRuntime, cancel_and_wait
from postroom_runtime.store import utcnow

from . import store
from .handlers import Batch, Incoming, apply, event_type_of, mail_key_of, utc
from .leader import Leadership

log = logging.getLogger(__name__)
tracer = trace.get_tracer("postroom_console.projector")

OnApplied = Callable[[Batch], Awaitable[None]]
OnReset = Callable[[], None]
FOLLOW_PAGE = 1000
REPLY_SUBJECT_PREFIX = f"{PREFIX}.reply."


def same_time(a: Any, b: Any) -> bool:
    """Equal instants (SQLite gives them back without a time zone)."""
    return utc(a) == utc(b)


class Fenced(Exception):
    """The stored position is not the one this writer advanced from (another writer, or a
    rebuild requested on another replica): the batch is rolled back."""
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
                 on_applied: OnApplied | None = None, on_reset: OnReset | None = None,
                 leader_retry_seconds: float = 2.0,
                 follow_poll_seconds: float = 0.25) -> None:
        self.runtime = runtime
        self.batch_size = batch_size
        self.resubscribe_seconds = resubscribe_seconds
        self.metrics = metrics
        self.on_applied = on_applied
        self.on_reset = on_reset
        self.leader_retry_seconds = leader_retry_seconds
        self.follow_poll_seconds = follow_poll_seconds
        self.leadership = Leadership(runtime.store)
        self.leader = False  # this replica holds the projector lock and projects
        self.fed = 0  # the last sequence handed to the live feed (followers: from the table)
        # a rebuild (or a first catch-up from an empty store) refreshes the planner's
        # statistics once it reaches the stream's end: plans made on an empty table's
        # estimates would stay with 100,000 rows (PostgreSQL without autovacuum, SQLite always)
        self.analyze_pending = False
        self.analyzed_at: Any = None
        # a rebuild reads events again that were traced when they were new: no spans for the
        # sequences up to the stream's end at the rebuild
        self.replaying_until = 0
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

    @property
    def live_position(self) -> int:
        """Every event after this sequence reaches the live feed's clients."""
        return self.position if self.leader else self.fed

    async def start(self) -> None:
        self.position, self.rebuilt_at = await self._load_position()
        self.fed = self.position
        self.metrics.position.set(self.position)
        await self.refresh_stream_last()
        self._task = asyncio.create_task(self._main(), name="console-projector")
        self._lag_task = asyncio.create_task(self._watch(), name="console-projection-lag")

    async def stop(self) -> None:
        for task in (self._lag_task, self._task):
            if task is not None:
                await cancel_and_wait(task)
        await self._unsubscribe()
        await self.leadership.release()

    # -- leader or follower --------------------------------------------------------------------

    async def _main(self) -> None:
        while True:
            try:
                acquired = await self.leadership.try_acquire()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("cannot try the projector lock", extra={"error": str(exc)})
                acquired = False
            if acquired:
                await self._lead()
            else:
                await self._follow(self.leader_retry_seconds)

    async def _lead(self) -> None:
        try:
            await self._poll()  # what the previous leader wrote, to this replica's clients
            async with self._lock:
                self.position, self.rebuilt_at = await self._load_position()
                self.fed = self.position
                self.generation += 1
                self.leader = True
                if self.position == 0:
                    self.analyze_pending = True
            self._resubscribe.clear()
            log.info("projector lock taken: this replica projects",
                     extra={"position": self.position})
            run = asyncio.create_task(self._run(), name="console-projector-consumer")
            held = asyncio.create_task(self._hold(), name="console-projector-lock")
            try:
                done, _ = await asyncio.wait({run, held}, return_when=asyncio.FIRST_COMPLETED)
            finally:  # also when this task is cancelled (stop): neither may outlive it
                for task in (run, held):
                    if not task.done():
                        await cancel_and_wait(task)
                    elif not task.cancelled():
                        task.exception()  # retrieved (logged below unless stopping)
            for task in done:
                if not task.cancelled() and task.exception() is not None:
                    log.warning("projector lock lost", extra={"error": str(task.exception())})
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("projecting stopped", extra={"error": f"{type(exc).__name__}: {exc}"})
        finally:
            self.leader = False
            await self._unsubscribe()
            await self.leadership.release()

    async def _hold(self) -> None:
        """Returns (raises) when the lock's connection fails."""
        while True:
            await asyncio.sleep(self.leader_retry_seconds)
            await self.leadership.check()

    async def _follow(self, seconds: float) -> None:
        """Feed the live clients from the table for ``seconds``."""
        until = time.monotonic() + seconds
        while True:
            try:
                await self._poll()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("cannot read the projection", extra={"error": str(exc)})
            if time.monotonic() >= until:
                return
            await asyncio.sleep(self.follow_poll_seconds)

    async def _poll(self) -> None:
        """The rows the leader committed since the last poll, to the live feed."""
        t, m, ps = store.timeline, store.mails, store.projection_state
        while True:
            async with self.runtime.store.sessions() as session:
                state = (await session.execute(
                    select(ps.c.last_sequence, ps.c.rebuilt_at)
                    .where(ps.c.name == store.PROJECTION))).first()
                if state is None:
                    return
                if not same_time(state.rebuilt_at, self.rebuilt_at):  # rebuilt: the clients reload
                    self.rebuilt_at = state.rebuilt_at
                    self.fed = min(self.fed, int(state.last_sequence))
                    if self.on_reset is not None:
                        self.on_reset()
                self.position = int(state.last_sequence)
                self.metrics.position.set(self.position)
                rows = [dict(r._mapping) for r in (await session.execute(
                    select(t).where(t.c.sequence > self.fed, t.c.sequence <= self.position)
                    .order_by(t.c.sequence).limit(FOLLOW_PAGE))).all()]
                keys = {r["mail_key"] for r in rows}
                mails = {}
                if keys:
                    mails = {r.mail_key: dict(r._mapping) for r in (await session.execute(
                        select(m).where(m.c.mail_key.in_(keys)))).all()}
            if not rows:
                self.fed = max(self.fed, self.position)
                return
            batch = Batch(last_sequence=rows[-1]["sequence"])
            batch.applied = [(r, mails.get(r["mail_key"])) for r in rows]
            self.fed = batch.last_sequence
            if self.on_applied is not None:
                try:
                    await self.on_applied(batch)
                except Exception:
                    log.exception("live feed failed")
            if len(rows) < FOLLOW_PAGE:
                self.fed = max(self.fed, self.position)
                return

    async def _refence(self) -> None:
        """The stored position moved under this writer: take it from the store."""
        async with self._lock:
            position, rebuilt_at = await self._load_position()
            self._take_position(position, rebuilt_at)

    def _take_position(self, position: int, rebuilt_at: Any) -> None:
        reset = not same_time(rebuilt_at, self.rebuilt_at) or position < self.position
        if reset:
            self.analyze_pending = True
            self.replaying_until = self.stream_last
        log.warning("the stored position moved under the projector: reloading it",
                    extra={"position": self.position, "stored": position})
        self.position, self.rebuilt_at, self.fed = position, rebuilt_at, position
        self.metrics.position.set(position)
        self.generation += 1
        self._resubscribe.set()  # the consumer subscribes again from the stored position
        if reset and self.on_reset is not None:
            self.on_reset()

    async def _load_position(self) -> tuple[int, Any]:
        t = store.projection_state
        for attempt in range(2):
            try:
                async with self.runtime.store.transaction() as session:
                    row = (await session.execute(
                        select(t.c.last_sequence, t.c.rebuilt_at)
                        .where(t.c.name == store.PROJECTION))).first()
                    if row is None:
                        await session.execute(insert(t).values(
                            name=store.PROJECTION, last_sequence=0, rebuilt_at=None))
                        return 0, None
                    return int(row.last_sequence), row.rebuilt_at
            except IntegrityError:  # another replica inserted it first: read it
                if attempt:
                    raise
        raise AssertionError("unreachable")

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
            if not self.leader:
                continue
            try:
                await self._check_stored_position()
            except Exception as exc:
                log.warning("cannot read the stored position", extra={"error": str(exc)})
            if self.analyze_pending and self.lag == 0 and self.position > 0:
                try:
                    await self.analyze()
                except Exception as exc:
                    log.warning("cannot refresh the statistics", extra={"error": str(exc)})
            quiet = time.monotonic() - self._last_activity
            if self.lag > 0 and quiet > self.resubscribe_seconds:
                log.warning("projection behind and its consumer quiet: subscribing again",
                            extra={"position": self.position, "stream_last": self.stream_last})
                self._last_activity = time.monotonic()
                self._resubscribe.set()

    async def analyze(self) -> None:
        """Refresh the planner's statistics of the projection's tables (SQLite: ``ANALYZE``
        and ``PRAGMA optimize``; PostgreSQL: ``ANALYZE`` of each table)."""
        started = time.perf_counter()
        async with self._lock:
            async with self.runtime.store.engine.begin() as conn:
                if self.runtime.store.is_sqlite:
                    for table in store.PROJECTION_TABLES:
                        await conn.exec_driver_sql(f"ANALYZE {table.name}")
                    await conn.exec_driver_sql("PRAGMA optimize")
                else:
                    await conn.exec_driver_sql("ANALYZE " + ", ".join(
                        t.name for t in store.PROJECTION_TABLES))
            self.analyze_pending = False
            self.analyzed_at = utcnow()
        log.info("projection caught up after a rebuild: statistics refreshed", extra={
            "position": self.position, "seconds": round(time.perf_counter() - started, 3)})

    async def _check_stored_position(self) -> None:
        """A rebuild requested on another replica resets the stored position while this one
        may have nothing to write (a quiet stream): noticed here, not only by a fenced batch."""
        ps = store.projection_state
        async with self._lock:
            async with self.runtime.store.sessions() as session:
                state = (await session.execute(select(ps.c.last_sequence, ps.c.rebuilt_at)
                                               .where(ps.c.name == store.PROJECTION))).first()
            if state is not None and (int(state.last_sequence) != self.position
                                      or not same_time(state.rebuilt_at, self.rebuilt_at)):
                self._take_position(int(state.last_sequence), state.rebuilt_at)

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
            except Fenced:
                await self._refence()
                self._resubscribe.clear()
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
            except Fenced:
                raise
            except Exception as exc:
                if not await self._store_answers():
                    raise
                log.warning("batch not written; applying its events one by one", extra={
                    "first_sequence": fresh[0].sequence, "last_sequence": fresh[-1].sequence,
                    "error": f"{type(exc).__name__}: {exc}"[:500]})
                for msg in fresh:
                    try:
                        await self._commit([msg])
                    except Fenced:
                        raise
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
        started_ns = time.time_ns()
        batch = Batch()
        errors: dict[int, str] = {}
        async with self.runtime.store.transaction() as session:
            await self._load(session, batch, fresh)
            for msg in fresh:
                error = apply(batch, msg)
                if error is not None:
                    errors[msg.sequence] = error
                    log.error("event not applied to the projection", extra={
                        "sequence": msg.sequence, "mail_key": mail_key_of(msg),
                        "subject": msg.subject, "error": error})
            await self._write(session, batch)
        self._trace(fresh, errors, started_ns, time.time_ns(), len(fresh))
        self._advance(batch, len(fresh), time.perf_counter() - started)
        if self.on_applied is not None:
            try:
                await self.on_applied(batch)
            except Exception:
                log.exception("live feed failed")

    def _trace(self, fresh: list[Incoming], errors: dict[int, str], started_ns: int,
               ended_ns: int, batch_size: int) -> None:
        """A span per applied event in its mail's trace (the ``traceparent`` the event was
        published with), from the batch's start to its commit."""
        for msg in fresh:
            if msg.sequence <= self.replaying_until:
                continue
            parent = propagate.extract(msg.headers)
            if not trace.get_current_span(parent).get_span_context().is_valid:
                continue
            event_type = event_type_of(msg.subject, msg.headers)
            span = tracer.start_span(
                f"console project {event_type}", context=parent,
                kind=trace.SpanKind.CONSUMER, start_time=started_ns, attributes={
                    "messaging.system": "nats", "messaging.destination.name": msg.subject,
                    "messaging.operation": "process",
                    "postroom.event_type": event_type, "postroom.stream_sequence": msg.sequence,
                    "postroom.mail_key": mail_key_of(msg) or "",
                    "postroom.batch_size": batch_size})
            if msg.sequence in errors:
                span.set_status(trace.Status(trace.StatusCode.ERROR, errors[msg.sequence]))
            span.end(end_time=ended_ns)

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
        self.position = self.fed = batch.last_sequence
        self.metrics.position.set(self.position)
        self.metrics.events.inc(events)
        self.metrics.failures.inc(len(batch.failures))
        self.metrics.lag.set(self.lag)
        self.metrics.batch_seconds.observe(seconds)

    async def _load(self, session: Any, batch: Batch, msgs: list[Incoming]) -> None:
        keys: set[str] = set()
        event_ids: set[str] = set()
        delivery_ids: set[str] = set()
        reply_ids: set[str] = set()
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
                if msg.subject.startswith(REPLY_SUBJECT_PREFIX):
                    tenant, key = payload.get("tenant"), payload.get("mail_key")
                    if payload.get("reply_id"):
                        reply_ids.add(str(payload["reply_id"]))
                    elif isinstance(tenant, str) and isinstance(key, str):
                        reply_ids.add(reply_id_for(tenant, key))
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
        if reply_ids:
            r = store.replies
            for row in (await session.execute(
                    select(r).where(r.c.reply_id.in_(reply_ids)))).all():
                batch.replies[row.reply_id] = dict(row._mapping)

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
        r = store.replies
        new_r = [fit(r, batch.replies[k]) for k in batch.new_replies]
        if new_r:
            await session.execute(insert(r), new_r)
        dirty_r = [fit(r, batch.replies[k]) for k in batch.dirty_replies - batch.new_replies]
        if dirty_r:
            columns = [c.name for c in r.columns if c.name != "reply_id"]
            stmt = update(r).where(r.c.reply_id == bindparam("_id")).values(
                {c: bindparam(c) for c in columns})
            await session.execute(stmt, [{**{c: x[c] for c in columns}, "_id": x["reply_id"]}
                                         for x in dirty_r])
        if batch.timeline:
            await session.execute(insert(store.timeline),
                                  [fit(store.timeline, r) for r in batch.timeline])
        if batch.failures:
            now = utcnow()
            await session.execute(insert(store.projection_failures), [
                fit(store.projection_failures, {**f, "failed_at": now})
                for f in batch.failures])
        moved = await session.execute(
            update(store.projection_state)
            .where(store.projection_state.c.name == store.PROJECTION,
                   store.projection_state.c.last_sequence == self.position)
            .values(last_sequence=batch.last_sequence))
        if moved.rowcount != 1:
            raise Fenced(f"stored position is not {self.position}")

    # -- rebuild -------------------------------------------------------------------------------

    async def rebuild(self) -> None:
        """Drop the read model (not the API keys or corrections) and read the stream again
        from its first message."""
        with contextlib.suppress(Exception):
            await self.refresh_stream_last()
        async with self._lock:
            if self.leader:
                await self._unsubscribe()
            async with self.runtime.store.transaction() as session:
                for table in store.PROJECTION_TABLES:
                    await session.execute(delete(table))
                now = utcnow()
                await session.execute(update(store.projection_state)
                                      .where(store.projection_state.c.name == store.PROJECTION)
                                      .values(last_sequence=0, rebuilt_at=now))
            self.position = self.fed = 0
            self.generation += 1
            self.rebuilt_at = now
            self.analyze_pending = True
            self.replaying_until = self.stream_last
            self.metrics.position.set(0)
            if self.leader:
                self._resubscribe.set()  # the consumer loop subscribes again from 1
        # on another replica the leader notices the stored position (fenced) and reloads it
        log.info("projection rebuilding from the start of the stream",
                 extra={"leader": self.leader})
