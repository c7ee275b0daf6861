"""The list's indexed searches on both stores, the subject (``q=``) and the sender
(``sender=``): the indexed paths (pg_trgm on PostgreSQL, the FTS5 trigram tables on SQLite)
give the same mails, in the same keyset pages, as a plain substring match of the case-folded
text; through the projector for umlauts, case and a From that arrives later; rows from before
migration 0004 get their sender text."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from alembic import command
from alembic.config import Config
from console_harness import ADMIN_KEY, Bus, Console
from sqlalchemy import Connection, insert, inspect, select, text

from postroom_console import api as api_module
from postroom_console import store
from postroom_console.api import Api
from postroom_console.app import MIGRATIONS
from postroom_console.auth import Principal
from postroom_console.handlers import fold, new_mail, sender_fold
from postroom_contracts import MailParsed, MailReceived, derive_event_id
from postroom_runtime.store import Store

ADMIN = Principal("k", "admin", None)
SUBJECTS = ["Ärger mit der Rechnung", "ÄRGER im Büro", "Straße gesperrt", "Re: Rechnung 77",
            "Invoice 100%_done", "meeting on Monday", "Größe XL", "Order PO-0042", None]
# (header_from, envelope_from): a match in either, in one only, neither, odd characters
SENDERS = [("Anna.Schmidt@Example.org", "bounce-7@lists.example.org"),
           ("support@globex.example", "support@globex.example"),
           (None, ""),  # no From header, the null sender
           ("Jörg.Groß@Straße.example", "JORG@STRASSE.EXAMPLE"),
           ("only-header@example.com", "env@other.example"),
           ("x@example.com", "Only-Envelope@Bounce.example"),
           ("100%_sure@weird.example", "a/b@weird.example"),
           (None, "no-header@example.net"),
           (None, None)]
RARE = 37  # the one mail of "Rare.Sender@Unique.example" (in its envelope only)
BASE = datetime(2026, 11, 1, tzinfo=UTC)


def sender_of(i: int) -> tuple[str | None, str | None]:
    if i == RARE:
        return ("x@example.com", "Rare.Sender@Unique.example")
    return SENDERS[i % len(SENDERS)]


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
        row["header_from"], row["envelope_from"] = sender_of(i)
        row["sender_search"] = sender_fold(row["header_from"], row["envelope_from"])
        rows.append(store.fit(store.mails, row))
    async with s.transaction() as session:
        await session.execute(insert(store.mails), rows)
    api = Api.__new__(Api)
    api.runtime = Runtime(s)  # type: ignore[assignment]
    try:
        yield api
    finally:
        await s.close()


async def pages(api: Api, q: str | None = None, *, sender: str | None = None,
                tenant: str | None = None, limit: int = 4) -> list[str]:
    """The keys of every page, in order; every page but the last is full (so equal keys mean
    equal keyset pages)."""
    keys: list[str] = []
    cursor = None
    while True:
        page = await api.list_mails(ADMIN, tenant=tenant, label=None, status=None,
                                    sender=sender, since=None, until=None, q=q, limit=limit,
                                    cursor=cursor)
        keys += [m["mail_key"] for m in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            return keys
        assert len(page["items"]) == limit


def expected(q: str | None = None, tenant: str | None = None, *,
             sender: str | None = None) -> list[str]:
    """What a scan finds: newest first, the folded term within the folded subject and within
    either sender address (the filters' meaning, computed here without any index)."""
    found = []
    for i in reversed(range(60)):
        subject = SUBJECTS[i % len(SUBJECTS)]
        if q is not None and (subject is None or q.casefold() not in subject.casefold()):
            continue
        if sender is not None and not any(
                a is not None and sender.casefold() in a.casefold() for a in sender_of(i)):
            continue
        if tenant is None or tenant == ("acme" if i % 2 else "globex"):
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
                await session.execute(text("DROP INDEX ix_mails_sender_trgm"))
    for needle in NEEDLES:
        assert await pages(search_api, needle) == expected(needle), needle
    assert await pages(search_api, "rechnung", tenant="acme") == expected("rechnung", "acme")
    assert expected("ärger") and expected("ÄRGER") == expected("ärger")
    assert expected("STRASSE") == expected("straße") != []


SENDER_NEEDLES = [
    "anna.schmidt", "ANNA.SCHMIDT@EXAMPLE.ORG",  # case, in the From header only
    "lists.example", "BOUNCE-7",  # in the envelope sender only
    "only-header", "only-envelope", "no-header", "support@globex",  # one of them, or both
    "rare.sender@UNIQUE", "unique.example",  # the one mail
    "jörg", "JÖRG.GROSS", "straße", "STRASSE",  # folded: ß is ss
    "100%_", "%", "_", "a/b@", "/",  # LIKE's wildcards and the escape character
    "an", "x", "@", "ü",  # shorter than a trigram: always the walk
    "example", "e",  # nearly every mail
    "org\nbounce", "example.org\nbounce-7@lists.example.org",  # across both: never
    "a\x00", "zzz-nobody",
]


@pytest.mark.parametrize("path", ["index", "probe-3", "scan"])
async def test_sender_finds_the_same_mails_by_index_and_by_scan(
        search_api: Api, path: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """``probe-3``: on SQLite a term with more than three matches walks, a rarer one is
    read through the FTS5 table (both paths in one run); ``scan``: no index at all."""
    if path == "probe-3":
        monkeypatch.setattr(api_module, "SEARCH_FTS_MAX", 3)
    if path == "scan":
        monkeypatch.setattr(api_module, "SEARCH_FTS_MAX", -1)
        if not search_api.runtime.store.is_sqlite:
            async with search_api.runtime.store.transaction() as session:
                await session.execute(text("DROP INDEX ix_mails_sender_trgm"))
    for needle in SENDER_NEEDLES:
        assert await pages(search_api, sender=needle) == expected(sender=needle), repr(needle)
    for needle in ("anna", "example", "JÖRG"):
        assert await pages(search_api, sender=needle, tenant="acme") == expected(
            sender=needle, tenant="acme"), needle
        assert await pages(search_api, sender=needle, limit=1) == expected(sender=needle)
    # both filters in one statement (each with its own FTS5 table or pattern)
    for q, sender in (("rechnung", "anna"), ("straße", "strasse"), ("e", "example.org")):
        assert await pages(search_api, q, sender=sender) == expected(q, sender=sender), q
    assert expected(sender="rare.sender@UNIQUE") == [f"m{RARE:03d}"]
    assert expected(sender="anna.schmidt") and expected(sender="lists.example")
    assert expected(sender="STRASSE") == expected(sender="jörg") != []
    assert expected(sender="org\nbounce") == [] and expected(sender="example") != []
    assert expected(q="rechnung", sender="anna") != []


async def test_sender_follows_a_changed_from(search_api: Api) -> None:
    """The row's From changes (as the projector writes it: every column); the FTS5 row
    follows (SQLite's update trigger), so the old address no longer finds it, the new one
    does, on either path; and a deleted mail is gone from both."""
    m = store.mails
    key = f"m{RARE:03d}"
    async with search_api.runtime.store.transaction() as session:
        await session.execute(m.update().where(m.c.mail_key == key).values(
            header_from="Claire.Dubois@Fabrikam.example", envelope_from="claire@fabrikam.example",
            sender_search=sender_fold("Claire.Dubois@Fabrikam.example",
                                      "claire@fabrikam.example")))
    assert await pages(search_api, sender="rare.sender") == []
    assert await pages(search_api, sender="CLAIRE.dubois") == [key]
    assert await pages(search_api, sender="fabrikam") == [key]
    async with search_api.runtime.store.transaction() as session:
        await session.execute(m.delete().where(m.c.mail_key == key))
    assert await pages(search_api, sender="fabrikam") == []
    if search_api.runtime.store.is_sqlite:
        async with search_api.runtime.store.sessions() as session:
            stale = (await session.execute(text(
                "SELECT count(*) FROM mails_sender_fts WHERE mails_sender_fts MATCH "
                "'\"rare.sender\" OR \"fabrikam\"'"))).scalar_one()
        assert stale == 0


async def test_the_index_is_there(search_api: Api) -> None:
    async with search_api.runtime.store.sessions() as session:
        if search_api.runtime.store.is_sqlite:
            for fts, term, column in (("mails_subject_fts", "ärger", "subject_search"),
                                      ("mails_sender_fts", "anna", "sender_search")):
                plan = (await session.execute(text(
                    f"EXPLAIN QUERY PLAN SELECT rowid FROM {fts} "
                    f"WHERE {fts} MATCH '\"{term}\"'"))).all()
                assert "VIRTUAL TABLE INDEX" in " ".join(str(r[-1]) for r in plan)
                count = (await session.execute(text(
                    f"SELECT count(*) FROM {fts}"))).scalar_one()
                stored = (await session.execute(text(
                    f"SELECT count(*) FROM mails WHERE {column} IS NOT NULL"))).scalar_one()
                assert count == stored
            assert stored == sum(1 for i in range(60) if sender_of(i) != (None, None))
        else:
            await session.execute(text("SET enable_seqscan = off"))
            for index, column, term in (("ix_mails_subject_trgm", "subject_search", "ärger"),
                                        ("ix_mails_sender_trgm", "sender_search", "anna")):
                plan = (await session.execute(text(
                    f"EXPLAIN SELECT mail_key FROM mails WHERE {column} LIKE '%{term}%'"
                ))).all()
                assert index in " ".join(r[0] for r in plan)


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


async def test_sender_through_the_projector(bus: Bus, console: Console) -> None:
    """mail.received without a From header (the envelope sender only), its From arriving
    later with mail.parsed in another batch: the sender text follows the row (SQLite: the FTS5
    row by the update trigger), on either address, and again after a rebuild."""
    a = await bus.mail(sender="Anna.Schmidt@Contoso.example", stages=1)
    b = await bus.mail(sender="anna.schmidt@contoso.example", stages=5)
    key = uuid.uuid4().hex[:20]
    raw = await bus.blobs.put(b"From: x\r\n\r\nhi\r\n", content_type="message/rfc822")
    received = MailReceived(
        event_id=derive_event_id(key, "mail.received"), occurred_at=datetime.now(UTC),
        tenant="acme", mail_key=key, message_id=f"<{key}@example.org>", mailbox="orders",
        envelope_from="bounces+4711@Lists.Example.net", recipients=["orders@acme.example"],
        header_from=None, subject="Newsletter", size=raw.size, raw=raw)
    await bus.publish(received)
    await console.caught_up(bus)
    async with console.client(ADMIN_KEY) as http:
        async def found(sender: str) -> list[str]:
            response = await http.get("/api/v1/mails", params={"sender": sender})
            assert response.status_code == 200, response.text
            return [m["mail_key"] for m in response.json()["items"]]

        assert await found("ANNA.schmidt@") == [b.mail_key, a.mail_key]
        assert await found("lists.example.NET") == [key]
        assert await found("Jörg") == []
        await bus.publish(MailParsed.caused_by(
            received, occurred_at=received.occurred_at + timedelta(milliseconds=60),
            message_id=received.message_id, subject="Newsletter",
            header_from="Jörg.Groß@Lists.Example.net", body_text="hi", has_html=False,
            raw=raw))
        await console.caught_up(bus)
        assert await found("JÖRG.GROSS") == [key]  # the From header, folded
        assert await found("bounces+4711") == [key]  # the envelope sender still
        assert await found("lists.example.net") == [key]
        assert await found("contoso.example") == [b.mail_key, a.mail_key]
        assert await found("Jö") == [key]  # shorter than a trigram: the walk
    await console.admin("POST", "/api/v1/admin/rebuild")
    await console.caught_up(bus)
    async with console.client(ADMIN_KEY) as http:
        assert await found("jörg.groß") == [key]
        assert await found("anna.schmidt@contoso") == [b.mail_key, a.mail_key]


async def test_rows_from_before_0004_get_their_sender_text(database_url: str) -> None:
    """Mails projected at revision 0003 (no sender text): the upgrade folds them in batches
    (more rows than one batch), the index serves them, and the downgrade leaves the subject
    search as it was."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))

    def to(revision: str, down: bool = False) -> Callable[[Connection], None]:
        def run(connection: Connection) -> None:
            cfg.attributes["connection"] = connection
            (command.downgrade if down else command.upgrade)(cfg, revision)
        return run

    s = Store(database_url)
    try:
        async with s.engine.begin() as conn:
            await conn.run_sync(to("0003"))
        rows = []
        for i in range(10_007):
            row = new_mail(f"old{i:05d}", "acme", BASE + timedelta(seconds=i))
            del row["sender_search"]
            row["subject"] = f"Order {i}"
            row["subject_search"] = fold(row["subject"])
            if i % 1000 != 999:
                row["header_from"] = f"Buyer{i}@Shop.example" if i % 3 else None
                row["envelope_from"] = f"bounce-{i}@Mailer.Example"
            rows.append(row)
        async with s.transaction() as session:
            await session.execute(insert(store.mails), rows)
        await s.migrate(MIGRATIONS)
        async with s.sessions() as session:
            stored = dict((await session.execute(
                select(store.mails.c.mail_key, store.mails.c.sender_search))).all())
        assert stored == {r["mail_key"]: sender_fold(r["header_from"], r["envelope_from"])
                          for r in rows}
        assert stored["old00001"] == "buyer1@shop.example\nbounce-1@mailer.example"
        assert stored["old00003"] == "bounce-3@mailer.example"
        assert stored["old00999"] is None
        api = Api.__new__(Api)
        api.runtime = Runtime(s)  # type: ignore[assignment]
        assert await pages(api, sender="BUYER7") == [
            f"old{i:05d}" for i in reversed(range(10_007))
            if i % 3 and i % 1000 != 999 and str(i).startswith("7")]
        assert await pages(api, sender="bounce-10006@") == ["old10006"]
        assert await pages(api, sender="buyer9999@") == []  # no sender at all
        if s.is_sqlite:
            async with s.sessions() as session:
                count = (await session.execute(text(
                    "SELECT count(*) FROM mails_sender_fts"))).scalar_one()
            assert count == 10_007 - 10

        async with s.engine.begin() as conn:
            await conn.run_sync(to("0003", down=True))
            columns = await conn.run_sync(
                lambda c: {x["name"] for x in inspect(c).get_columns("mails")})
            tables = await conn.run_sync(lambda c: set(inspect(c).get_table_names()))
        assert "sender_search" not in columns and "subject_search" in columns
        assert "mails_sender_fts" not in tables
        async with s.transaction() as session:  # 0002's triggers survived the column's drop
            await session.execute(text(
                "UPDATE mails SET subject = 'Ärger', subject_search = 'ärger' "
                "WHERE mail_key = 'old00005'"))
        await s.migrate(MIGRATIONS)
        assert await pages(api, "ÄRGER") == ["old00005"]
        assert await pages(api, sender="buyer5") == [
            f"old{i:05d}" for i in reversed(range(10_007))
            if i % 3 and i % 1000 != 999 and str(i).startswith("5")]
    finally:
        await s.close()


@pytest.mark.postgres
async def test_without_the_right_to_create_pg_trgm_the_migration_goes_on_and_search_works(
        postgres_database: Any, caplog: pytest.LogCaptureFixture) -> None:
    """A role that may create tables but not extensions (no CREATE on the database): the
    migration logs it (0002 and 0004) and goes on; the subject search and the sender filter
    scan and find the same mails."""
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
            assert "subject search without an index" in caplog.text
            assert "sender filter without an index" in caplog.text
            async with s.sessions() as session:
                found = (await session.execute(text(
                    "SELECT count(*) FROM pg_indexes WHERE indexname IN "
                    "('ix_mails_subject_trgm', 'ix_mails_sender_trgm')"))).scalar_one()
            assert found == 0
            row = new_mail("m-umlaut1", "acme", BASE)
            row["subject"] = "Ärger im Büro"
            row["subject_search"] = fold(row["subject"])
            row["header_from"], row["envelope_from"] = "Jörg@Büro.example", "j@buero.example"
            row["sender_search"] = sender_fold(row["header_from"], row["envelope_from"])
            async with s.transaction() as session:
                await session.execute(insert(store.mails), [store.fit(store.mails, row)])
            api = Api.__new__(Api)
            api.runtime = Runtime(s)  # type: ignore[assignment]
            assert await pages(api, "ÄRGER IM") == ["m-umlaut1"]
            assert await pages(api, sender="JÖRG@BÜRO") == ["m-umlaut1"]
            assert await pages(api, sender="J@BUERO") == ["m-umlaut1"]
            assert await pages(api, sender="jörg@buero") == []
        finally:
            await s.close()
    finally:
        await admin.execute(f"DROP OWNED BY {role}")
        await admin.execute(f"DROP ROLE {role}")
        await admin.close()
