"""A consumer with a prepare step, on a real nats-server: prepare outside the transaction and
several at once (even on SQLite), write phases committed together (group commit), and every
delivery guarantee of a plain consumer kept."""

from __future__ import annotations

import asyncio
import importlib.util
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import nats
import pytest
from prometheus_client import CollectorRegistry
from sqlalchemy import func, insert, select

from postroom_contracts import EVENTS_STREAM, MailFailed, MailReceived
from postroom_runtime import (
    Consumer,
    PoisonMessage,
    RuntimeSettings,
    ServiceRuntime,
    event_headers,
    load_settings,
    publish_event,
)
from postroom_runtime.deadletters import list_dead_letters

_spec = importlib.util.spec_from_file_location(
    "runtime_test_models_prepare", Path(__file__).parent / "models.py"
)
models = importlib.util.module_from_spec(_spec)  # type: ignore[arg-type]
_spec.loader.exec_module(models)  # type: ignore[union-attr]
MIGRATIONS = Path(__file__).parent / "migrations"
DURABLE = "test-svc-mail-received"


def _received(n: int) -> MailReceived:
    from postroom_contracts import BlobRef, derive_event_id, mail_key

    sha = "cd" * 32
    message_id = f"<po-{n}@supplier.example>"
    key = mail_key("acme", message_id)
    return MailReceived(
        event_id=derive_event_id(key, "mail.received"), tenant="acme", mail_key=key,
        message_id=message_id, mailbox="orders", envelope_from="s@example.com",
        recipients=["orders+acme@intake.example.com"], size=1,
        raw=BlobRef(bucket="postroom-blobs", key=f"sha256/{sha}", size=1, sha256=sha),
    )


class Harness:
    def __init__(self, runtime: ServiceRuntime, consumer: Consumer[Any], nc: Any) -> None:
        self.runtime = runtime
        self.consumer = consumer
        self.js = nc.jetstream()
        self.nc = nc
        self.prepared: list[str] = []  # event ids, one per prepare call
        self.handled: list[str] = []  # event ids, one per handler call
        self.dead: list[tuple[Any, str]] = []

    async def count(self, subject: str) -> int:
        info = await self.js.stream_info(EVENTS_STREAM, subjects_filter=subject)
        return sum((info.state.subjects or {}).values())

    async def rows(self, table: Any) -> int:
        async with self.runtime.store.sessions() as s:
            return int(await s.scalar(select(func.count()).select_from(table)))

    async def drained(self) -> bool:
        info = await self.js.consumer_info(EVENTS_STREAM, DURABLE)
        return info.num_pending == 0 and info.num_ack_pending == 0


Prepare = Callable[[Harness, MailReceived], Awaitable[Any]]
Write = Callable[[Harness, MailReceived, Any], Awaitable[None]]


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path}/svc.db"
    return str(request.getfixturevalue("postgres_url"))


@pytest.fixture
async def harness(nats_server: Any, monkeypatch: pytest.MonkeyPatch,
                  database_url: str) -> AsyncIterator[Callable[..., Awaitable[Harness]]]:
    made: list[Harness] = []

    async def make(prepare: Prepare | None = None, write: Write | None = None, *,
                   env: dict[str, str] | None = None) -> Harness:
        settings = {"NATS_URL": nats_server.url, "DATABASE_URL": database_url,
                    "HTTP_PORT": "0", "OTEL_SERVICE_NAME": "test-svc",
                    "CONSUMER_MAX_DELIVER": "3", "CONSUMER_BACKOFF_BASE_SECONDS": "0.05",
                    "CONSUMER_BACKOFF_MAX_SECONDS": "0.2", **(env or {})}
        for name, value in settings.items():
            monkeypatch.setenv(name, value)
        runtime = ServiceRuntime(load_settings(RuntimeSettings), migrations=MIGRATIONS,
                                 registry=CollectorRegistry(), configure_logging=False)
        holder: list[Harness] = []

        async def prepare_step(event: MailReceived) -> Any:
            h = holder[0]
            h.prepared.append(event.event_id)
            return await prepare(h, event) if prepare else f"prepared {event.event_id}"

        async def handler(event: MailReceived, session: Any, outbox: Any, prepared: Any) -> None:
            h = holder[0]
            h.handled.append(event.event_id)
            if write is not None:
                await write(h, event, prepared)
            await session.execute(insert(models.widgets).values(tenant=event.tenant,
                                                                name=event.mail_key))
            await outbox.emit(MailFailed.caused_by(event, stage="test", error=str(prepared)))

        async def on_dead(event: Any, error: str) -> None:
            holder[0].dead.append((event, error))

        consumer = runtime.consume(MailReceived, handler, durable=DURABLE,
                                   processed=models.processed, outbox=models.outbox,
                                   on_dead_letter=on_dead, prepare=prepare_step)
        holder.append(Harness(runtime, consumer, await nats.connect(nats_server.url)))
        await runtime.start()
        made.append(holder[0])
        return holder[0]

    yield make
    for h in made:
        await h.runtime.stop()
        await h.nc.close()


