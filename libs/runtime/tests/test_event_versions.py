"""Event versions on a real nats-server: a consumer built on revision 1 of an event handles
what a producer of a later revision publishes, and a breaking change travels on its own
subject next to the old one."""

from __future__ import annotations

import asyncio
import importlib.util
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, ClassVar

import nats
import pytest
from prometheus_client import CollectorRegistry
from pydantic import BaseModel, Field
from sqlalchemy import func, select

from postroom_contracts import (
    DLQ_STREAM,
    EVENTS_STREAM,
    BlobRef,
    Event,
    MailReceived,
    derive_event_id,
    mail_key,
)
from postroom_contracts.catalogue import event_schema
from postroom_contracts.compatibility import incompatibilities
from postroom_runtime import RuntimeSettings, ServiceRuntime, event_headers, load_settings
from postroom_runtime import publish_event as publish
from postroom_runtime.deadletters import list_dead_letters

_spec = importlib.util.spec_from_file_location(
    "runtime_test_models_versions", Path(__file__).parent / "models.py"
)
models = importlib.util.module_from_spec(_spec)  # type: ignore[arg-type]
_spec.loader.exec_module(models)  # type: ignore[union-attr]
MIGRATIONS = Path(__file__).parent / "migrations"
SHA = "ef" * 32
RAW = BlobRef(bucket="postroom-blobs", key=f"sha256/{SHA}", size=1, sha256=SHA)


class MailReceivedRev2(MailReceived):
    """What a producer one revision ahead publishes: an added optional field."""

    schema_version: ClassVar[int] = 2

    spam_score: float | None = Field(default=None, description="0 (ham) to 1 (spam)")


class Recipient(BaseModel):
    address: str
    mailbox: str


class MailReceivedV2(Event):
    """A breaking change (recipients become objects): a new major on its own subject."""

    event_type: ClassVar[str] = "mail.received.v2"
    schema_version: ClassVar[int] = 1

    message_id: str
    recipients: list[Recipient] = Field(min_length=1)
    raw: BlobRef


def mail(message_id: str) -> tuple[str, dict[str, Any]]:
    key = mail_key("acme", message_id)
    return key, dict(event_id=derive_event_id(key, "mail.received"), tenant="acme", mail_key=key,
                     message_id=message_id, mailbox="orders", envelope_from="s@example.com",
                     recipients=["orders+acme@intake.example.com"], size=1, raw=RAW)


class Reader:
    """One service with a durable consumer per event class, recording what each handled."""

    def __init__(self, runtime: ServiceRuntime, nc: Any) -> None:
        self.runtime = runtime
        self.js = nc.jetstream()
        self.handled: dict[str, list[Event]] = {}
        self.dead: list[tuple[Any, str]] = []

    async def dead_letters(self) -> int:
        return (await self.js.stream_info(DLQ_STREAM)).state.messages

    async def settled(self, durable: str) -> bool:
        info = await self.js.consumer_info(EVENTS_STREAM, durable)
        return info.num_pending == 0 and info.num_ack_pending == 0


@pytest.fixture
async def make_reader(nats_server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                      ) -> AsyncIterator[Callable[..., Awaitable[Reader]]]:
    made: list[tuple[Reader, Any]] = []

    async def make(*events: tuple[type[Event], str]) -> Reader:
        monkeypatch.setenv("NATS_URL", nats_server.url)
        monkeypatch.setenv("DATABASE_URL", f"sqlite+aiosqlite:///{tmp_path}/reader.db")
        monkeypatch.setenv("HTTP_PORT", "0")
        monkeypatch.setenv("OTEL_SERVICE_NAME", "version-reader")
        monkeypatch.setenv("CONSUMER_MAX_DELIVER", "2")
        monkeypatch.setenv("CONSUMER_BACKOFF_BASE_SECONDS", "0.05")
        runtime = ServiceRuntime(load_settings(RuntimeSettings), migrations=MIGRATIONS,
                                 registry=CollectorRegistry(), configure_logging=False)
        nc = await nats.connect(nats_server.url)
        reader = Reader(runtime, nc)
        for event_type, durable in events:
            handled = reader.handled.setdefault(durable, [])

            async def handler(event: Event, session: Any, outbox: Any,
                              handled: list[Event] = handled) -> None:
                handled.append(event)

            async def on_dead(event: Any, error: str) -> None:
                reader.dead.append((event, error))

            runtime.consume(event_type, handler, durable=durable, processed=models.processed,
                            outbox=models.outbox, on_dead_letter=on_dead)
        await runtime.start()
        made.append((reader, nc))
        return reader

    yield make
    for reader, nc in made:
        await reader.runtime.stop()
        await nc.close()


