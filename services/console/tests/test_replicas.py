"""Two console processes on one store: one holds the projector lock and projects, both serve
the API and a live WebSocket feed; when the projecting one is killed, the other takes over
from the stored position, and nothing is lost or applied twice."""

from __future__ import annotations

import asyncio
import json
import signal
from typing import Any

import websockets
from console_harness import ADMIN_KEY, Bus, Console, until


async def roles(*consoles: Console) -> list[str]:
    return [(await c.projection())["role"] for c in consoles]


async def test_one_replica_projects_both_serve_and_the_other_takes_over(
        bus: Bus, start_console: Any) -> None:
    env = {"CONSOLE_LEADER_RETRY_SECONDS": "0.5", "CONSOLE_FOLLOW_POLL_SECONDS": "0.1"}
    a = await start_console("console-a", **env)
    first = await bus.mail(stages=5)
    await a.caught_up(bus)
    b = await start_console("console-b", **env)
    await b.caught_up(bus)
    assert await roles(a, b) == ["leader", "follower"]

    url = f"ws://127.0.0.1:{b.port}/api/v1/ws?key={ADMIN_KEY}"
    async with websockets.connect(url) as ws:
        hello = json.loads(await asyncio.wait_for(ws.recv(), 30))
        assert hello["type"] == "hello" and hello["position"] == 5
        second = await bus.mail(stages=3)
        got = [json.loads(await asyncio.wait_for(ws.recv(), 30)) for _ in range(3)]
        assert [m["sequence"] for m in got] == [6, 7, 8]  # fed from the table on b
        assert {m["data"]["mail_key"] for m in got} == {second.mail_key}
        for c in (a, b):
            async with c.client(ADMIN_KEY) as http:
                items = (await http.get("/api/v1/mails")).json()["items"]
                assert [m["mail_key"] for m in items] == [second.mail_key, first.mail_key]

        a.proc.proc.send_signal(signal.SIGKILL)  # the leader dies mid-stream
        await asyncio.to_thread(a.proc.proc.wait, 30)

        async def b_leads() -> bool:
            return (await b.projection())["role"] == "leader"

        await until(b_leads, "console-b projecting")
        third = await bus.mail(stages=5)
        got = [json.loads(await asyncio.wait_for(ws.recv(), 30)) for _ in range(5)]
        assert [m["sequence"] for m in got] == [9, 10, 11, 12, 13]
        assert got[-1]["data"]["label"] == third.label
    await b.caught_up(bus)
    async with b.client(ADMIN_KEY) as http:
        detail = (await http.get(f"/api/v1/mails/{third.mail_key}")).json()
        assert [e["sequence"] for e in detail["timeline"]] == [9, 10, 11, 12, 13]
        events = (await http.get("/api/v1/events", params={"since": 0, "limit": 100})).json()
        assert [m["sequence"] for m in events["items"]] == list(range(1, 14))
    assert (await b.projection())["failures"] == []


async def test_a_rebuild_asked_of_a_follower_is_done_by_the_leader(
        bus: Bus, start_console: Any) -> None:
    env = {"CONSOLE_LEADER_RETRY_SECONDS": "0.5", "CONSOLE_FOLLOW_POLL_SECONDS": "0.1"}
    a = await start_console("console-a", **env)
    await bus.mail(stages=5)
    await a.caught_up(bus)
    b = await start_console("console-b", **env)
    assert await roles(a, b) == ["leader", "follower"]
    before = (await a.admin("GET", "/api/v1/events", params={"since": 0})).json()["items"]
    response = await b.admin("POST", "/api/v1/admin/rebuild")
    assert response.status_code == 202, response.text

    async def rebuilt() -> bool:
        state = await a.projection()
        return state["rebuilt_at"] is not None and state["position"] == 5

    await until(rebuilt, "the leader rebuilt the projection")
    after = (await a.admin("GET", "/api/v1/events", params={"since": 0})).json()["items"]
    assert [m["sequence"] for m in after] == [m["sequence"] for m in before]
    await bus.mail(stages=1)
    await a.caught_up(bus)
    assert (await a.projection())["failures"] == []
