"""One abstract store suite, run on SQLite and on PostgreSQL."""

from __future__ import annotations

import importlib.util
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import func, insert, inspect, select
from sqlalchemy.exc import IntegrityError

from postroom_runtime import Store

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


class TestSqliteStore(StoreContract):
    @pytest.fixture
    def url(self, tmp_path: Path) -> str:
        return f"sqlite+aiosqlite:///{tmp_path}/nested/dir/store.db"


@pytest.mark.postgres
class TestPostgresStore(StoreContract):
    @pytest.fixture
    def url(self, postgres_url: str) -> str:
        return postgres_url