async def eventually(check: Callable[[], Awaitable[bool]], within: float = 20.0) -> None:
    try:
        async with asyncio.timeout(within):
            while not await check():  # noqa: ASYNC110 - polls the NATS server and the store
                await asyncio.sleep(0.05)
    except TimeoutError:
        raise AssertionError("condition not met in time") from None


async def _publish(h: Harness, events: list[MailReceived]) -> None:
    for event in events:
        await publish_event(h.runtime.broker, event, stream=EVENTS_STREAM)


async def test_messages_prepare_together_and_their_writes_commit_together(
    harness: Any, database_url: str
) -> None:
    # eight mails wait in prepare until all eight are there: they prepare at once on every
    # store (SQLite too, whose write transactions are one at a time), outside any transaction
    events = [_received(n) for n in range(8)]
    all_in = asyncio.Event()
    active: list[str] = []

    async def prepare(h: Harness, event: MailReceived) -> str:
        active.append(event.event_id)
        if len(active) == len(events):
            all_in.set()
        await asyncio.wait_for(all_in.wait(), 15)
        return f"prepared {event.mail_key}"

    async def write(h: Harness, event: MailReceived, prepared: Any) -> None:
        assert prepared == f"prepared {event.mail_key}"  # its own, not another message's

    h = await harness(prepare, write)
    await _publish(h, events)
    await eventually(lambda: _is(h.count("postroom.mail.failed.acme"), len(events)))
    await eventually(h.drained)
    assert sorted(h.prepared) == sorted(h.handled) == sorted(e.event_id for e in events)
    assert await h.rows(models.widgets) == await h.rows(models.processed) == len(events)
    if database_url.startswith("sqlite"):
        # one writer: the mails that were ready together shared a transaction
        assert h.consumer.groups_committed >= 1
    # each event carries what its own prepare step returned
    async with h.runtime.store.sessions() as s:
        published = (await s.scalars(select(models.outbox.c.payload))).all()
    assert sorted(MailFailed.model_validate_json(p).error for p in published) == sorted(
        f"prepared {e.mail_key}" for e in events)


