"""Keys stay out of URLs and logs: the dashboard's URLs carry a 60 s ticket instead of the
key (WebSocket, mail HTML, documents), and a ``?key=`` an API client still sends is redacted
in every log line."""

from __future__ import annotations

import json
import logging
from typing import Any

import websockets
from console_harness import ADMIN_KEY, Bus, Console, until

from postroom_console import auth
from postroom_console.redact import RedactSecrets, redact


async def new_ticket(console: Console, key: str) -> str:
    async with console.client(key) as http:
        response = await http.post("/api/v1/tickets")
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["expires_in"] == 60
    return str(body["ticket"])


async def test_a_ticket_stands_in_for_the_key_in_urls(bus: Bus, console: Console) -> None:
    mail = await bus.mail(tenant="acme")
    other = await bus.mail(tenant="globex")
    await console.caught_up(bus)
    acme_key = await console.tenant_key("acme")
    ticket = await new_ticket(console, acme_key)
    assert acme_key.split("_", 2)[2] not in ticket
    html = f"/api/v1/mails/{mail.mail_key}/html"
    doc = f"/api/v1/mails/{mail.mail_key}/documents/{mail.document_id}"
    ok = await console.http.get(html, params={"ticket": ticket})
    assert ok.status_code == 200 and "Order 42" in ok.text
    got = await console.http.get(doc, params={"ticket": ticket})
    assert got.status_code == 200 and got.content == mail.document
    # scoped like its key; no use on the header-authenticated API; forged or garbled: 401
    assert (await console.http.get(f"/api/v1/mails/{other.mail_key}/html",
                                   params={"ticket": ticket})).status_code == 404
    assert (await console.http.get("/api/v1/mails", params={"ticket": ticket})).status_code == 401
    forged = ticket[:-1] + ("0" if ticket[-1] != "0" else "1")
    for bad in (forged, "tk.x.1.y", "garbage"):
        assert (await console.http.get(html, params={"ticket": bad})).status_code == 401
    # the WebSocket
    url = f"ws://127.0.0.1:{console.port}/api/v1/ws?ticket={ticket}&since=0"
    async with websockets.connect(url) as ws:
        first = json.loads(await ws.recv())
        assert first["type"] == "email_event" and first["data"]["tenant"] == "acme"
    # a revoked key's tickets die with it
    keys = (await console.admin("GET", "/api/v1/keys")).json()
    key_id = next(k["key_id"] for k in keys if k["name"] == "acme-key")
    assert (await console.admin("DELETE", f"/api/v1/keys/{key_id}")).status_code == 200
    assert (await console.http.get(html, params={"ticket": ticket})).status_code == 401
    async with websockets.connect(url) as ws:
        assert json.loads(await ws.recv())["status"] == 401


async def test_a_key_in_a_url_never_reaches_the_log(bus: Bus, start_console: Any) -> None:
    console = await start_console(LOG_LEVEL="DEBUG")
    mail = await bus.mail()
    await console.caught_up(bus)
    secret = ADMIN_KEY.split("_", 2)[2]
    ticket = await new_ticket(console, ADMIN_KEY)
    for params in ({"key": ADMIN_KEY}, {"ticket": ticket}):
        response = await console.http.get(f"/api/v1/mails/{mail.mail_key}/html", params=params)
        assert response.status_code == 200
    for query in (f"key={ADMIN_KEY}", f"ticket={ticket}"):
        url = f"ws://127.0.0.1:{console.port}/api/v1/ws?{query}&since=0"
        async with websockets.connect(url) as ws:
            await ws.recv()

    def logged() -> str | None:
        text = console.proc.log_text()
        return text if text.count("WebSocket /api/v1/ws?") >= 2 else None

    text = await until(logged, "the WebSocket handshakes in the log")
    assert "key=[redacted]" in text and "ticket=[redacted]" in text
    assert secret not in text
    assert ticket.split(".")[-1] not in text


def test_the_filter_redacts_uvicorns_access_and_handshake_lines() -> None:
    assert redact("GET /api/v1/ws?since=3&key=pr_abc_SECRET HTTP/1.1") == \
        "GET /api/v1/ws?since=3&key=[redacted] HTTP/1.1"
    assert redact("/x?ticket=tk.a.1.b") == "/x?ticket=[redacted]"
    assert redact("/x?monkey=1") == "/x?monkey=1"
    record = logging.LogRecord("uvicorn.access", logging.INFO, "", 0,
                               '%s - "%s %s HTTP/%s" %d', ("127.0.0.1:5", "GET",
                                                           "/h?key=S3CRET&a=1", "1.1", 200),
                               None)
    assert RedactSecrets().filter(record)
    assert record.getMessage() == '127.0.0.1:5 - "GET /h?key=[redacted]&a=1 HTTP/1.1" 200'


async def test_tickets_expire_after_60_seconds(tmp_path: Any) -> None:
    from postroom_console.app import MIGRATIONS
    from postroom_runtime.store import Store

    store = Store(f"sqlite+aiosqlite:///{tmp_path}/t.db")
    await store.migrate(MIGRATIONS)
    try:
        async with store.transaction() as session:
            _, key = await auth.create(session, "globex-key", "globex")
            who = await auth.verify(session, key)
        assert who is not None
        now = 1_800_000_000.0
        async with store.sessions() as session:
            ticket, expires = await auth.issue_ticket(session, who, now)
            assert expires == now + 60
            assert await auth.verify_ticket(session, ticket, now + 59) == who
            assert await auth.verify_ticket(session, ticket, now + 61) is None
            later = ticket.replace(f".{int(expires)}.", f".{int(expires) + 3600}.")
            assert await auth.verify_ticket(session, later, now + 61) is None
    finally:
        await store.close()
