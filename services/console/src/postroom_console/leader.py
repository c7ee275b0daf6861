"""Which console replica writes the projection: the one holding the projector lock.

PostgreSQL: a session advisory lock (``pg_try_advisory_lock``) on a connection of its own,
held as long as that connection lives; when the process dies, PostgreSQL drops the lock with
the connection and another replica takes it on its next try. SQLite (replicas on one host at
most): an exclusive ``flock`` on a file beside the database, dropped by the kernel when the
process dies. The projector's position update is conditional as well (see
``Projector._write``), so even two writers for a moment could not both advance it.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import logging
import os
from typing import Any

from sqlalchemy import text

from postroom_runtime.store import Store

log = logging.getLogger(__name__)

LOCK_NAME = "postroom-console-projector"


def lock_key(name: str = LOCK_NAME) -> int:
    """A signed 64-bit key for ``pg_try_advisory_lock``, derived from ``name``."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)


class Leadership:
    def __init__(self, store: Store) -> None:
        self.store = store
        self._conn: Any = None
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._conn is not None or self._fd is not None

    async def try_acquire(self) -> bool:
        if self.held:
            return True
        if self.store.is_sqlite:
            return self._try_flock()
        conn = await self.store.engine.connect()
        try:
            conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
            got = (await conn.execute(text("SELECT pg_try_advisory_lock(:key)"),
                                      {"key": lock_key()})).scalar_one()
        except BaseException:
            await conn.close()
            raise
        if not got:
            await conn.close()
            return False
        self._conn = conn
        return True

    def _try_flock(self) -> bool:
        database = self.store.url.database
        if not database or database == ":memory:":
            self._fd = -1  # one process, nothing to share
            return True
        fd = os.open(f"{database}.projector.lock", os.O_CREAT | os.O_RDWR, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        self._fd = fd
        return True

    async def check(self) -> None:
        """Raises when the lock may be gone (its connection failed)."""
        if self._conn is not None:
            await asyncio.wait_for(self._conn.execute(text("SELECT 1")), 10)

    async def release(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                await conn.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": lock_key()})
            with contextlib.suppress(Exception):
                await conn.close()
        fd, self._fd = self._fd, None
        if fd is not None and fd >= 0:
            os.close(fd)
