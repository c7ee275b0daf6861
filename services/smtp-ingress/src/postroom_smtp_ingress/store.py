"""smtp-ingress's own table: one row per accepted mail and tenant (the dedup record).

A mail is a duplicate when a row has its tenant, its Message-ID and its content (the SHA-256
of the message as the client sent it, before our Received header): the same Message-ID with
other content is another mail, with its own ``mail_key``, recorded next to the first.

Rows are written after the ``mail.received`` event was acknowledged by JetStream. Lookups and
inserts of concurrent SMTP sessions are batched: one query for every lookup waiting, one
transaction (one fsync) for every insert waiting, so throughput does not collapse to one
round-trip and one commit per mail under load.

On a SQLite file the batches bypass SQLAlchemy and aiosqlite: a lookup batch is one indexed
SELECT on the event loop's own read connection (WAL: readers never wait for the writer; a few
microseconds), an insert batch is one multi-row INSERT and its COMMIT on a writer thread, handed
over once. Through aiosqlite every statement is several hops between the loop and its thread,
each waiting for the GIL while the loop is busy: a batch took 20-30 ms under load, which, not
CPU, bounded the throughput of 50 concurrent sessions. PostgreSQL keeps the SQLAlchemy path.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    UniqueConstraint,
    bindparam,
    select,
)
from sqlalchemy.dialects import sqlite as sqlite_dialect
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from postroom_runtime import Store, add_runtime_tables
from postroom_runtime.store import sqlite_pragmas

RECEIVED = "RECEIVED"

metadata = MetaData()

received_mails = Table(
    "received_mails",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("tenant", String(63), nullable=False),
    Column("message_id", String(1000), nullable=False),
    Column("mail_key", String(64), nullable=False),
    Column("event_id", String(64), nullable=False),
    # the stored blob (with our Received header)
    Column("raw_sha256", String(64), nullable=False),
    Column("size", BigInteger, nullable=False),
    Column("state", String(16), nullable=False, default=RECEIVED, server_default=RECEIVED),
    Column("received_at", DateTime(timezone=True), nullable=False),
    # the message as the client sent it: with tenant and Message-ID, the dedup identity
    # (the mail key is derived from all three, so its unique constraint holds it)
    Column("content_sha256", String(64), nullable=False),
    UniqueConstraint("mail_key", name="uq_received_mails_mail_key"),
    Index("ix_received_mails_message_id", "message_id"),
)

# the runtime's tables, for the consumers of this service (mail authentication)
processed_messages, outbox = add_runtime_tables(metadata)


@dataclass(frozen=True)
class ReceivedMail:
    tenant: str
    message_id: str
    mail_key: str
    event_id: str
    raw_sha256: str
    size: int
    content_sha256: str

    def row(self, now: datetime) -> dict[str, Any]:
        return {
            "tenant": self.tenant,
            "message_id": self.message_id,
            "mail_key": self.mail_key,
            "event_id": self.event_id,
            "raw_sha256": self.raw_sha256,
            "size": self.size,
            "state": RECEIVED,
            "received_at": now,
            "content_sha256": self.content_sha256,
        }


@dataclass(frozen=True)
class Seen:
    """What the store knows of one Message-ID: per tenant, the contents received with it."""

    contents: dict[str, frozenset[str]]

    def is_duplicate(self, tenant: str, content_sha256: str) -> bool:
        return content_sha256 in self.contents.get(tenant, ())

    def is_reused(self, tenant: str, content_sha256: str) -> bool:
        """The tenant received this Message-ID before, with other content only."""
        known = self.contents.get(tenant, ())
        return bool(known) and content_sha256 not in known


T = TypeVar("T")
R = TypeVar("R")


class Batcher(Generic[T, R]):
    """Runs the requests of concurrent callers together: while one batch is being executed,
    new requests queue up and go into the next one (group commit, group lookup).

    ``run(items)`` returns one result per item, in order; if it raises, every caller of that
    batch gets the exception and later batches still run.
    """

    def __init__(self, run: Callable[[list[T]], Awaitable[list[R]]], name: str,
                 max_batch: int = 500) -> None:
        self._run = run
        self._name = name
        self.max_batch = max_batch
        self._pending: list[tuple[T, asyncio.Future[R]]] = []
        self._task: asyncio.Task[None] | None = None
        self.batches = 0  # executed batches (for tests and the benchmark)

    async def submit(self, item: T) -> R:
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._pending.append((item, future))
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._drain(), name=self._name)
        return await future

    async def _drain(self) -> None:
        try:
            while self._pending:
                batch = self._pending[: self.max_batch]
                del self._pending[: self.max_batch]
                try:
                    results = await self._run([item for item, _ in batch])
                except asyncio.CancelledError:
                    self._fail(batch, RuntimeError(f"{self._name} stopped"))
                    raise
                except Exception as exc:
                    self._fail(batch, exc)
                    continue
                self.batches += 1
                for (_, future), result in zip(batch, results, strict=True):
                    if not future.done():
                        future.set_result(result)
        finally:
            # cancelled at shutdown: nobody may wait forever
            self._fail(self._pending, RuntimeError(f"{self._name} stopped"))
            self._pending.clear()

    @staticmethod
    def _fail(batch: list[tuple[T, asyncio.Future[R]]], exc: BaseException) -> None:
        for _, future in batch:
            if not future.done():
                future.set_exception(exc)

    async def close(self) -> None:
        """Wait for the requests already submitted."""
        if self._task is not None and not self._task.done():
            with contextlib.suppress(Exception):
                await self._task


_COLUMNS = ("tenant", "message_id", "mail_key", "event_id", "raw_sha256", "size", "state",
            "received_at", "content_sha256")
_ROWS_PER_STATEMENT = 1000  # 9 parameters a row: far below SQLite's 32766 variables
_IDS_PER_STATEMENT = 500


class SqliteMails:
    """``received_mails`` on a SQLite file through the ``sqlite3`` module: lookups on the
    calling (event loop) thread, inserts on one writer thread. Values are stored as SQLAlchemy
    stores them (its SQLite bind processors), so both paths read the same rows."""

    def __init__(self, database: str) -> None:
        self.database = database
        self._reader: sqlite3.Connection | None = None
        self._writer: sqlite3.Connection | None = None
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="received-mails-writer")
        dialect = sqlite_dialect.dialect()
        self._received_at = received_mails.c.received_at.type.dialect_impl(dialect) \
            .bind_processor(dialect)

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.database, timeout=30, isolation_level=None,
                               check_same_thread=False)
        sqlite_pragmas(conn, None)
        return conn

    def seen(self, message_ids: list[str]) -> list[tuple[str, str, str]]:
        """``(message_id, tenant, content_sha256)`` of every row with one of ``message_ids``
        (indexed SELECTs; runs on the caller's thread)."""
        if self._reader is None:
            self._reader = self._connect()
        rows: list[tuple[str, str, str]] = []
        for start in range(0, len(message_ids), _IDS_PER_STATEMENT):
            chunk = message_ids[start:start + _IDS_PER_STATEMENT]
            sql = ("SELECT message_id, tenant, content_sha256 FROM received_mails "
                   "WHERE message_id IN (" + ",".join("?" * len(chunk)) + ")")
            rows.extend(self._reader.execute(sql, chunk))
        return rows

    async def insert(self, mails: list[ReceivedMail]) -> set[str]:
        """Insert the rows in one transaction, committed when this returns; the mail keys
        inserted (a conflict on either unique key skips the row)."""
        received_at = self._received_at(datetime.now(UTC)) if self._received_at else None
        rows = [(m.tenant, m.message_id, m.mail_key, m.event_id, m.raw_sha256, m.size, RECEIVED,
                 received_at, m.content_sha256) for m in mails]
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._thread, self._insert, rows)

    def _insert(self, rows: list[tuple[Any, ...]]) -> set[str]:
        if self._writer is None:
            self._writer = self._connect()
        conn = self._writer
        inserted: set[str] = set()
        conn.execute("BEGIN IMMEDIATE")
        try:
            for start in range(0, len(rows), _ROWS_PER_STATEMENT):
                chunk = rows[start:start + _ROWS_PER_STATEMENT]
                sql = (f"INSERT INTO received_mails ({', '.join(_COLUMNS)}) VALUES "
                       + ",".join(["(?,?,?,?,?,?,?,?,?)"] * len(chunk))
                       + " ON CONFLICT DO NOTHING RETURNING mail_key")
                inserted.update(row[0] for row in
                                conn.execute(sql, [v for row in chunk for v in row]))
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        return inserted

    def _close_writer(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    async def close(self) -> None:
        await asyncio.get_running_loop().run_in_executor(self._thread, self._close_writer)
        self._thread.shutdown(wait=True)
        if self._reader is not None:
            self._reader.close()
            self._reader = None


def _sqlite_file(store: Store) -> str | None:
    """The database file of a SQLite store (None for another database or in-memory SQLite)."""
    if not store.is_sqlite:
        return None
    database = store.url.database
    if not database or database == ":memory:" or database.startswith("file:"):
        return None
    return database


class ReceivedMails:
    """Dedup lookups and inserts on ``received_mails``, each batched across concurrent SMTP
    sessions: one SELECT for every lookup waiting, one transaction for every insert waiting."""

    def __init__(self, store: Store, max_batch: int = 500) -> None:
        self.store = store
        database = _sqlite_file(store)
        self._sqlite = SqliteMails(database) if database is not None else None
        dialect = store.engine.dialect.name
        if dialect == "sqlite":
            insert = sqlite_insert(received_mails)
        elif dialect == "postgresql":
            insert = pg_insert(received_mails)
        else:  # pragma: no cover - the runtime supports these two
            raise RuntimeError(f"unsupported database dialect {dialect}")
        # A conflict on mail_key (tenant + Message-ID + content) is a concurrent duplicate: skip
        # the row and tell the caller which keys were really inserted.
        self._insert = insert.on_conflict_do_nothing().returning(received_mails.c.mail_key)
        c = received_mails.c
        self._select = select(c.message_id, c.tenant, c.content_sha256).where(
            c.message_id.in_(bindparam("ids", expanding=True))
        )
        self._lookups: Batcher[str, Seen] = Batcher(
            self._lookup_batch, "received-mails-lookup", max_batch)
        self._inserts: Batcher[list[ReceivedMail], set[str]] = Batcher(
            self._insert_batch, "received-mails-insert", max_batch)

    @property
    def commits(self) -> int:
        """Insert transactions committed so far."""
        return self._inserts.batches

    async def seen(self, message_id: str) -> Seen:
        """The dedup lookup: which tenants received this Message-ID, with which contents."""
        return await self._lookups.submit(message_id)

    async def record(self, mails: list[ReceivedMail]) -> set[str]:
        """Insert rows, committed before this returns; the result is the set of mail keys
        inserted by this call. A key missing from it was recorded concurrently by another
        session (the unique constraint), i.e. this copy is a duplicate."""
        return await self._inserts.submit(mails) if mails else set()

    async def _lookup_batch(self, requests: list[str]) -> list[Seen]:
        wanted = sorted(set(requests))
        if self._sqlite is not None:
            rows = self._sqlite.seen(wanted)
        else:
            async with self.store.engine.connect() as conn:
                rows = [tuple(r) for r in await conn.execute(self._select, {"ids": wanted})]
        found: dict[str, dict[str, set[str]]] = {}
        for message_id, tenant, content in rows:
            found.setdefault(message_id, {}).setdefault(tenant, set()).add(content)
        empty = Seen({})
        seen = {mid: Seen({t: frozenset(c) for t, c in tenants.items()})
                for mid, tenants in found.items()}
        return [seen.get(message_id, empty) for message_id in requests]

    async def _insert_batch(self, requests: list[list[ReceivedMail]]) -> list[set[str]]:
        if self._sqlite is not None:
            inserted = await self._sqlite.insert([mail for mails in requests for mail in mails])
        else:
            now = datetime.now(UTC)
            rows = [mail.row(now) for mails in requests for mail in mails]
            async with self.store.engine.begin() as conn:
                inserted = set((await conn.execute(self._insert, rows)).scalars())
        results: list[set[str]] = []
        claimed: set[str] = set()  # the same mail twice in one batch: the first one wins
        for mails in requests:
            mine = {m.mail_key for m in mails
                    if m.mail_key in inserted and m.mail_key not in claimed}
            claimed |= mine
            results.append(mine)
        return results

    async def close(self) -> None:
        """Wait for the lookups and rows already handed over."""
        await self._lookups.close()
        await self._inserts.close()
        if self._sqlite is not None:
            await self._sqlite.close()