async def test_a_failing_write_in_a_group_fails_alone(harness: Any, database_url: str) -> None:
    # one handler of a group raises: the group is rolled back and each message runs again on
    # its own, so the others commit once and only the failing one is retried, then
    # dead-lettered
    events = [_received(n) for n in range(6)]
    bad = events[3]
    first_write = asyncio.Event()
    returned: list[str] = []
    all_prepared = asyncio.Event()

    async def prepare(h: Harness, event: MailReceived) -> str:
        if event.event_id == bad.event_id and not h.handled:
            await asyncio.wait_for(first_write.wait(), 15)  # never the first one written
        returned.append(event.event_id)
        if len(returned) == len(events):
            all_prepared.set()
        return "ok"

    async def write(h: Harness, event: MailReceived, prepared: Any) -> None:
        if len(h.handled) == 1:
            # the first write holds the writer until every other mail waits for it: on
            # SQLite (one writer) they are then written as one group, the failing one in it
            first_write.set()
            await asyncio.wait_for(all_prepared.wait(), 15)
        if event.event_id == bad.event_id:
            raise ValueError("this mail cannot be written")

    h = await harness(prepare, write)
    await _publish(h, events)
    await eventually(lambda: _true(len(h.dead) == 1))
    await eventually(h.drained)
    assert h.dead[0][0] == bad and "ValueError: this mail cannot be written" in h.dead[0][1]
    assert await h.rows(models.widgets) == await h.rows(models.processed) == len(events) - 1
    assert await h.count("postroom.mail.failed.acme") == len(events) - 1
    good = [e.event_id for e in events if e is not bad]
    async with h.runtime.store.sessions() as s:
        done = set((await s.scalars(select(models.processed.c.event_id))).all())
    assert done == set(good)
    [letter] = await list_dead_letters(h.js)
    assert letter.letter.deliveries == 3  # CONSUMER_MAX_DELIVER attempts
    assert all(h.handled.count(e) in (1, 2) for e in good)  # at most once more, alone
    if database_url.startswith("sqlite"):
        # the group of five was rolled back when the failing mail raised, and each mail ran
        # again on its own: the failing one once in the group, then once per attempt
        assert h.handled.count(bad.event_id) == 4
    else:  # a writer each: nothing shared a transaction with the failing mail
        assert h.handled.count(bad.event_id) == 3
        assert all(h.handled.count(e) == 1 for e in good)


async def test_prepare_errors_are_retried_and_poison_is_dead_lettered_at_once(
    harness: Any,
) -> None:
    flaky, poison = _received(1), _received(2)

    async def prepare(h: Harness, event: MailReceived) -> str:
        if event.event_id == poison.event_id:
            raise PoisonMessage("cannot parse this mail")
        if event.event_id == flaky.event_id and h.prepared.count(flaky.event_id) < 3:
            raise ConnectionError("blob store not reachable")
        return "ok"

    h = await harness(prepare)
    await _publish(h, [flaky, poison])
    await eventually(lambda: _is(h.count("postroom.mail.failed.acme"), 1))
    await eventually(lambda: _true(len(h.dead) == 1))
    await eventually(h.drained)
    assert h.prepared.count(flaky.event_id) == 3 and h.handled == [flaky.event_id]
    assert h.prepared.count(poison.event_id) == 1  # never retried
    [letter] = await list_dead_letters(h.js)
    assert letter.letter.deliveries == 1 and "poison: cannot parse this mail" in letter.letter.error


async def test_a_prepare_step_past_the_time_limit_is_retried_then_dead_lettered(
    harness: Any,
) -> None:
    async def hangs(h: Harness, event: MailReceived) -> str:
        await asyncio.Event().wait()
        return "never"

    h = await harness(hangs, env={"CONSUMER_HANDLER_TIMEOUT_SECONDS": "0.3",
                                  "CONSUMER_MAX_DELIVER": "2"})
    await _publish(h, [_received(1)])
    await eventually(lambda: _true(len(h.dead) == 1))
    assert len(h.prepared) == 2 and h.handled == []
    assert "time limit of 0.3 s" in h.dead[0][1]


async def test_a_copy_of_a_processed_event_is_not_prepared_again(harness: Any) -> None:
    h = await harness()
    event = _received(1)
    await _publish(h, [event])
    await eventually(lambda: _is(h.count("postroom.mail.failed.acme"), 1))
    # a copy JetStream cannot de-duplicate (published again after its window)
    await h.js.publish(event.nats_subject, event.model_dump_json().encode(),
                       headers=event_headers(event, {"Nats-Msg-Id": "republished-later"}))
    await eventually(lambda: _is(h.count("postroom.mail.received.acme"), 2))
    await eventually(h.drained)
    assert h.prepared == [event.event_id] and h.handled == [event.event_id]
    assert await h.count("postroom.mail.failed.acme") == 1


async def _is(count: Awaitable[int], n: int) -> bool:
    return await count == n


async def _true(value: bool) -> bool:
    return value
