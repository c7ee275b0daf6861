"""Delivery semantics on a real nats-server: idempotency, retries, dead letters, outbox."""

from __future__ import annotations

import asyncio
import importlib.util
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, ClassVar

import httpx
import nats
import pytest
from prometheus_client import CollectorRegistry
from sqlalchemy import insert, select

from postroom_contracts import (
    DLQ_STREAM,
    EVENTS_STREAM,
    BlobRef,
    MailFailed,
    MailReceived,
    derive_event_id,
    mail_key,
)
from postroom_runtime import (
    ConfigError,
    RuntimeSettings,
    ServiceRuntime,
    backoff_delay,
    event_headers,
    load_settings,
    publish_event,
)
from postroom_runtime.deadletters import list_dead_letters, replay_dead_letter

_spec = importlib.util.spec_from_file_location(
    "runtime_test_models", Path(__file__).parent / "models.py"
)
models = importlib.util.module_from_spec(_spec)  # type: ignore[arg-type]
_spec.loader.exec_module(models)  # type: ignore[union-attr]
MIGRATIONS = Path(__file__).parent / "migrations"
SHA = "cd" * 32
DURABLE = "test-svc-mail-received"


def received(message_id: str = "<po-1@supplier.example>") -> MailReceived:
    key = mail_key("acme", message_id)
    return MailReceived(
        event_id=derive_event_id(key, "mail.received"), tenant="acme", mail_key=key,
        message_id=message_id, mailbox="orders", envelope_from="s@example.com",
        recipients=["orders+acme@intake.example.com"], size=1,
        raw=BlobRef(bucket="postroom-blobs", key=f"sha256/{SHA}", size=1, sha256=SHA),
    )


class Harness:
    def __init__(self, runtime: ServiceRuntime, nc: Any) -> None:
        self.runtime = runtime
        self.nc = nc
        self.js = nc.jetstream()
        self.calls: list[str] = []
        self.dead: list[tuple[Any, str]] = []

    async def count(self, stream: str, subject: str | None = None) -> int:
        info = await self.js.stream_info(stream, subjects_filter=subject or ">")
        if subject is None:
            return info.state.messages
        return sum((info.state.subjects or {}).values())


Behaviour = Callable[[MailReceived, int], Awaitable[None]]


