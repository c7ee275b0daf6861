"""The projection is a function of the stream: a rebuild gives the same rows, a restart
resumes from the stored position without applying anything twice, an event that cannot be
applied is recorded and the projection goes on; ``postroom replay console`` drives a rebuild."""

from __future__ import annotations

import asyncio
import sys
from typing import Any

from console_harness import ADMIN_KEY, Bus, Console, dump, until
from sqlalchemy import select, text

from postroom_console import store
from postroom_runtime import Store


async def read_model(database_url: str) -> dict[str, list[str]]:
    """Every row of the read model, as comparable text (failures without their clock time)."""
    db = Store(database_url)
    try:
        async with db.sessions() as session:
            out = {}
            for table, order in ((store.mails, store.mails.c.mail_key),
                                 (store.timeline, store.timeline.c.sequence),
                                 (store.deliveries, store.deliveries.c.delivery_id),
                                 (store.projection_failures,
                                  store.projection_failures.c.sequence)):
                rows = (await session.execute(select(table).order_by(order))).all()
                out[table.name] = [dump({k: v for k, v in r._mapping.items()
                                         if k != "failed_at"}) for r in rows]
            return out
    finally:
        await db.close()


async def publish_mix(bus: Bus) -> None:
    await bus.mail(label="order")
    await bus.mail(tenant="globex", label="spam", voicemail=False)
    await bus.mail(stages=3)
    # a payload no rule can read: recorded, not retried forever
    await bus.js.publish("postroom.mail.classified.acme", b'{"event_id": "broken-1", '
                         b'"tenant": "acme", "mail_key": "brokenkey01", "classification": 7}',
                         headers={"Postroom-Event-Type": "mail.classified",
                                  "Postroom-Mail-Key": "brokenkey01",
                                  "Nats-Msg-Id": "broken-1"})
    await bus.js.publish("postroom.mail.received.acme", b"not json",
                         headers={"Postroom-Mail-Key": "brokenkey02"})
    # an event type this release does not know: kept in the timeline
    await bus.js.publish("postroom.reply.sent.acme",
                         b'{"event_id": "future-1", "tenant": "acme", "mail_key": '
                         b'"futurekey01", "occurred_at": "2026-11-30T10:00:00Z"}',
                         headers={"Postroom-Event-Type": "reply.sent",
                                  "Postroom-Mail-Key": "futurekey01"})
    await bus.mail(label="meeting")


async def test_rebuild_gives_identical_rows(bus: Bus, console: Console,
                                            database_url: str) -> None:
    await publish_mix(bus)
    state = await console.caught_up(bus)
    assert [(f["sequence"], f["mail_key"]) for f in state["failures"]] == [
        (state["position"] - 9, "brokenkey02"), (state["position"] - 10, "brokenkey01")]
    assert "invalid mail.classified" in state["failures"][1]["error"]
    before = await read_model(database_url)
    assert len(before["mails"]) == 5  # 4 mails, the unknown event's mail
    assert len(before["timeline"]) == await bus.stream_last() - 1  # all but the undecodable
    correction = await console.admin("POST", f"/api/v1/mails/{_first_key(before)}/label",
                                     json={"label": "spam"})
    assert correction.status_code == 202

    async def corrected() -> bool:
        model = await read_model(database_url)
        return any('"corrected_label": "spam"' in row for row in model["mails"])

    await until(corrected, "the correction projected")
    before = await read_model(database_url)
    keys_before = (await console.admin("GET", "/api/v1/keys")).json()

    response = await console.admin("POST", "/api/v1/admin/rebuild")
    assert response.status_code == 202
    assert response.json()["stream_last"] == await bus.stream_last()
    state = await console.caught_up(bus)
    assert state["rebuilt_at"] is not None
    after = await read_model(database_url)
    assert after == before
    assert (await console.admin("GET", "/api/v1/keys")).json() == keys_before


async def planner_statistics(database_url: str) -> dict[str, Any]:
    """What the store's planner knows of the projection's tables (SQLite: sqlite_stat1 rows
    per table; PostgreSQL: pg_stats rows per table; both are written by ANALYZE only)."""
    db = Store(database_url)
    try:
        async with db.sessions() as session:
            if db.is_sqlite:
                exists = (await session.execute(text(
                    "SELECT count(*) FROM sqlite_master WHERE name = 'sqlite_stat1'"))).scalar()
                if not exists:
                    return {}
                rows = (await session.execute(text(
                    "SELECT tbl, count(*) FROM sqlite_stat1 GROUP BY tbl"))).all()
            else:
                rows = (await session.execute(text(
                    "SELECT tablename, count(*) FROM pg_stats WHERE schemaname = 'public' "
                    "GROUP BY tablename"))).all()
            return {r[0]: r[1] for r in rows}
    finally:
        await db.close()


