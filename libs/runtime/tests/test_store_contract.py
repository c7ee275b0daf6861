"""One abstract store suite, run on SQLite and on PostgreSQL."""

from __future__ import annotations

import asyncio
import importlib.util
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, insert, inspect, select, text
from sqlalchemy.exc import IntegrityError

from postroom_runtime import OutboxRelay, Store
from postroom_runtime.delivery import prune
from postroom_runtime.store import utcnow

_spec = importlib.util.spec_from_file_location(
    "runtime_test_models", Path(__file__).parent / "models.py"
)
models = importlib.util.module_from_spec(_spec)  # type: ignore[arg-type]
_spec.loader.exec_module(models)  # type: ignore[union-attr]
MIGRATIONS = Path(__file__).parent / "migrations"


class StoreContract:
    @pytest.fixture
    def url(self) -> str:
        raise NotImplementedError

    @pytest.fixture
    async def store(self, url: str) -> AsyncIterator[Store]:
        store = Store(url)
        await store.migrate(MIGRATIONS)
        yield store
        await store.close()

    async def test_migrations_create_service_and_runtime_tables(self, store: Store) -> None:
        async with store.engine.connect() as conn:
            names = await conn.run_sync(lambda c: set(inspect(c).get_table_names()))
        assert {"widgets", "processed_messages", "outbox", "alembic_version"} <= names

    async def test_migrating_twice_is_a_no_op(self, store: Store) -> None:
        await store.migrate(MIGRATIONS)
        async with store.transaction() as s:
            await s.execute(insert(models.widgets).values(tenant="acme", name="a"))
        await store.migrate(MIGRATIONS)
        async with store.sessions() as s:
            assert await s.scalar(select(func.count()).select_from(models.widgets)) == 1

    async def test_transaction_commits_or_rolls_back_as_a_whole(self, store: Store) -> None:
        with pytest.raises(RuntimeError):
            async with store.transaction() as s:
                await s.execute(insert(models.widgets).values(tenant="acme", name="x"))
                raise RuntimeError("boom")
        async with store.transaction() as s:
            await s.execute(insert(models.widgets).values(tenant="acme", name="y"))
        async with store.sessions() as s:
            names = (await s.scalars(select(models.widgets.c.name))).all()
        assert names == ["y"]

    async def test_unique_constraint_is_enforced(self, store: Store) -> None:
        async with store.transaction() as s:
            await s.execute(insert(models.widgets).values(tenant="acme", name="dup"))
        with pytest.raises(IntegrityError):
            async with store.transaction() as s:
                await s.execute(insert(models.widgets).values(tenant="acme", name="dup"))
        # scoped by tenant
        async with store.transaction() as s:
            await s.execute(insert(models.widgets).values(tenant="other", name="dup"))

    async def test_idempotency_key_is_unique_per_consumer(self, store: Store) -> None:
        async with store.transaction() as s:
            await s.execute(insert(models.processed).values(consumer="c1", event_id="e1"))
            await s.execute(insert(models.processed).values(consumer="c2", event_id="e1"))
        with pytest.raises(IntegrityError):
            async with store.transaction() as s:
                await s.execute(insert(models.processed).values(consumer="c1", event_id="e1"))

    async def test_outbox_keeps_payload_bytes_and_headers(self, store: Store) -> None:
        payload = b'{"x": "\xc3\xa4"}\x00'
        async with store.transaction() as s:
            await s.execute(insert(models.outbox).values(
                event_id="e1", subject="postroom.mail.parsed.acme", payload=payload,
                headers={"Nats-Msg-Id": "e1"}))
        async with store.sessions() as s:
            row = (await s.execute(select(models.outbox))).one()
        assert bytes(row.payload) == payload and row.headers == {"Nats-Msg-Id": "e1"}
        assert row.published_at is None and row.created_at is not None

    async def test_ping(self, store: Store) -> None:
        await store.ping()

    async def test_replicas_migrating_together_all_start(self, url: str) -> None:
        # several replicas of a service start at once against one fresh database
        stores = [Store(url) for _ in range(4)]
        try:
            await asyncio.gather(*(s.migrate(MIGRATIONS) for s in stores))
            async with stores[0].sessions() as s:
                versions = (await s.execute(text("SELECT version_num FROM alembic_version"))).all()
            assert len(versions) == 1
        finally:
            for s in stores:
                await s.close()

    async def test_pruning_removes_only_rows_past_their_retention(self, store: Store) -> None:
        now = utcnow()
        old, recent = now - timedelta(days=40), now - timedelta(days=1)
        async with store.transaction() as s:
            await s.execute(insert(models.processed), [
                {"consumer": "c", "event_id": "old", "processed_at": old},
                {"consumer": "c", "event_id": "recent", "processed_at": recent},
            ])
            await s.execute(insert(models.outbox), [
                {"event_id": "published-old", "subject": "s", "payload": b"x", "headers": {},
                 "created_at": old, "published_at": old},
                {"event_id": "published-recent", "subject": "s", "payload": b"x",
                 "headers": {}, "created_at": now, "published_at": now},
                # never published: kept whatever its age, the relay still owes it
                {"event_id": "unpublished-old", "subject": "s", "payload": b"x", "headers": {},
                 "created_at": old, "published_at": None},
            ])
        removed = await prune(store, processed=models.processed, outbox=models.outbox,
                              processed_retention=31 * 86400, outbox_retention=86400 / 2)
        assert removed == {"processed_messages": 1, "outbox": 1}
        async with store.sessions() as s:
            assert (await s.scalars(select(models.processed.c.event_id))).all() == ["recent"]
            assert sorted((await s.scalars(select(models.outbox.c.event_id))).all()) == [
                "published-recent", "unpublished-old"]


class TestSqliteStore(StoreContract):
    @pytest.fixture
    def url(self, tmp_path: Path) -> str:
        return f"sqlite+aiosqlite:///{tmp_path}/nested/dir/store.db"


@pytest.mark.postgres
class TestPostgresStore(StoreContract):
    @pytest.fixture
    def url(self, postgres_url: str) -> str:
        return postgres_url

    async def test_relays_of_replicas_never_publish_the_same_rows(self, url: str) -> None:
        # two replicas' relays drain one backlog at the same time: each row is claimed by one
        # of them (FOR UPDATE SKIP LOCKED), published once and marked once; no deadlock
        stores = [Store(url) for _ in range(2)]
        await stores[0].migrate(MIGRATIONS)
        rows = 600
        async with stores[0].transaction() as s:
            await s.execute(insert(models.outbox), [
                {"event_id": f"e{i}", "subject": f"postroom.mail.parsed.t{i}",
                 "payload": b"{}", "headers": {"Nats-Msg-Id": f"e{i}"}, "created_at": utcnow()}
                for i in range(rows)])

        class Recording:
            def __init__(self) -> None:
                self.subjects: list[str] = []

            async def publish(self, payload: bytes, subject: str, **_: Any) -> None:
                await asyncio.sleep(0)  # let the other relay run between publishes
                self.subjects.append(subject)

        brokers = [Recording(), Recording()]
        relays = [OutboxRelay(st, models.outbox, b, page=50)
                  for st, b in zip(stores, brokers, strict=True)]
        try:
            counts = await asyncio.gather(*(r.flush() for r in relays))
            assert sum(counts) == rows
            published = brokers[0].subjects + brokers[1].subjects
            assert len(published) == len(set(published)) == rows
            async with stores[0].sessions() as s:
                left = await s.scalar(select(func.count()).select_from(models.outbox)
                                      .where(models.outbox.c.published_at.is_(None)))
            assert left == 0
        finally:
            for st in stores:
                await st.close()