@pytest.fixture
def make_harness(nats_server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    """Builds started runtimes; harness_factory stops them in the test's event loop."""
    async def make(behaviour: Behaviour | None = None, *, max_deliver: int = 3,
                   before_start: Callable[[ServiceRuntime], Awaitable[None]] | None = None,
                   env: dict[str, str] | None = None) -> Harness:
        monkeypatch.setenv("NATS_URL", nats_server.url)
        monkeypatch.setenv("DATABASE_URL", f"sqlite+aiosqlite:///{tmp_path}/svc.db")
        monkeypatch.setenv("HTTP_PORT", "0")
        monkeypatch.setenv("OTEL_SERVICE_NAME", "test-svc")
        monkeypatch.setenv("CONSUMER_MAX_DELIVER", str(max_deliver))
        monkeypatch.setenv("CONSUMER_BACKOFF_BASE_SECONDS", "0.05")
        for name, value in (env or {}).items():
            monkeypatch.setenv(name, value)
        runtime = ServiceRuntime(load_settings(RuntimeSettings), migrations=MIGRATIONS,
                                 registry=CollectorRegistry(), configure_logging=False)
        nc = await nats.connect(nats_server.url)
        harness = Harness(runtime, nc)

        async def handler(event: MailReceived, session: Any, outbox: Any) -> None:
            harness.calls.append(event.event_id)
            if behaviour is not None:
                await behaviour(event, len(harness.calls))
            await session.execute(insert(models.widgets).values(tenant=event.tenant,
                                                                name=event.mail_key))
            await outbox.emit(MailFailed.caused_by(event, stage="test", error="done"))

        async def on_dead(event: Any, error: str) -> None:
            harness.dead.append((event, error))

        runtime.consume(MailReceived, handler, durable=DURABLE,
                        processed=models.processed, outbox=models.outbox,
                        on_dead_letter=on_dead)
        if before_start is not None:
            runtime.on_start.insert(0, before_start)
        await runtime.start()
        return harness

    return make


@pytest.fixture
async def harness_factory(make_harness) -> AsyncIterator[Any]:  # type: ignore[no-untyped-def]
    made: list[Harness] = []

    async def make(*args: Any, **kwargs: Any) -> Harness:
        h = await make_harness(*args, **kwargs)
        made.append(h)
        return h

    yield make
    for h in made:
        await h.runtime.stop()
        await h.nc.close()


async def eventually(check: Callable[[], Awaitable[bool]], within: float = 10.0) -> None:
    try:
        async with asyncio.timeout(within):
            while not await check():  # noqa: ASYNC110 - polls the NATS server, no local event
                await asyncio.sleep(0.05)
    except TimeoutError:
        raise AssertionError("condition not met in time") from None


async def test_each_event_is_handled_once_even_past_the_dedup_window(harness_factory) -> None:
    h = await harness_factory()
    event = received()
    await publish_event(h.runtime.broker, event, stream=EVENTS_STREAM)
    # a re-publish JetStream cannot de-duplicate (e.g. after its window): new Nats-Msg-Id
    headers = event_headers(event, {"Nats-Msg-Id": "republished-later"})
    await h.js.publish(event.nats_subject, event.model_dump_json().encode(), headers=headers)
    await eventually(lambda: _ret(len(h.calls) >= 1))
    await eventually(lambda: _count_is(h, "postroom.mail.failed.acme", 1))
    await eventually(lambda: _drained(h))
    assert h.calls == [event.event_id]
    assert await h.count(EVENTS_STREAM, "postroom.mail.received.acme") == 2
    assert await h.count(EVENTS_STREAM, "postroom.mail.failed.acme") == 1
    async with h.runtime.store.sessions() as s:
        assert (await s.scalars(select(models.outbox.c.published_at))).all()[0] is not None


async def test_transient_failures_are_retried_with_backoff(harness_factory) -> None:
    async def flaky(_: MailReceived, call: int) -> None:
        if call < 3:
            raise ConnectionError("blob store not reachable")

    h = await harness_factory(flaky, max_deliver=5)
    await publish_event(h.runtime.broker, received(), stream=EVENTS_STREAM)
    await eventually(lambda: _count_is(h, "postroom.mail.failed.acme", 1))
    assert len(h.calls) == 3
    assert await h.count(DLQ_STREAM) == 0
    async with h.runtime.store.sessions() as s:
        # the two failed attempts rolled back their writes
        assert len((await s.scalars(select(models.widgets.c.name))).all()) == 1


async def test_poison_message_is_dead_lettered_not_redelivered_forever(harness_factory) -> None:
    async def always_fails(_: MailReceived, call: int) -> None:
        raise ValueError("cannot parse this mail")

    h = await harness_factory(always_fails, max_deliver=3)
    event = received()
    await publish_event(h.runtime.broker, event, stream=EVENTS_STREAM)
    await eventually(lambda: _ret(len(h.dead) == 1))
    await eventually(lambda: _drained(h))
    assert len(h.calls) == 3  # bounded: no fourth attempt
    letters = await list_dead_letters(h.js)
    assert len(letters) == 1
    letter = letters[0].letter
    assert letter.consumer == "test-svc-mail-received"
    assert letter.deliveries == 3 and "ValueError: cannot parse this mail" in letter.error
    assert letter.mail_key == event.mail_key
    assert letter.original_subject == "postroom.mail.received.acme"
    assert h.dead[0][0] == event and "cannot parse" in h.dead[0][1]
    assert await h.count(EVENTS_STREAM, "postroom.mail.failed.acme") == 0


async def test_replayed_dead_letter_is_processed_once_fixed(harness_factory) -> None:
    broken = {"yes": True}

    async def fails_until_fixed(_: MailReceived, call: int) -> None:
        if broken["yes"]:
            raise ValueError("bug")

    h = await harness_factory(fails_until_fixed, max_deliver=2)
    await publish_event(h.runtime.broker, received(), stream=EVENTS_STREAM)
    await eventually(lambda: _ret(len(h.dead) == 1))
    broken["yes"] = False
    [stored] = await list_dead_letters(h.js)
    await replay_dead_letter(h.js, stored.sequence)
    await eventually(lambda: _count_is(h, "postroom.mail.failed.acme", 1))
    assert await list_dead_letters(h.js) == []
    assert len(h.calls) == 3


async def test_undecodable_payload_goes_straight_to_dead_letters(harness_factory) -> None:
    h = await harness_factory()
    await h.js.publish("postroom.mail.received.acme", b'{"not": "an event"}',
                       headers={"Nats-Msg-Id": "garbage-1"})
    await eventually(lambda: _ret(len(h.dead) == 1))
    [stored] = await list_dead_letters(h.js)
    assert stored.letter.deliveries == 1 and "undecodable mail.received" in stored.letter.error
    assert h.calls == []


async def test_outbox_rows_committed_before_a_crash_are_published_at_start(harness_factory) -> None:
    orphan = MailFailed.caused_by(received(), stage="x", error="committed, never published")

    async def seed_outbox(runtime: ServiceRuntime) -> None:
        async with runtime.store.transaction() as s:
            await s.execute(insert(models.outbox).values(
                event_id=orphan.event_id, subject=orphan.nats_subject,
                payload=orphan.model_dump_json().encode(), headers=event_headers(orphan)))

    h = await harness_factory(before_start=seed_outbox)
    await eventually(lambda: _count_is(h, "postroom.mail.failed.acme", 1))
    msg = await h.js.get_last_msg(EVENTS_STREAM, "postroom.mail.failed.acme")
    assert json.loads(msg.data)["event_id"] == orphan.event_id
    assert msg.headers["Nats-Msg-Id"] == orphan.event_id


async def test_health_ready_and_metrics(harness_factory, nats_server) -> None:
    h = await harness_factory()
    base = f"http://127.0.0.1:{h.runtime.http_port}"
    async with httpx.AsyncClient(base_url=base) as client:
        assert (await client.get("/health")).json()["status"] == "ok"
        ready = await client.get("/health/ready")
        assert ready.status_code == 200 and ready.json()["checks"] == {
            "nats": "ok", "store": "ok", "blobs": "ok"}
        await publish_event(h.runtime.broker, received(), stream=EVENTS_STREAM)
        await eventually(lambda: _count_is(h, "postroom.mail.failed.acme", 1))
        metrics = (await client.get("/metrics")).text
        assert "postroom_received_messages_total" in metrics
        nats_server.stop()
        await asyncio.sleep(0.5)
        down = await client.get("/health/ready")
        assert down.status_code == 503
        assert down.headers["content-type"] == "application/problem+json"
        assert down.json()["checks"]["nats"] != "ok"
        nats_server.start()
        await eventually(lambda: _ready(client), within=20)


def test_backoff_grows_and_is_capped() -> None:
    assert [backoff_delay(n, 1, 10) for n in (1, 2, 3, 4, 5, 6)] == [1, 2, 4, 8, 10, 10]


def test_bad_configuration_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTP_PORT", "not-a-port")
    monkeypatch.setenv("BLOB_BACKEND", "s3")
    with pytest.raises(ConfigError) as err:
        load_settings(RuntimeSettings)
    assert "HTTP_PORT" in str(err.value) and "BLOB_BACKEND" in str(err.value)
    assert err.value.code == 2


def test_database_defaults_to_a_sqlite_file_named_by_the_service_code(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    class ShippingSettings(RuntimeSettings):
        service_name: ClassVar[str] = "shipping-desk"

    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.delenv("OTEL_SERVICE_NAME", raising=False)
    settings = load_settings(ShippingSettings)
    assert settings.database_url == "sqlite+aiosqlite:///var/shipping_desk.db"
    assert settings.otel_service_name == "shipping-desk"
    # renaming the service's telemetry moves neither its store nor its consumers
    monkeypatch.setenv("OTEL_SERVICE_NAME", "shipping-desk-eu")
    renamed = load_settings(ShippingSettings)
    assert renamed.otel_service_name == "shipping-desk-eu"
    assert renamed.database_url == "sqlite+aiosqlite:///var/shipping_desk.db"


async def _ret(value: bool) -> bool:
    return value


async def _count_is(h: Harness, subject: str, n: int) -> bool:
    return await h.count(EVENTS_STREAM, subject) == n


async def _drained(h: Harness, durable: str = DURABLE) -> bool:
    """The consumer has nothing left: every message delivered and acked or terminated."""
    info = await h.js.consumer_info(EVENTS_STREAM, durable)
    return info.num_pending == 0 and info.num_ack_pending == 0


async def _ready(client: httpx.AsyncClient) -> bool:
    return (await client.get("/health/ready")).status_code == 200


async def test_a_constraint_violation_in_the_handler_is_retried_not_acked(harness_factory) -> None:
    # Only an IntegrityError on the idempotency row means "done elsewhere"; one from the
    # handler's own writes rolled everything back and must not be acked as if it were done.
    event = received()

    async def clash(runtime: ServiceRuntime) -> None:
        async with runtime.store.transaction() as s:
            await s.execute(insert(models.widgets).values(tenant="acme", name=event.mail_key))

    h = await harness_factory(max_deliver=3, before_start=clash)
    await publish_event(h.runtime.broker, event, stream=EVENTS_STREAM)
    await eventually(lambda: _ret(len(h.dead) == 1))
    assert len(h.calls) == 3
    [stored] = await list_dead_letters(h.js)
    assert "IntegrityError" in stored.letter.error
    assert await h.count(EVENTS_STREAM, "postroom.mail.failed.acme") == 0


class _FakeMsg:
    """A JetStream message as FastStream hands it over, recording what the consumer did."""

    def __init__(self, body: bytes, num_delivered: int) -> None:
        from types import SimpleNamespace

        self.body = body
        self.raw_message = SimpleNamespace(
            subject="postroom.mail.received.acme", headers={},
            metadata=SimpleNamespace(num_delivered=num_delivered,
                                     sequence=SimpleNamespace(stream=7)),
        )
        self.outcome: str | None = None

    async def ack(self) -> None:
        self.outcome = "ack"

    async def nack(self, delay: float | None = None) -> None:
        self.outcome = "nack"

    async def reject(self) -> None:
        self.outcome = "reject"


class _RecordingBroker:
    def __init__(self) -> None:
        self.published: list[str] = []

    async def publish(self, payload: bytes, subject: str, **_: Any) -> None:
        self.published.append(subject)


async def test_committed_event_redelivered_past_the_limit_is_acked_not_dead_lettered(
    tmp_path: Path,
) -> None:
    from postroom_runtime import Consumer, DeliveryPolicy, Store

    store = Store(f"sqlite+aiosqlite:///{tmp_path}/c.db")
    await store.migrate(MIGRATIONS)
    calls: list[str] = []

    async def handler(event: MailReceived, session: Any, outbox: Any) -> None:
        calls.append(event.event_id)

    broker = _RecordingBroker()
    consumer = Consumer(name="c", event_type=MailReceived, handler=handler, store=store,
                        processed=models.processed, outbox=models.outbox, broker=broker,
                        policy=DeliveryPolicy(max_deliver=3))
    event = received()
    first = _FakeMsg(event.model_dump_json().encode(), num_delivered=1)
    await consumer.handle(first)
    assert first.outcome == "ack" and calls == [event.event_id]
    # the ack was lost; JetStream redelivers after the last attempt
    late = _FakeMsg(event.model_dump_json().encode(), num_delivered=4)
    await consumer.handle(late)
    assert late.outcome == "ack" and calls == [event.event_id]
    assert broker.published == []  # nothing dead-lettered
    # an event that never committed is dead-lettered once past the limit
    other = received("<other@supplier.example>")
    never = _FakeMsg(other.model_dump_json().encode(), num_delivered=4)
    await consumer.handle(never)
    assert never.outcome == "reject" and broker.published == ["postroom.dlq.c"]
    assert calls == [event.event_id]
    await store.close()


async def test_a_stop_request_while_waiting_for_nats_ends_start_up_cleanly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from postroom_testing.procs import free_port

    monkeypatch.setenv("NATS_URL", f"nats://127.0.0.1:{free_port()}")  # nobody listens
    monkeypatch.setenv("DATABASE_URL", f"sqlite+aiosqlite:///{tmp_path}/svc.db")
    monkeypatch.setenv("HTTP_PORT", "0")
    runtime = ServiceRuntime(load_settings(RuntimeSettings), migrations=MIGRATIONS,
                             registry=CollectorRegistry(), configure_logging=False)
    task = asyncio.create_task(runtime.run_forever())
    await asyncio.sleep(1.0)
    assert not task.done()  # still waiting for NATS, not crashed
    runtime.request_stop()
    # returns without an exception instead of waiting for NATS to appear
    await asyncio.wait_for(task, 10)
    assert runtime.http_port is None  # never started serving


async def test_outbox_marks_what_it_published_when_a_publish_fails_midway(tmp_path: Path) -> None:
    from postroom_runtime import OutboxRelay, Store

    store = Store(f"sqlite+aiosqlite:///{tmp_path}/o.db")
    await store.migrate(MIGRATIONS)
    events = [MailFailed.caused_by(received(f"<m{i}@x>"), stage="s", error="e") for i in range(3)]
    async with store.transaction() as s:
        for e in events:
            await s.execute(insert(models.outbox).values(
                event_id=e.event_id, subject=e.nats_subject,
                payload=e.model_dump_json().encode(), headers=event_headers(e)))

    class FailsOnSecond(_RecordingBroker):
        async def publish(self, payload: bytes, subject: str, **kw: Any) -> None:
            if len(self.published) == 1:
                raise ConnectionError("NATS went away")
            await super().publish(payload, subject, **kw)

    with pytest.raises(ConnectionError):
        await OutboxRelay(store, models.outbox, FailsOnSecond()).flush()
    async with store.sessions() as s:
        marked = (await s.execute(select(models.outbox.c.event_id, models.outbox.c.published_at)
                                  .order_by(models.outbox.c.id))).all()
    assert [row.published_at is not None for row in marked] == [True, False, False]
    # the next flush publishes the rest, oldest first
    broker = _RecordingBroker()
    assert await OutboxRelay(store, models.outbox, broker).flush() == 2
    assert broker.published == [events[1].nats_subject, events[2].nats_subject]
    await store.close()


async def test_a_committed_event_is_acked_and_published_later_never_dead_lettered(
    tmp_path: Path,
) -> None:
    # NATS refuses the outbox publish after the handler committed, on the last attempt:
    # the message is acked (its work is done), and the relay publishes the event once NATS
    # takes it again
    from postroom_runtime import Consumer, DeliveryPolicy, OutboxRelay, Store

    store = Store(f"sqlite+aiosqlite:///{tmp_path}/c.db")
    await store.migrate(MIGRATIONS)
    event = received()

    async def handler(ev: MailReceived, session: Any, outbox: Any) -> None:
        await outbox.emit(MailFailed.caused_by(ev, stage="test", error="done"))

    class Unreachable(_RecordingBroker):
        down = True

        async def publish(self, payload: bytes, subject: str, **kw: Any) -> None:
            if self.down:
                raise ConnectionError("NATS went away")
            await super().publish(payload, subject, **kw)

    broker = Unreachable()
    relay = OutboxRelay(store, models.outbox, broker, poll_interval=0.05, backoff_base=0.01,
                        backoff_max=0.05)
    consumer = Consumer(name="c", event_type=MailReceived, handler=handler, store=store,
                        processed=models.processed, outbox=models.outbox, broker=broker,
                        policy=DeliveryPolicy(max_deliver=1), relay=relay)
    relay.start()
    try:
        msg = _FakeMsg(event.model_dump_json().encode(), num_delivered=1)
        await consumer.handle(msg)
        assert msg.outcome == "ack"
        assert broker.published == []  # neither published nor dead-lettered yet
        broker.down = False
        await eventually(lambda: _ret(broker.published == ["postroom.mail.failed.acme"]))
        async with store.sessions() as s:
            marks = (await s.scalars(select(models.outbox.c.published_at))).all()
        assert len(marks) == 1 and marks[0] is not None
    finally:
        await relay.stop()
        await store.close()


async def test_a_long_handler_keeps_its_message_with_heartbeats(harness_factory) -> None:
    # the handler works for several ack waits (a long transcription): in_progress heartbeats
    # keep the message, so JetStream never delivers it a second time
    ack_wait = 1.0

    async def long_work(_: MailReceived, call: int) -> None:
        await asyncio.sleep(3.5 * ack_wait)  # the work itself, not a wait for the test

    h = await harness_factory(long_work, env={"CONSUMER_ACK_WAIT_SECONDS": str(ack_wait)})
    await publish_event(h.runtime.broker, received(), stream=EVENTS_STREAM)
    await eventually(lambda: _ret(len(h.calls) == 1))
    # another replica asks for work on the same durable while the handler runs: without the
    # heartbeats JetStream would hand it the message after one ack wait
    replica = await h.js.pull_subscribe_bind(DURABLE, EVENTS_STREAM)
    with pytest.raises(nats.errors.TimeoutError):
        await replica.fetch(1, timeout=2.5 * ack_wait)
    await replica.unsubscribe()
    await eventually(lambda: _count_is(h, "postroom.mail.failed.acme", 1))
    await eventually(lambda: _drained(h))
    info = await h.js.consumer_info(EVENTS_STREAM, DURABLE)
    assert info.config.ack_wait == ack_wait
    assert info.delivered.consumer_seq == 1  # one delivery, no redelivery
    assert len(h.calls) == 1


async def test_a_message_held_by_a_dead_process_comes_back_after_the_short_ack_wait(
    harness_factory, nats_server,
) -> None:
    # a process fetched the message and died without acking it (its connection is gone):
    # the message comes back after the ack wait, not after minutes
    ack_wait = 1.0

    async def make_consumer_first(runtime: ServiceRuntime) -> None:
        # the runtime creates its durable consumer at start; the "dead" process takes the
        # message before the runtime's subscriber runs
        await runtime.js.add_consumer(EVENTS_STREAM, runtime._consumers[0])
        doomed = await nats.connect(nats_server.url)
        sub = await doomed.jetstream().pull_subscribe_bind(DURABLE, EVENTS_STREAM)
        await publish_event(runtime.broker, received(), stream=EVENTS_STREAM)
        [taken] = await sub.fetch(1, timeout=10)
        assert taken.metadata.num_delivered == 1
        took.append(asyncio.get_running_loop().time())
        await doomed.close()  # dies: no ack, no heartbeat

    took: list[float] = []
    h = await harness_factory(before_start=make_consumer_first,
                              env={"CONSUMER_ACK_WAIT_SECONDS": str(ack_wait)})
    await eventually(lambda: _count_is(h, "postroom.mail.failed.acme", 1))
    elapsed = asyncio.get_running_loop().time() - took[0]
    assert elapsed >= ack_wait * 0.9  # redelivered by the ack wait, not earlier
    assert len(h.calls) == 1
    info = await h.js.consumer_info(EVENTS_STREAM, DURABLE)
    assert info.delivered.consumer_seq == 2  # taken by the dead process, then by us


async def test_a_handler_past_its_time_limit_is_retried_then_dead_lettered(
    harness_factory,
) -> None:
    # a hostile input that never finishes cannot hold the consumer: each attempt is cut off
    # at the time limit, retried, and dead-lettered after the last attempt
    async def hangs(_: MailReceived, call: int) -> None:
        await asyncio.Event().wait()

    h = await harness_factory(hangs, max_deliver=2,
                              env={"CONSUMER_HANDLER_TIMEOUT_SECONDS": "0.3"})
    event = received()
    await publish_event(h.runtime.broker, event, stream=EVENTS_STREAM)
    await eventually(lambda: _ret(len(h.dead) == 1))
    assert len(h.calls) == 2
    [stored] = await list_dead_letters(h.js)
    assert "time limit of 0.3 s" in stored.letter.error
    # the next mail is handled: the consumer was not held
    other = received("<next@supplier.example>")

    async def fine(_: MailReceived, call: int) -> None:
        return None

    h2 = await harness_factory(fine, env={"CONSUMER_HANDLER_TIMEOUT_SECONDS": "0.3"})
    await publish_event(h2.runtime.broker, other, stream=EVENTS_STREAM)
    await eventually(lambda: _count_is(h2, "postroom.mail.failed.acme", 1))


async def test_a_subscriber_sees_an_event_again_after_the_duplicate_window(
    harness_factory,
) -> None:
    # JetStream drops a re-publish with the same Nats-Msg-Id only within its duplicate
    # window. Past it (a relay that published, crashed before marking, and restarted much
    # later), the stream holds the event twice: an outside subscriber de-duplicates on
    # event_id, as Postroom's own consumers do with processed_messages.
    h = await harness_factory(env={"STREAM_DUPLICATE_WINDOW_SECONDS": "1"})
    event = received()
    await publish_event(h.runtime.broker, event, stream=EVENTS_STREAM)
    subject = "postroom.mail.received.acme"

    async def republished() -> bool:
        await publish_event(h.runtime.broker, event, stream=EVENTS_STREAM)
        return await h.count(EVENTS_STREAM, subject) == 2

    await eventually(republished)  # true once the window has passed
    sub = await h.js.subscribe(subject, ordered_consumer=True)
    copies = [await sub.next_msg(timeout=10) for _ in range(2)]
    await sub.unsubscribe()
    assert [c.headers["Nats-Msg-Id"] for c in copies] == [event.event_id] * 2
    assert [json.loads(c.data)["event_id"] for c in copies] == [event.event_id] * 2
    # Postroom's consumer handled it once and emitted its consequence once
    await eventually(lambda: _drained(h))
    assert h.calls == [event.event_id]
    assert await h.count(EVENTS_STREAM, "postroom.mail.failed.acme") == 1
