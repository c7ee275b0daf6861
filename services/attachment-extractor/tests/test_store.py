"""The extractor's store and migrations: one suite, run on SQLite and on PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import inspect
from sqlalchemy.exc import IntegrityError

from postroom_attachment_extractor import store
from postroom_attachment_extractor.app import MIGRATIONS, document_id
from postroom_attachment_extractor.store import Status
from postroom_runtime import Store

T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)


def _doc(key: str, index: int, tenant: str = "acme", at: datetime = T0) -> dict[str, object]:
    return dict(
        document_id=document_id(key, index), tenant=tenant, mail_key=key, index=index,
        filename=f"Bestellung-{index}-ü.pdf", declared_type="application/pdf",
        sniffed_type="application/pdf", size=10, sha256="ab" * 32, blob_bucket="postroom-blobs",
        blob_key="sha256/" + "ab" * 32, supported=True,
        metadata={"pages": 1, "text_excerpt": "Grüße"}, created_at=at,
    )


async def _mail(s: object, key: str, tenant: str = "acme", at: datetime = T0) -> None:
    await store.receive_mail(s, key=key, tenant=tenant, message_id=f"<{key}@x>",  # type: ignore[arg-type]
                             received_at=at, at=at)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path}/extractor.db"
    return str(request.getfixturevalue("postgres_url"))


@pytest.fixture
async def db(url: str) -> AsyncIterator[Store]:
    db = Store(url)
    await db.migrate(MIGRATIONS)
    yield db
    await db.close()


async def test_migrations_create_every_table_and_match_the_models(db: Store) -> None:
    await db.migrate(MIGRATIONS)  # twice: a no-op
    async with db.engine.connect() as conn:
        tables = await conn.run_sync(lambda c: {
            name: {col["name"] for col in inspect(c).get_columns(name)}
            for name in inspect(c).get_table_names()})
    for table in store.metadata.sorted_tables:
        assert tables[table.name] == {c.name for c in table.columns}, table.name
    assert "alembic_version" in tables


async def test_a_mail_goes_through_its_states_with_documents(db: Store) -> None:
    key = "k" * 32
    async with db.transaction() as s:
        await _mail(s, key)
        await store.transition(s, key, Status.STORED, T0 + timedelta(seconds=1))
        for index in range(3):
            await store.add_document(s, **_doc(key, index))
        await store.transition(s, key, Status.PARSED, T0 + timedelta(seconds=2),
                               defects=["part 1.2: oddity"], document_count=3)
    async with db.sessions() as s:
        mail = (await store.get_mail(s, key))._mapping
        transitions = await store.transitions_of(s, key)
        docs = await store.list_documents(s, mail_key=key)
    assert mail["status"] == "PARSED" and mail["document_count"] == 3
    assert mail["defects"] == ["part 1.2: oddity"]
    assert store.utc(mail["received_at"]) == T0
    assert [(t.status, store.utc(t.at)) for t in transitions] == [
        ("RECEIVED", T0), ("STORED", T0 + timedelta(seconds=1)),
        ("PARSED", T0 + timedelta(seconds=2))]
    assert [d._mapping["index"] for d in docs] == [0, 1, 2]
    assert docs[0]._mapping["metadata"] == {"pages": 1, "text_excerpt": "Grüße"}
    assert docs[0]._mapping["filename"] == "Bestellung-0-ü.pdf"


async def test_a_parsed_mail_recorded_at_once_equals_its_states_one_by_one(db: Store) -> None:
    # the handler's fast path for a new mail writes exactly what the state machine writes
    stepwise, at_once = "s" * 32, "o" * 32
    times = (T0, T0 + timedelta(seconds=1), T0 + timedelta(seconds=2))
    async with db.transaction() as s:
        await store.receive_mail(s, key=stepwise, tenant="acme", message_id="<m@x>",
                                 received_at=T0 - timedelta(seconds=5), at=times[0])
        await store.transition(s, stepwise, Status.STORED, times[1])
        for index in range(2):
            await store.add_document(s, **_doc(stepwise, index, at=times[2]))
        await store.transition(s, stepwise, Status.PARSED, times[2], error=None,
                               defects=["part 2: oddity"], document_count=2)
        assert await store.record_parsed(
            s, key=at_once, tenant="acme", message_id="<m@x>",
            received_at=T0 - timedelta(seconds=5), at=times, defects=["part 2: oddity"],
            docs=[_doc(at_once, i, at=times[2]) for i in range(2)])
    # a mail that has its row already: nothing written, the caller takes the state machine
    for key in (stepwise, at_once):
        async with db.transaction() as s:
            assert not await store.record_parsed(
                s, key=key, tenant="acme", message_id="<m@x>", received_at=T0,
                at=(T0, T0, T0), defects=[], docs=[_doc(key, 5)])

    def without_key(row: object, *keys: str) -> dict[str, object]:
        m = dict(row._mapping)  # type: ignore[attr-defined]
        return {k: store.utc(v) if isinstance(v, datetime) else v
                for k, v in m.items() if k not in keys}

    async with db.sessions() as s:
        mails = [without_key(await store.get_mail(s, k), "mail_key") for k in (stepwise, at_once)]
        steps = [[(t.status, store.utc(t.at)) for t in await store.transitions_of(s, k)]
                 for k in (stepwise, at_once)]
        docs = [[without_key(d, "mail_key", "document_id")
                 for d in await store.list_documents(s, mail_key=k)] for k in (stepwise, at_once)]
    assert mails[0] == mails[1] and mails[0]["status"] == "PARSED"
    assert steps[0] == steps[1] == [("RECEIVED", times[0]), ("STORED", times[1]),
                                    ("PARSED", times[2])]
    assert docs[0] == docs[1] and len(docs[0]) == 2


async def test_a_document_index_is_unique_per_mail(db: Store) -> None:
    key = "u" * 32
    async with db.transaction() as s:
        await _mail(s, key)
        await store.add_document(s, **_doc(key, 0))
    with pytest.raises(IntegrityError):
        async with db.transaction() as s:
            await store.add_document(s, **{**_doc(key, 0), "document_id": "another-id"})


async def test_a_crashed_transaction_leaves_nothing(db: Store) -> None:
    key = "c" * 32
    with pytest.raises(RuntimeError):
        async with db.transaction() as s:
            await _mail(s, key)
            await store.add_document(s, **_doc(key, 0))
            raise RuntimeError("killed mid-way")
    async with db.sessions() as s:
        assert await store.get_mail(s, key) is None
        assert await store.transitions_of(s, key) == []
        assert await store.list_documents(s) == []


async def test_documents_are_listed_newest_first_by_tenant_and_page(db: Store) -> None:
    async with db.transaction() as s:
        for n, tenant in enumerate(["acme", "globex", "acme"]):
            key = f"{n}" * 32
            at = T0 + timedelta(minutes=n)
            await _mail(s, key, tenant, at)
            for index in range(2):
                await store.add_document(s, **_doc(key, index, tenant, at))
    async with db.sessions() as s:
        everything = await store.list_documents(s)
        acme = await store.list_documents(s, tenant="acme")
        page = await store.list_documents(s, tenant="acme", limit=3, offset=1)
    assert [(d.mail_key[0], d._mapping["index"]) for d in everything] == [
        ("2", 0), ("2", 1), ("1", 0), ("1", 1), ("0", 0), ("0", 1)]
    assert {d.tenant for d in acme} == {"acme"} and len(acme) == 4
    assert [(d.mail_key[0], d._mapping["index"]) for d in page] == [("2", 1), ("0", 0), ("0", 1)]


async def test_a_failed_mail_can_be_received_again(db: Store) -> None:
    key = "f" * 32
    async with db.transaction() as s:
        await _mail(s, key)
        await store.transition(s, key, Status.FAILED, T0, error="BlobNotFound: sha256/x")
    async with db.transaction() as s:
        await _mail(s, key, at=T0 + timedelta(hours=1))  # replayed from the dead letters
        await store.transition(s, key, Status.PARSED, T0 + timedelta(hours=1))
    async with db.sessions() as s:
        mail = (await store.get_mail(s, key))._mapping
        statuses = [t.status for t in await store.transitions_of(s, key)]
        failed = await store.list_mails(s, tenant=None, status="FAILED", limit=10, offset=0)
    assert mail["status"] == "PARSED" and mail["error"] is None
    assert statuses == ["RECEIVED", "FAILED", "RECEIVED", "PARSED"]
    assert failed == []
