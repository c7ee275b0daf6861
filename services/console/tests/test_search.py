"""The subject search on both stores: the indexed paths (pg_trgm on PostgreSQL, the FTS5
trigram table on SQLite) give the same mails, in the same keyset pages, as a plain substring
match of the case-folded subject; through the projector for umlauts and case."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from console_harness import ADMIN_KEY, Bus, Console
from sqlalchemy import insert, text

from postroom_console import api as api_module
from postroom_console import store
from postroom_console.api import Api
from postroom_console.app import MIGRATIONS
from postroom_console.auth import Principal
from postroom_console.handlers import fold, new_mail
from postroom_runtime.store import Store

ADMIN = Principal("k", "admin", None)
SUBJECTS = ["Ärger mit der Rechnung", "ÄRGER im Büro", "Straße gesperrt", "Re: Rechnung 77",
            "Invoice 100%_done", "meeting on Monday", "Größe XL", "Order PO-0042", None]
BASE = datetime(2026, 11, 1, tzinfo=UTC)


class Runtime:
    def __init__(self, store_: Store) -> None:
        self.store = store_


@pytest.fixture
async def search_api(database_url: str) -> AsyncIterator[Api]:
    s = Store(database_url)
    await s.migrate(MIGRATIONS)
    rows = []
    for i in range(60):
        row = new_mail(f"m{i:03d}", "acme" if i % 2 else "globex", BASE + timedelta(minutes=i))
        row["subject"] = SUBJECTS[i % len(SUBJECTS)]
        row["subject_search"] = fold(row["subject"])
        rows.append(store.fit(store.mails, row))
    async with s.transaction() as session:
        await session.execute(insert(store.mails), rows)
    api = Api.__new__(Api)
    api.runtime = Runtime(s)  # type: ignore[assignment]
    try:
        yield api
    finally:
        await s.close()


async def pages(api: Api, q: str, **filters: Any) -> list[str]:
    keys: list[str] = []
    cursor = None
    while True:
        page = await api.list_mails(ADMIN, tenant=filters.get("tenant"), label=None, status=None,
                                    sender=None, since=None, until=None, q=q, limit=4,
                                    cursor=cursor)
        keys += [m["mail_key"] for m in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            return keys


def expected(q: str, tenant: str | None = None) -> list[str]:
    found = []
    for i in reversed(range(60)):
        subject = SUBJECTS[i % len(SUBJECTS)]
        if subject is not None and q.casefold() in subject.casefold() and (
                tenant is None or tenant == ("acme" if i % 2 else "globex")):
            found.append(f"m{i:03d}")
    return found


NEEDLES = ["ärger", "ÄRGER", "rechnung", "RE", "ü", "straße", "STRASSE", "größe", "100%_",
           "%", "_", "po-0042", "no such subject", "e"]


@pytest.mark.parametrize("scan", [False, True], ids=["index", "scan"])
async def test_search_finds_the_same_mails_by_index_and_by_scan(
        search_api: Api, scan: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    if scan:  # SQLite: no FTS5 probe is small enough; PostgreSQL: no trigram index
        monkeypatch.setattr(api_module, "SEARCH_FTS_MAX", -1)
        if not search_api.runtime.store.is_sqlite:
            async with search_api.runtime.store.transaction() as session:
                await session.execute(text("DROP INDEX ix_mails_subject_trgm"))
    for needle in NEEDLES:
        assert await pages(search_api, needle) == expected(needle), needle
    assert await pages(search_api, "rechnung", tenant="acme") == expected("rechnung", "acme")
    assert expected("ärger") and expected("ÄRGER") == expected("ärger")
    assert expected("STRASSE") == expected("straße") != []


async def test_the_index_is_there(search_api: Api) -> None:
    async with search_api.runtime.store.sessions() as session:
        if search_api.runtime.store.is_sqlite:
            plan = (await session.execute(text(
                "EXPLAIN QUERY PLAN SELECT rowid FROM mails_subject_fts "
                "WHERE mails_subject_fts MATCH '\"ärger\"'"))).all()
            assert "VIRTUAL TABLE INDEX" in " ".join(str(r[-1]) for r in plan)
            count = (await session.execute(text(
                "SELECT count(*) FROM mails_subject_fts"))).scalar_one()
            assert count == sum(1 for i in range(60) if SUBJECTS[i % len(SUBJECTS)])
        else:
            await session.execute(text("SET enable_seqscan = off"))
            plan = (await session.execute(text(
                "EXPLAIN SELECT mail_key FROM mails WHERE subject_search LIKE '%ärger%'"))).all()
            assert "ix_mails_subject_trgm" in " ".join(r[0] for r in plan)


async def test_search_through_the_projector(bus: Bus, console: Console) -> None:
    a = await bus.mail(subject="Ärger mit der Lieferung", stages=1)
    b = await bus.mail(subject="Re: ärger", stages=5)
    await bus.mail(subject="Lieferung ok", stages=1)
    await console.caught_up(bus)
    async with console.client(ADMIN_KEY) as http:
        async def found(q: str) -> list[str]:
            response = await http.get("/api/v1/mails", params={"q": q})
            assert response.status_code == 200, response.text
            return [m["mail_key"] for m in response.json()["items"]]

        assert await found("ÄRGER") == [b.mail_key, a.mail_key]
        assert await found("ärger mit") == [a.mail_key]
        assert await found("Är") == [b.mail_key, a.mail_key]
        assert await found("liefer") != []
        assert await found("zzz") == []
    # a rebuild keeps the search (the FTS rows follow the deleted and re-inserted mails)
    await console.admin("POST", "/api/v1/admin/rebuild")
    await console.caught_up(bus)
    async with console.client(ADMIN_KEY) as http:
        response = await http.get("/api/v1/mails", params={"q": "ärger mit"})
        assert [m["mail_key"] for m in response.json()["items"]] == [a.mail_key]


@pytest.mark.postgres
async def test_without_the_right_to_create_pg_trgm_the_migration_goes_on_and_search_works(
        postgres_database: Any, caplog: pytest.LogCaptureFixture) -> None:
    """A role that may create tables but not extensions (no CREATE on the database): the
    migration logs it and goes on; the search scans and finds the same mails."""
    import uuid

    import asyncpg
    from sqlalchemy.engine import make_url

    role = f"console_limited_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(postgres_database.dsn)
    try:
        await admin.execute(f"CREATE ROLE {role} LOGIN")
        await admin.execute(f"GRANT USAGE, CREATE ON SCHEMA public TO {role}")
        url = make_url(postgres_database.url).set(username=role, password=None)
        s = Store(url.render_as_string(hide_password=False))
        try:
            with caplog.at_level("WARNING", logger="postroom_console.migrations"):
                await s.migrate(MIGRATIONS)
            assert "pg_trgm not available" in caplog.text
            async with s.sessions() as session:
                found = (await session.execute(text(
                    "SELECT count(*) FROM pg_indexes WHERE indexname = 'ix_mails_subject_trgm'"
                ))).scalar_one()
            assert found == 0
            row = new_mail("m-umlaut1", "acme", BASE)
            row["subject"] = "Ärger im Büro"
            row["subject_search"] = fold(row["subject"])
            async with s.transaction() as session:
                await session.execute(insert(store.mails), [store.fit(store.mails, row)])
            api = Api.__new__(Api)
            api.runtime = Runtime(s)  # type: ignore[assignment]
            assert await pages(api, "ÄRGER IM") == ["m-umlaut1"]
        finally:
            await s.close()
    finally:
        await admin.execute(f"DROP OWNED BY {role}")
        await admin.execute(f"DROP ROLE {role}")
        await admin.close()