async def test_statistics_are_refreshed_when_a_rebuild_has_caught_up(
        bus: Bus, console: Console, database_url: str) -> None:
    await publish_mix(bus)
    await console.caught_up(bus)  # a first catch-up from an empty store is a rebuild too

    async def analyzed() -> dict[str, Any] | None:
        state = await console.projection()
        return state if state["analyzed_at"] else None

    first = (await until(analyzed, "statistics after the first catch-up"))["analyzed_at"]
    stats = await planner_statistics(database_url)
    assert {"mails", "timeline"} <= set(stats), stats
    await console.admin("POST", "/api/v1/admin/rebuild")

    async def again() -> dict[str, Any] | None:
        state = await console.projection()
        return state if state["analyzed_at"] != first and state["lag"] == 0 else None

    state = await until(again, "statistics after the rebuild")
    assert state["position"] == await bus.stream_last()
    # and not after every batch: a live event leaves them alone
    await bus.mail(stages=1)
    await console.caught_up(bus)
    assert (await console.projection())["analyzed_at"] == state["analyzed_at"]


def _first_key(model: dict[str, list[str]]) -> str:
    import json

    return str(json.loads(model["mails"][0])["mail_key"])


async def test_restart_resumes_without_duplicates(bus: Bus, start_console: Any,
                                                  database_url: str) -> None:
    console = await start_console()
    await bus.mail()
    await console.caught_up(bus)
    position = (await console.projection())["position"]
    await console.proc.astop()
    # events published while the console is down, then a hard kill half-way through more
    await bus.mail(label="spam")
    await console.proc.astart()
    await console.caught_up(bus)
    assert (await console.projection())["position"] == position + 8
    console.proc.kill()
    await bus.mail(label="intro")
    await console.proc.astart()
    await console.caught_up(bus)
    model = await read_model(database_url)
    assert len(model["timeline"]) == await bus.stream_last() == 24
    assert len(model["mails"]) == 3
    async with console.client(ADMIN_KEY) as http:
        for item in (await http.get("/api/v1/mails")).json()["items"]:
            assert (item["documents"], item["transcripts"], item["deliveries"]) == (1, 1, 1)
            detail = (await http.get(f"/api/v1/mails/{item['mail_key']}")).json()
            assert len(detail["timeline"]) == 8


async def test_postroom_replay_console(bus: Bus, console: Console,
                                       database_url: str) -> None:
    for _ in range(3):
        await bus.mail()
    await console.caught_up(bus)
    before = await read_model(database_url)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "postroom_cli", "replay", "console", "--url", console.url,
        "--key", ADMIN_KEY, "--timeout", "120",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 180)
    assert proc.returncode == 0, err.decode()
    assert "rebuilding the console's projection: 24 events to read" in out.decode()
    assert "caught up: position 24" in out.decode()
    assert (await console.projection())["rebuilt_at"] is not None
    assert await read_model(database_url) == before
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "postroom_cli", "replay", "console", "--url", console.url,
        "--key", "wrong", stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 180)
    assert proc.returncode == 1
    assert "refused the key (401)" in err.decode()


async def test_the_projection_survives_a_nats_restart(bus: Bus, console: Console,
                                                      nats_server: Any,
                                                      database_url: str) -> None:
    await bus.mail()
    await console.caught_up(bus)
    await bus.close()
    nats_server.stop(timeout=5)
    nats_server.start()
    bus2 = await Bus.connect(nats_server.url)
    try:
        await bus2.mail(label="spam")
        await console.caught_up(bus2, within=120)
        model = await read_model(database_url)
        assert len(model["timeline"]) == await bus2.stream_last() == 16
        assert len(model["mails"]) == 2
    finally:
        await bus2.close()


async def test_an_event_the_store_refuses_is_recorded_and_the_rest_applied(
        bus: Bus, start_console: Any, database_url: str) -> None:
    """A value no column takes (a size beyond 64 bits) fails the batch's transaction: its
    events are applied one by one, the refused one is recorded, nothing loops. (Published
    before the console starts, so they arrive as one batch.)"""
    from postroom_contracts import MailReceived

    await bus.mail(stages=1)
    good = await bus.mail(stages=0)  # blobs only
    template = (await bus.mail(stages=1)).events[0]
    assert isinstance(template, MailReceived)
    huge = template.model_copy(update={"event_id": "huge-size-1", "mail_key": "hugesize01",
                                       "size": 10**20})
    await bus.publish(huge)
    await bus.mail(label="spam")
    console = await start_console()
    state = await console.caught_up(bus)
    assert state["position"] == await bus.stream_last() == 11
    assert "applying its events one by one" in console.proc.log_text()
    (failure,) = state["failures"]
    assert failure["sequence"] == 3 and failure["mail_key"] == "hugesize01"
    model = await read_model(database_url)
    assert len(model["mails"]) == 3  # the two single events' mails and the whole one
    assert len(model["timeline"]) == 10
    assert good.events == []
    # the projection goes on live
    await bus.mail(stages=2)
    await console.caught_up(bus)