async def eventually(check: Callable[[], Awaitable[bool]], within: float = 20.0) -> None:
    try:
        async with asyncio.timeout(within):
            while not await check():  # noqa: ASYNC110 - polls the NATS server
                await asyncio.sleep(0.05)
    except TimeoutError:
        raise AssertionError("condition not met in time") from None


async def _true(value: bool) -> bool:
    return value


async def test_a_revision_1_consumer_handles_a_revision_2_event(make_reader) -> None:
    # the producer's change is one the rules accept without a new subject
    assert incompatibilities(event_schema(MailReceived), event_schema(MailReceivedRev2)) == []
    reader = await make_reader((MailReceived, "reader-mail-received"))
    _, fields = mail("<po-rev2@supplier.example>")
    newer = MailReceivedRev2(**fields, spam_score=0.25)
    payload = json.loads(newer.model_dump_json())
    assert payload["version"] == 2 and payload["spam_score"] == 0.25
    await publish(reader.runtime.broker, newer, stream=EVENTS_STREAM)

    handled = reader.handled["reader-mail-received"]
    await eventually(lambda: _true(len(handled) == 1))
    await eventually(lambda: reader.settled("reader-mail-received"))  # acked, not pending
    [event] = handled
    assert type(event) is MailReceived
    assert event.version == 2 and event.message_id == "<po-rev2@supplier.example>"
    assert "spam_score" not in event.model_dump()
    assert reader.dead == [] and await reader.dead_letters() == 0
    async with reader.runtime.store.sessions() as s:
        done = await s.scalar(select(func.count()).select_from(models.processed))
    assert done == 1  # committed as processed like any event


async def test_a_new_major_is_published_side_by_side_and_each_reader_gets_its_own(
    make_reader,
) -> None:
    reader = await make_reader((MailReceived, "old-reader"), (MailReceivedV2, "new-reader"))
    key, fields = mail("<po-major@supplier.example>")
    old = MailReceived(**fields)
    new = MailReceivedV2(
        event_id=derive_event_id(key, MailReceivedV2.event_type), tenant="acme", mail_key=key,
        message_id=old.message_id, raw=RAW,
        recipients=[Recipient(address="orders+acme@intake.example.com", mailbox="orders")],
    )
    assert new.nats_subject == "postroom.mail.received.v2.acme"
    # the producer publishes both until every consumer moved to the new major
    await publish(reader.runtime.broker, old, stream=EVENTS_STREAM)
    await publish(reader.runtime.broker, new, stream=EVENTS_STREAM)

    olds, news = reader.handled["old-reader"], reader.handled["new-reader"]
    await eventually(lambda: _true(len(olds) == 1 and len(news) == 1))
    await eventually(lambda: reader.settled("old-reader"))
    await eventually(lambda: reader.settled("new-reader"))
    assert olds == [old] and news == [new]
    assert reader.dead == [] and await reader.dead_letters() == 0

    # why the new major needs its own subject: on the old one, an old reader cannot read it
    await reader.js.publish(old.nats_subject, new.model_dump_json().encode(),
                            headers=event_headers(new, {"Nats-Msg-Id": "wrong-subject-1"}))
    await eventually(lambda: _true(len(reader.dead) == 1))
    [letter] = await list_dead_letters(reader.js)
    assert letter.letter.consumer == "old-reader"
    assert "undecodable mail.received" in letter.letter.error
    assert olds == [old] and news == [new]
