"""smtp-ingress's own table: one row per accepted mail and tenant (the dedup record).

Rows are written after the ``mail.received`` event was acknowledged by JetStream. Inserts of
concurrent SMTP sessions are group-committed: one transaction (one fsync) for everything that is
waiting, so throughput does not collapse to one commit per mail under load.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from postroom_runtime import Store
from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Integer,
    MetaData,
    String,
    Table,
    UniqueConstraint,
    select,
    tuple_,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

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
    Column("raw_sha256", String(64), nullable=False),
    Column("size", BigInteger, nullable=False),
    Column("state", String(16), nullable=False, default=RECEIVED, server_default=RECEIVED),
    Column("received_at", DateTime(timezone=True), nullable=False),
    UniqueConstraint("mail_key", name="uq_received_mails_mail_key"),
    UniqueConstraint("tenant", "message_id", name="uq_received_mails_tenant_message_id"),
)


@dataclass(frozen=True)
class ReceivedMail:
    tenant: str
    message_id: str
    mail_key: str
    event_id: str
    raw_sha256: str
    size: int

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
        }


_Request = tuple[list[ReceivedMail], "asyncio.Future[set[str]]"]


class ReceivedMails:
    """Dedup lookups and group-committed inserts on ``received_mails``."""

    def __init__(self, store: Store, max_batch: int = 500) -> None:
        self.store = store
        self.max_batch = max_batch
        dialect = store.engine.dialect.name
        if dialect == "sqlite":
            insert = sqlite_insert(received_mails)
        elif dialect == "postgresql":
            insert = pg_insert(received_mails)
        else:  # pragma: no cover - the runtime supports these two
            raise RuntimeError(f"unsupported database dialect {dialect}")
        # A conflict on (tenant, message_id) or mail_key is a concurrent duplicate: skip the row
        # and tell the caller which keys were really inserted.
        self._insert = insert.on_conflict_do_nothing().returning(received_mails.c.mail_key)
        self._pending: list[_Request] = []
        self._writer: asyncio.Task[None] | None = None
        self.commits = 0  # transactions written (for tests and the benchmark)

    async def known(self, keys: Iterable[tuple[str, str]]) -> set[tuple[str, str]]:
        """Which (tenant, message_id) pairs are already recorded."""
        pairs = list(keys)
        if not pairs:
            return set()
        c = received_mails.c
        if len(pairs) == 1:
            condition = (c.tenant == pairs[0][0]) & (c.message_id == pairs[0][1])
        else:
            condition = tuple_(c.tenant, c.message_id).in_(pairs)
        async with self.store.engine.connect() as conn:
            result = await conn.execute(select(c.tenant, c.message_id).where(condition))
            return {(row[0], row[1]) for row in result}

    async def record(self, mails: list[ReceivedMail]) -> set[str]:
        """Insert rows, committed before this returns; the result is the set of mail keys
        inserted by this call. A key missing from it was recorded concurrently by another
        session (the unique constraint), i.e. this copy is a duplicate."""
        if not mails:
            return set()
        future: asyncio.Future[set[str]] = asyncio.get_running_loop().create_future()
        self._pending.append((mails, future))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._drain(), name="received-mails-writer")
        return await future

    async def _drain(self) -> None:
        try:
            while self._pending:
                batch: list[_Request] = []
                size = 0
                while self._pending and (not batch or size + len(self._pending[0][0])
                                         <= self.max_batch):
                    request = self._pending.pop(0)
                    batch.append(request)
                    size += len(request[0])
                await self._commit(batch)
        finally:
            # cancelled at shutdown: nobody may wait forever
            for _, future in self._pending:
                if not future.done():
                    future.set_exception(RuntimeError("store writer stopped"))
            self._pending.clear()

    async def _commit(self, batch: list[_Request]) -> None:
        now = datetime.now(UTC)
        rows = [mail.row(now) for mails, _ in batch for mail in mails]
        try:
            async with self.store.engine.begin() as conn:
                result = await conn.execute(self._insert, rows)
                inserted = {row[0] for row in result}
            self.commits += 1
        except asyncio.CancelledError:
            for _, future in batch:
                if not future.done():
                    future.set_exception(RuntimeError("store writer stopped"))
            raise
        except Exception as exc:
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        claimed: set[str] = set()
        for mails, future in batch:
            mine = {m.mail_key for m in mails
                    if m.mail_key in inserted and m.mail_key not in claimed}
            claimed |= mine
            if not future.done():
                future.set_result(mine)

    async def close(self) -> None:
        """Wait for the rows already handed over to be committed."""
        if self._writer is not None and not self._writer.done():
            with contextlib.suppress(Exception):
                await self._writer
