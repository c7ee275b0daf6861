"""postgres_url: a fresh database per test on a real PostgreSQL server."""

from __future__ import annotations

import asyncpg
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from postroom_testing.plugin import PostgresDatabase
from postroom_testing.postgres import (
    EmbeddedPostgres,
    PostgresServerInfo,
    PostgresUnavailableError,
    create_database,
    drop_database,
    find_or_start_server,
    unique_database_name,
)


async def test_postgres_url_is_an_empty_database_we_can_write(
    postgres_url: str, postgres_database: PostgresDatabase
) -> None:
    assert postgres_url.startswith("postgresql+asyncpg://postgres@127.0.0.1:")
    assert postgres_url.endswith("/" + postgres_database.name)
    engine = create_async_engine(postgres_url)
    try:
        async with engine.begin() as conn:
            tables = await conn.scalar(
                text("SELECT count(*) FROM information_schema.tables WHERE table_schema='public'")
            )
            assert tables == 0
            await conn.execute(text("CREATE TABLE mail (key text PRIMARY KEY, size int NOT NULL)"))
            await conn.execute(text("INSERT INTO mail VALUES ('k1', 4096)"))
        async with engine.connect() as conn:
            assert await conn.scalar(text("SELECT size FROM mail WHERE key = 'k1'")) == 4096
            assert await conn.scalar(text("SELECT current_database()")) == postgres_database.name
    finally:
        await engine.dispose()


def test_sync_tests_can_use_it_too(postgres_database: PostgresDatabase) -> None:
    assert postgres_database.dsn.startswith("postgresql://postgres@127.0.0.1:")
    assert postgres_database.name.startswith("t_sync_tests_can_use_it_too_")


async def test_database_is_dropped_even_with_open_connections(
    postgres_server: PostgresServerInfo,
) -> None:
    name = unique_database_name("drop")
    await create_database(postgres_server.admin_dsn, name)
    leftover = await asyncpg.connect(postgres_server.dsn(name))  # a test forgot to close this
    await drop_database(postgres_server.admin_dsn, name)
    admin = await asyncpg.connect(postgres_server.admin_dsn)
    try:
        assert await admin.fetchval("SELECT count(*) FROM pg_database WHERE datname=$1", name) == 0
    finally:
        await admin.close()
        leftover.terminate()


def test_unique_names_fit_postgres_identifier_limit() -> None:
    names = {unique_database_name("x" * 200 + "[param-1]") for _ in range(100)}
    assert len(names) == 100
    assert all(len(n) <= 63 and n.replace("_", "").isalnum() for n in names)


async def test_embedded_postgres_fallback_runs_here(tmp_path) -> None:
    # The CI machine has a PostgreSQL on 5432, so the fallback would otherwise never run there.
    server = EmbeddedPostgres().start()
    try:
        assert server.port != 5432
        conn = await asyncpg.connect(server.admin_dsn)
        try:
            await conn.execute("CREATE TABLE t (id int)")
            await conn.execute("INSERT INTO t VALUES (1), (2)")
            assert await conn.fetchval("SELECT sum(id) FROM t") == 3
            assert (await conn.fetchval("SHOW server_version")).split(".")[0].isdigit()
        finally:
            await conn.close()
    finally:
        server.cleanup()
    assert not server.is_running
    assert not server.base_dir.exists()


def test_forced_embedded_mode(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("POSTROOM_TEST_PG_URL", raising=False)
    monkeypatch.setenv("POSTROOM_TEST_PG", "embedded")
    info, server = find_or_start_server()
    try:
        assert info.source == "embedded"
        assert server is not None and server.is_running
        assert info.sqlalchemy_url("x") == f"postgresql+asyncpg://postgres@127.0.0.1:{info.port}/x"
    finally:
        assert server is not None
        server.cleanup()


def test_unreachable_server_fails_loudly(monkeypatch: pytest.MonkeyPatch) -> None:
    from postroom_testing.procs import free_port

    port = free_port()  # nothing listens there
    monkeypatch.setenv("POSTROOM_TEST_PG_URL", f"postgresql+asyncpg://postgres@127.0.0.1:{port}/x")
    with pytest.raises(PostgresUnavailableError, match="does not accept connections"):
        find_or_start_server()
