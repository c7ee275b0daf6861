"""The received_mails store contract, run on SQLite and on PostgreSQL: migrations, dedup lookups,
group commit, concurrent duplicates."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import func, select

from postroom_contracts import derive_event_id, mail_key
from postroom_runtime import Store
from postroom_smtp_ingress.app import MIGRATIONS
from postroom_smtp_ingress.store import ReceivedMail, ReceivedMails, received_mails


def mail(tenant: str, message_id: str) -> ReceivedMail:
    key = mail_key(tenant, message_id)
    return ReceivedMail(tenant=tenant, message_id=message_id, mail_key=key,
                        event_id=derive_event_id(key, "mail.received"),
                        raw_sha256="a" * 64, size=123)


@pytest.fixture(params=["sqlite", "postgresql"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    if request.param == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path}/ingress.db"
    else:
        url = request.getfixturevalue("postgres_url")
    store = Store(url)
    await store.migrate(MIGRATIONS)
    await store.migrate(MIGRATIONS)  # idempotent
    try:
        yield store
    finally:
        await store.close()


async def count(store: Store) -> int:
    async with store.engine.connect() as conn:
        return int((await conn.scalar(select(func.count()).select_from(received_mails))) or 0)


async def test_record_then_known(store: Store) -> None:
    mails = ReceivedMails(store)
    acme, globex = mail_key("acme", "<a@x>"), mail_key("globex", "<a@x>")
    assert await mails.known([acme]) == set()
    assert await mails.record([mail("acme", "<a@x>"), mail("globex", "<a@x>")]) == {acme, globex}
    assert await mails.known([acme]) == {acme}
    assert await mails.known([acme, globex, mail_key("initech", "<a@x>"),
                              mail_key("acme", "<b@x>")]) == {acme, globex}
    async with store.engine.connect() as conn:
        row = (await conn.execute(select(received_mails))).mappings().first()
    assert row is not None and row["state"] == "RECEIVED" and row["received_at"] is not None


async def test_duplicate_insert_is_reported_not_raised(store: Store) -> None:
    mails = ReceivedMails(store)
    assert await mails.record([mail("acme", "<a@x>")]) == {mail_key("acme", "<a@x>")}
    # the unique constraint: a second row for (tenant, Message-ID) is a concurrent duplicate
    assert await mails.record([mail("acme", "<a@x>"), mail("acme", "<b@x>")]) == {
        mail_key("acme", "<b@x>")}
    assert await count(store) == 2


async def test_concurrent_records_share_one_transaction(store: Store) -> None:
    mails = ReceivedMails(store)
    results = await asyncio.gather(*(mails.record([mail("acme", f"<{i}@x>")]) for i in range(50)))
    assert results == [{mail_key("acme", f"<{i}@x>")} for i in range(50)]
    assert mails.commits == 1
    assert await count(store) == 50


async def test_concurrent_lookups_share_one_query(store: Store) -> None:
    mails = ReceivedMails(store)
    await mails.record([mail("acme", f"<{i}@x>") for i in range(0, 40, 2)])
    keys = [mail_key("acme", f"<{i}@x>") for i in range(40)]
    results = await asyncio.gather(*(mails.known([key]) for key in keys))
    assert results == [{key} if i % 2 == 0 else set() for i, key in enumerate(keys)]
    assert mails._lookups.batches == 1


async def test_same_mail_twice_in_one_batch_is_inserted_once(store: Store) -> None:
    mails = ReceivedMails(store)
    first, second = await asyncio.gather(mails.record([mail("acme", "<a@x>")]),
                                         mails.record([mail("acme", "<a@x>")]))
    assert first == {mail_key("acme", "<a@x>")}
    assert second == set()
    assert await count(store) == 1


async def test_a_failing_batch_fails_its_callers_only(store: Store) -> None:
    mails = ReceivedMails(store)
    bad = ReceivedMail(tenant="acme", message_id="<x>", mail_key="k" * 80, event_id="e",
                       raw_sha256="a" * 64, size=1)  # mail_key longer than its column
    if store.is_sqlite:
        pytest.skip("SQLite does not enforce VARCHAR lengths")
    with pytest.raises(Exception):  # noqa: B017 - the driver's error type
        await mails.record([bad])
    assert await mails.record([mail("acme", "<ok@x>")]) == {mail_key("acme", "<ok@x>")}


async def test_a_sqlite_file_takes_the_direct_path_and_rows_read_the_same(tmp_path: Path) -> None:
    store = Store(f"sqlite+aiosqlite:///{tmp_path}/ingress.db")
    await store.migrate(MIGRATIONS)
    mails = ReceivedMails(store)
    try:
        assert mails._sqlite is not None  # sqlite3 on a writer thread, not aiosqlite
        before = datetime.now(UTC).replace(tzinfo=None)
        assert await mails.record([mail("acme", "<a@x>")]) == {mail_key("acme", "<a@x>")}
        async with store.engine.connect() as conn:  # SQLAlchemy reads what sqlite3 wrote
            row = (await conn.execute(select(received_mails))).mappings().one()
        assert isinstance(row["received_at"], datetime)
        assert before <= row["received_at"].replace(tzinfo=None) <= datetime.now(UTC).replace(
            tzinfo=None)
        assert (row["tenant"], row["size"], row["state"]) == ("acme", 123, "RECEIVED")
    finally:
        await mails.close()
        await store.close()


async def test_a_failing_sqlite_batch_commits_nothing_and_the_next_one_works(
    tmp_path: Path,
) -> None:
    store = Store(f"sqlite+aiosqlite:///{tmp_path}/ingress.db")
    await store.migrate(MIGRATIONS)
    mails = ReceivedMails(store)
    bad = ReceivedMail(tenant=None, message_id="<x>", mail_key="k", event_id="e",  # type: ignore[arg-type]
                       raw_sha256="a" * 64, size=1)  # NOT NULL fails the whole statement
    try:
        with pytest.raises(sqlite3.IntegrityError):
            await asyncio.gather(mails.record([mail("acme", "<a@x>")]), mails.record([bad]))
        assert await count(store) == 0  # the batch was one transaction, rolled back
        assert await mails.record([mail("acme", "<a@x>")]) == {mail_key("acme", "<a@x>")}
        assert await count(store) == 1
    finally:
        await mails.close()
        await store.close()


async def test_in_memory_sqlite_keeps_the_sqlalchemy_path() -> None:
    store = Store("sqlite+aiosqlite:///:memory:")
    try:
        assert ReceivedMails(store)._sqlite is None
    finally:
        await store.close()
