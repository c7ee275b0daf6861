"""The WebSocket feed against the real uvicorn server over a socket: backlog since a
sequence, live messages in the seed's shape, resume after a reconnect, tenant scope."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
import websockets
from console_harness import ADMIN_KEY, Bus, Console


class Feed:
    def __init__(self, ws: Any) -> None:
        self.ws = ws

    async def next(self, within: float = 30) -> dict[str, Any]:
        return dict(json.loads(await asyncio.wait_for(self.ws.recv(), within)))

    async def take(self, n: int, within: float = 30) -> list[dict[str, Any]]:
        return [await self.next(within) for _ in range(n)]

    async def next_is(self, sequence: int, mail_key: str) -> None:
        """The next message is the event ``sequence`` of ``mail_key``, published after the
        ones taken so far: nothing else was sent in between (a positive signal instead of a
        pause that proves nothing on a busy machine)."""
        message = await self.next()
        assert (message.get("sequence"), message.get("data", {}).get("mail_key")) == (
            sequence, mail_key), message


def ws_url(console: Console, path: str, key: str, since: int | None = None) -> str:
    url = f"ws://127.0.0.1:{console.port}{path}?key={key}"
    return url if since is None else f"{url}&since={since}"


async def test_live_feed_and_resume(bus: Bus, console: Console) -> None:
    first = await bus.mail(label="meeting")
    await console.caught_up(bus)
    async with websockets.connect(ws_url(console, "/api/v1/ws", ADMIN_KEY, since=0)) as ws:
        feed = Feed(ws)
        backlog = await feed.take(8)
        assert [m["sequence"] for m in backlog] == list(range(1, 9))
        # after the backlog: the position from which live delivery is complete
        assert await feed.next() == {"type": "hello", "position": 8, "tenant": None}
        assert [m["event"] for m in backlog][:5] == [
            "mail.received", "mail.authenticated", "document.stored", "mail.parsed",
            "mail.classified"]
        classified = backlog[4]
        assert classified["type"] == "email_event"
        assert classified["data"]["email_id"] == first.message_id
        assert classified["data"]["classification"] == "meeting"
        assert classified["data"]["confidence"] == 0.93
        assert classified["data"]["processed_at"].endswith("Z")
        assert classified["data"]["mail_key"] == first.mail_key
        assert classified["timestamp"].endswith("Z")

        # live: a second mail's events arrive as the projection applies them
        second = await bus.mail(label="order", stages=5)
        live = await feed.take(5)
        assert [m["sequence"] for m in live] == list(range(9, 14))
        assert live[0]["event"] == "mail.received"
        assert live[0]["data"]["status"] == "received"
        assert live[0]["data"]["label"] is None
        assert live[-1]["event"] == "mail.classified"
        assert live[-1]["data"]["status"] == "classified"
        assert live[-1]["data"]["label"] == "order"
        assert live[-1]["data"]["mail_key"] == second.mail_key
        marker = await bus.mail(stages=1)
        await feed.next_is(14, marker.mail_key)

    # reconnect with the last sequence seen: only what came after, then live again
    await bus.mail(stages=2)
    await console.caught_up(bus)
    async with websockets.connect(ws_url(console, "/ws/emails/dash-1", ADMIN_KEY,
                                         since=14)) as ws:
        feed = Feed(ws)
        assert [m["sequence"] for m in await feed.take(2)] == [15, 16]
        assert (await feed.next())["position"] == 16
        later = await bus.mail(stages=1)
        await feed.next_is(17, later.mail_key)


async def test_live_only_gets_hello_first(bus: Bus, console: Console) -> None:
    await bus.mail(stages=3)
    await console.caught_up(bus)
    async with websockets.connect(ws_url(console, "/api/v1/ws", ADMIN_KEY)) as ws:
        feed = Feed(ws)
        assert await feed.next() == {"type": "hello", "position": 3, "tenant": None}
        await bus.mail(stages=1)
        assert (await feed.next())["sequence"] == 4


async def test_tenant_scope_and_bad_key(bus: Bus, console: Console) -> None:
    key = await console.tenant_key("acme")
    async with websockets.connect(ws_url(console, "/api/v1/ws", key, since=0)) as ws:
        feed = Feed(ws)
        assert await feed.next() == {"type": "hello", "position": 0, "tenant": "acme"}
        await bus.mail(tenant="globex", stages=2)
        acme = await bus.mail(tenant="acme", stages=2)
        got = await feed.take(2)
        assert {m["data"]["mail_key"] for m in got} == {acme.mail_key}
        assert {m["data"]["tenant"] for m in got} == {"acme"}
        # one more of each: the next message is acme's, globex's was not sent
        await bus.mail(tenant="globex", stages=1)
        marker = await bus.mail(tenant="acme", stages=1)
        await feed.next_is(6, marker.mail_key)
    async with websockets.connect(ws_url(console, "/api/v1/ws", key, since=0)) as ws:
        got = await Feed(ws).take(4)
        assert [m["sequence"] for m in got[:3]] == [3, 4, 6]
        # another tenant's events are not sent, but the position passes them
        assert got[3] == {"type": "hello", "position": 6, "tenant": "acme"}
    async with websockets.connect(ws_url(console, "/api/v1/ws", "wrong")) as ws:
        assert json.loads(await ws.recv())["status"] == 401
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await ws.recv()
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 4401


async def test_a_backlog_beyond_the_limit_asks_for_a_resync(bus: Bus,
                                                            start_console: Any) -> None:
    console = await start_console(CONSOLE_WS_BACKLOG="3")
    await bus.mail(stages=5)
    await console.caught_up(bus)
    async with websockets.connect(ws_url(console, "/api/v1/ws", ADMIN_KEY, since=0)) as ws:
        feed = Feed(ws)
        assert await feed.next() == {"type": "resync"}
        assert await feed.next() == {"type": "hello", "position": 5, "tenant": None}
        await bus.mail(stages=1)
        assert (await feed.next())["sequence"] == 6
