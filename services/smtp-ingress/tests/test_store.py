"""The received_mails store contract, run on SQLite and on PostgreSQL: migrations, dedup lookups
(tenant + Message-ID + content), group commit, concurrent duplicates."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, func, select, text

from postroom_contracts import derive_event_id, mail_key
from postroom_runtime import Store
from postroom_smtp_ingress.app import MIGRATIONS
from postroom_smtp_ingress.store import ReceivedMail, ReceivedMails, Seen, received_mails

A, B = "a" * 64, "b" * 64  # two contents


def mail(tenant: str, message_id: str, content: str = A) -> ReceivedMail:
    key = mail_key(tenant, message_id, content)
    return ReceivedMail(tenant=tenant, message_id=message_id, mail_key=key,
                        event_id=derive_event_id(key, "mail.received"),
                        raw_sha256="f" * 64, size=123, content_sha256=content)


def key(tenant: str, message_id: str, content: str = A) -> str:
    return mail_key(tenant, message_id, content)


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


async def test_the_migrations_build_the_table_the_code_uses(store: Store) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from postroom_smtp_ingress.store import metadata

    def differences(connection: Connection) -> list[object]:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        return list(compare_metadata(context, metadata))

    async with store.engine.connect() as conn:
        assert await conn.run_sync(differences) == []


async def test_record_then_seen(store: Store) -> None:
    mails = ReceivedMails(store)
    assert await mails.seen("<a@x>") == Seen({})
    assert await mails.record([mail("acme", "<a@x>"), mail("globex", "<a@x>")]) == {
        key("acme", "<a@x>"), key("globex", "<a@x>")}
    seen = await mails.seen("<a@x>")
    assert seen == Seen({"acme": frozenset({A}), "globex": frozenset({A})})
    assert seen.is_duplicate("acme", A) and not seen.is_reused("acme", A)
    assert not seen.is_duplicate("acme", B) and seen.is_reused("acme", B)
    assert not seen.is_duplicate("initech", A) and not seen.is_reused("initech", A)
    assert await mails.seen("<b@x>") == Seen({})
    async with store.engine.connect() as conn:
        row = (await conn.execute(select(received_mails))).mappings().first()
    assert row is not None and row["state"] == "RECEIVED" and row["received_at"] is not None
    assert (row["content_sha256"], row["raw_sha256"]) == (A, "f" * 64)


async def test_a_reused_message_id_with_other_content_is_recorded_next_to_the_first(
    store: Store,
) -> None:
    mails = ReceivedMails(store)
    assert await mails.record([mail("acme", "<a@x>", A)]) == {key("acme", "<a@x>", A)}
    assert await mails.record([mail("acme", "<a@x>", B)]) == {key("acme", "<a@x>", B)}
    assert await mails.seen("<a@x>") == Seen({"acme": frozenset({A, B})})
    assert await count(store) == 2


async def test_duplicate_insert_is_reported_not_raised(store: Store) -> None:
    mails = ReceivedMails(store)
    assert await mails.record([mail("acme", "<a@x>")]) == {key("acme", "<a@x>")}
    # the unique mail key (tenant + Message-ID + content): the same mail again is a concurrent
    # duplicate
    assert await mails.record([mail("acme", "<a@x>"), mail("acme", "<b@x>")]) == {
        key("acme", "<b@x>")}
    assert await count(store) == 2


async def test_concurrent_records_share_one_transaction(store: Store) -> None:
    mails = ReceivedMails(store)
    results = await asyncio.gather(*(mails.record([mail("acme", f"<{i}@x>")]) for i in range(50)))
    assert results == [{key("acme", f"<{i}@x>")} for i in range(50)]
    assert mails.commits == 1
    assert await count(store) == 50


async def test_concurrent_lookups_share_one_query(store: Store) -> None:
    mails = ReceivedMails(store)
    await mails.record([mail("acme", f"<{i}@x>") for i in range(0, 40, 2)])
    ids = [f"<{i}@x>" for i in range(40)] + ["<0@x>"]  # one asked twice
    results = await asyncio.gather(*(mails.seen(message_id) for message_id in ids))
    expected = [Seen({"acme": frozenset({A})}) if int(mid[1:-3]) % 2 == 0 else Seen({})
                for mid in ids]
    assert results == expected
    assert mails._lookups.batches == 1


async def test_same_mail_twice_in_one_batch_is_inserted_once(store: Store) -> None:
    mails = ReceivedMails(store)
    first, second = await asyncio.gather(mails.record([mail("acme", "<a@x>")]),
                                         mails.record([mail("acme", "<a@x>")]))
    assert first == {key("acme", "<a@x>")}
    assert second == set()
    assert await count(store) == 1


async def test_a_failing_batch_fails_its_callers_only(store: Store) -> None:
    mails = ReceivedMails(store)
    bad = ReceivedMail(tenant="acme", message_id="<x>", mail_key="k" * 80, event_id="e",
                       raw_sha256="a" * 64, size=1, content_sha256=A)  # key too long
    if store.is_sqlite:
        pytest.skip("SQLite does not enforce VARCHAR lengths")
    with pytest.raises(Exception):  # noqa: B017 - the driver's error type
        await mails.record([bad])
    assert await mails.record([mail("acme", "<ok@x>")]) == {key("acme", "<ok@x>")}


async def test_rows_from_before_content_dedup_are_migrated(
    request: pytest.FixtureRequest, tmp_path: Path,
) -> None:
    """A row written at revision 0001 (key from tenant + Message-ID; the blob was exactly what
    the client sent) still makes a resend of that mail a duplicate after the upgrade, and the
    same Message-ID with other content a new mail."""
    for backend in ("sqlite", "postgresql"):
        url = (f"sqlite+aiosqlite:///{tmp_path}/old.db" if backend == "sqlite"
               else request.getfixturevalue("postgres_url"))
        store = Store(url)
        try:
            cfg = Config()
            cfg.set_main_option("script_location", str(MIGRATIONS))

            def to_0001(connection: Connection, cfg: Config = cfg) -> None:
                cfg.attributes["connection"] = connection
                command.upgrade(cfg, "0001")

            async with store.engine.begin() as conn:
                await conn.run_sync(to_0001)
                await conn.execute(text(
                    "INSERT INTO received_mails (tenant, message_id, mail_key, event_id, "
                    "raw_sha256, size, state, received_at) VALUES ('acme', '<old@x>', :key, "
                    "'e', :sha, 10, 'RECEIVED', CURRENT_TIMESTAMP)"),
                    {"key": mail_key("acme", "<old@x>"), "sha": A})
            await store.migrate(MIGRATIONS)
            mails = ReceivedMails(store)
            try:
                seen = await mails.seen("<old@x>")
                assert seen.is_duplicate("acme", A)
                assert seen.is_reused("acme", B)
                assert await mails.record([mail("acme", "<old@x>", B)]) == {
                    key("acme", "<old@x>", B)}
                assert await count(store) == 2
            finally:
                await mails.close()
        finally:
            await store.close()


async def test_a_sqlite_file_takes_the_direct_path_and_rows_read_the_same(tmp_path: Path) -> None:
    store = Store(f"sqlite+aiosqlite:///{tmp_path}/ingress.db")
    await store.migrate(MIGRATIONS)
    mails = ReceivedMails(store)
    try:
        assert mails._sqlite is not None  # sqlite3 on a writer thread, not aiosqlite
        before = datetime.now(UTC).replace(tzinfo=None)
        assert await mails.record([mail("acme", "<a@x>")]) == {key("acme", "<a@x>")}
        async with store.engine.connect() as conn:  # SQLAlchemy reads what sqlite3 wrote
            row = (await conn.execute(select(received_mails))).mappings().one()
        assert isinstance(row["received_at"], datetime)
        assert before <= row["received_at"].replace(tzinfo=None) <= datetime.now(UTC).replace(
            tzinfo=None)
        assert (row["tenant"], row["size"], row["state"], row["content_sha256"]) == (
            "acme", 123, "RECEIVED", A)
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
                       raw_sha256="a" * 64, size=1, content_sha256=A)  # NOT NULL fails it all
    try:
        with pytest.raises(sqlite3.IntegrityError):
            await asyncio.gather(mails.record([mail("acme", "<a@x>")]), mails.record([bad]))
        assert await count(store) == 0  # the batch was one transaction, rolled back
        assert await mails.record([mail("acme", "<a@x>")]) == {key("acme", "<a@x>")}
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
