"""Store layer: SQLAlchemy 2 async on SQLite (default) or PostgreSQL via asyncpg.

Every service owns its database. Besides its own tables each store holds two runtime tables:
``processed_messages`` (consumer idempotency, beyond JetStream's minutes-long dedup window) and
``outbox`` (events committed with the state change that caused them, published after commit).
Schema changes go through each service's Alembic migrations (``Store.migrate``).
"""

from __future__ import annotations

import asyncio
import fcntl
import hashlib
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import (
    JSON,
    Column,
    DateTime,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    event,
    text,
)
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)


def utcnow() -> datetime:
    return datetime.now(UTC)


def add_runtime_tables(metadata: MetaData) -> tuple[Table, Table]:
    """Declare the runtime tables on a service's metadata (its migrations create them)."""
    processed = Table(
        "processed_messages",
        metadata,
        Column("consumer", String(100), primary_key=True),
        Column("event_id", String(64), primary_key=True),
        Column("processed_at", DateTime(timezone=True), nullable=False, default=utcnow),
    )
    outbox = Table(
        "outbox",
        metadata,
        Column("id", Integer, primary_key=True, autoincrement=True),
        Column("event_id", String(64), nullable=False, unique=True),
        Column("subject", String(255), nullable=False),
        Column("payload", LargeBinary, nullable=False),
        Column("headers", JSON, nullable=False, default=dict),
        Column("created_at", DateTime(timezone=True), nullable=False, default=utcnow),
        Column("published_at", DateTime(timezone=True), nullable=True, index=True),
    )
    return processed, outbox


def create_runtime_tables(op: Any) -> None:
    """For a service's first Alembic migration: create the runtime tables."""
    import sqlalchemy as sa

    op.create_table(
        "processed_messages",
        sa.Column("consumer", sa.String(100), primary_key=True),
        sa.Column("event_id", sa.String(64), primary_key=True),
        sa.Column("processed_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "outbox",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("event_id", sa.String(64), nullable=False, unique=True),
        sa.Column("subject", sa.String(255), nullable=False),
        sa.Column("payload", sa.LargeBinary, nullable=False),
        sa.Column("headers", sa.JSON, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("published_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_index("ix_outbox_published_at", "outbox", ["published_at"])


def migration_lock_key(script_location: Path | str) -> int:
    """A stable signed 64-bit advisory-lock key for one service's migrations."""
    name = f"postroom-migrations:{Path(script_location).resolve().parent.name}"
    digest = hashlib.sha256(name.encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def sqlite_pragmas(dbapi_connection: Any, _record: Any = None) -> None:
    """The settings of every SQLite connection (the engine's, and raw ``sqlite3`` ones)."""
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=FULL")  # a committed row survives power loss
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


class Store:
    """An async engine plus session factory for one service's database."""

    def __init__(self, url: str, *, echo: bool = False) -> None:
        self.url = make_url(url)
        self.is_sqlite = self.url.get_backend_name() == "sqlite"
        kwargs: dict[str, Any] = {"echo": echo}
        if self.is_sqlite:
            database = self.url.database
            if database and database != ":memory:":
                Path(database).parent.mkdir(parents=True, exist_ok=True)
            kwargs["connect_args"] = {"timeout": 30}
        else:
            kwargs.update(pool_size=10, max_overflow=10, pool_pre_ping=True)
        self.engine: AsyncEngine = create_async_engine(self.url, **kwargs)
        if self.is_sqlite:
            event.listen(self.engine.sync_engine, "connect", sqlite_pragmas)
        self.sessions = async_sessionmaker(self.engine, expire_on_commit=False)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncSession]:
        """A session inside one transaction: commit on success, roll back on error."""
        async with self.sessions() as session, session.begin():
            yield session

    async def ping(self) -> None:
        async with self.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))

    async def migrate(self, script_location: Path | str) -> None:
        """Bring the schema to the newest Alembic revision of ``script_location``."""
        cfg = Config()
        cfg.set_main_option("script_location", str(script_location))

        def upgrade(connection: Connection) -> None:
            cfg.attributes["connection"] = connection
            command.upgrade(cfg, "head")

        # replicas starting together: one migrates, the others wait, then find the schema at
        # head. PostgreSQL: an advisory lock held by the migration's transaction; SQLite (one
        # host): an exclusive lock on a file beside the database.
        async with self._sqlite_migration_lock(), self.engine.begin() as conn:
            if not self.is_sqlite:
                await conn.execute(text("SELECT pg_advisory_xact_lock(:key)"),
                                   {"key": migration_lock_key(script_location)})
            await conn.run_sync(upgrade)

    @asynccontextmanager
    async def _sqlite_migration_lock(self) -> AsyncIterator[None]:
        database = self.url.database if self.is_sqlite else None
        if not database or database == ":memory:":
            yield
            return
        fd = os.open(f"{database}.migrate.lock", os.O_CREAT | os.O_RDWR, 0o600)
        try:
            await asyncio.to_thread(fcntl.flock, fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # releases the lock

    async def close(self) -> None:
        await self.engine.dispose()
