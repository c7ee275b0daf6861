"""The console end to end, every service its own process: a purchase order sent over real SMTP
is projected by the console (its own store, its own ordered consumer) and shows up in the API
with the classifier's label, a timeline of every step with timestamps and the mail's trace id,
the seed's ``/results`` shape, and live on the WebSocket feed (connected before the mail is
sent)."""

from __future__ import annotations

import asyncio
import json
import re
import time
import urllib.parse
from datetime import datetime
from typing import Any

import httpx
import pytest
import websockets
from e2e_stack import CONSOLE_ADMIN_KEY, Stack, order_mail, pdf_bytes

pytestmark = pytest.mark.e2e

AUTH = {"Authorization": f"Bearer {CONSOLE_ADMIN_KEY}"}
TRACE_ID = re.compile(r"^[0-9a-f]{32}$")
# what a purchase order with three attachments goes through, in the order it is published
# (document.stored three times, before mail.parsed; the authentication verdict runs after the
# 250 in parallel, so its place among the others is not fixed)
STEPS = ["mail.received", "document.stored", "document.stored", "document.stored",
         "mail.parsed", "mail.classified"]
SEED_RESULT = {"email_id": str, "classification": str, "confidence": float,
               "processed_at": str, "processor_id": str, "processing_time_ms": float}


def instant(value: str) -> datetime:
    """An ISO-8601 UTC timestamp as the console writes it (``...Z``)."""
    assert value.endswith("Z"), value
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


async def until(check: Any, what: str, within: float = 60, interval: float = 0.02) -> Any:
    deadline = time.monotonic() + within
    while True:
        value = await check()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out: {what}"
        await asyncio.sleep(interval)


def test_mail_over_smtp_in_the_console_api_and_live_feed(stack: Stack) -> None:
    mail = order_mail(41, pdf=pdf_bytes("PO-00041 total 42.00"))
    message_id = str(mail["Message-ID"])
    ws_url = stack.console_url.replace("http://", "ws://") + f"/api/v1/ws?key={CONSOLE_ADMIN_KEY}"

    async def labelled(http: httpx.AsyncClient, mid: str) -> dict[str, Any] | None:
        page = (await http.get("/api/v1/mails", params={"tenant": "acme"})).json()
        return next((m for m in page["items"] if m["message_id"] == mid and m["label"]), None)

    async def scenario() -> dict[str, Any]:
        feed: list[tuple[float, dict[str, Any]]] = []
        async with httpx.AsyncClient(base_url=stack.console_url, headers=AUTH,
                                     timeout=30) as http:
            anonymous = await http.get("/api/v1/mails", headers={"Authorization": ""})
            assert anonymous.status_code == 401, anonymous.text
            assert (await http.get("/api/v1/session")).json() == {
                "name": "admin", "tenant": None, "admin": True}
            # a first mail warms every service up (imports, connections, the model); the delay
            # of the mail measured below is that of a running stack
            first = order_mail(40, pdf=pdf_bytes("PO-00040 total 40.00"))
            assert (await asyncio.to_thread(stack.send, first))[0] == 250
            first_at = time.monotonic()
            await until(lambda: labelled(http, str(first["Message-ID"])), "the first mail")
            cold = time.monotonic() - first_at

            async with websockets.connect(ws_url) as ws:

                async def read_feed() -> None:
                    async for raw in ws:
                        feed.append((time.monotonic(), json.loads(raw)))

                reader = asyncio.create_task(read_feed())
                # the hello follows the (empty) backlog: every later event comes live
                async def greeted() -> dict[str, Any] | None:
                    return next((m for _, m in feed if m.get("type") == "hello"), None)

                hello = await until(greeted, "the feed's hello")
                assert isinstance(hello["position"], int)
                reply = await asyncio.to_thread(stack.send, mail)
                accepted_at = time.monotonic()
                assert reply == (250, b"2.0.0 Message accepted")
                row = await until(lambda: labelled(http, message_id),
                                  "the mail in the list with its label")
                listed_after = time.monotonic() - accepted_at

                async def complete() -> dict[str, Any] | None:
                    detail = (await http.get(f"/api/v1/mails/{row['mail_key']}")).json()
                    types = [e["event_type"] for e in detail["timeline"]]
                    return detail if "mail.authenticated" in types and all(
                        types.count(t) >= STEPS.count(t) for t in STEPS) else None

                detail = await until(complete, "every step in the timeline")
                quoted = urllib.parse.quote(message_id, safe="")
                results = await http.get(f"/results/{quoted}")
                results_v1 = await http.get(f"/api/v1/results/{quoted}")

                wanted = {e["sequence"] for e in detail["timeline"]}

                async def fed() -> bool:  # every step of the timeline has come live too
                    return wanted <= {m.get("sequence") for _, m in feed
                                      if m.get("data", {}).get("mail_key") == row["mail_key"]}

                await until(fed, "the mail's events on the WebSocket feed", within=60)
                fed_after = next(t for t, m in feed if m.get("event") == "mail.classified"
                                 and m["data"].get("mail_key") == row["mail_key"]) - accepted_at
                reader.cancel()
                return {"row": row, "detail": detail, "results": results,
                        "results_v1": results_v1, "feed": [m for _, m in feed],
                        "listed_after": listed_after, "fed_after": fed_after, "cold": cold}

    out = asyncio.run(scenario())
    row, detail = out["row"], out["detail"]
    print(f"250 -> row with its label in GET /api/v1/mails: {out['listed_after'] * 1000:.0f} ms; "
          f"250 -> mail.classified on the WebSocket: {out['fed_after'] * 1000:.0f} ms "
          f"(the first mail after start: {out['cold'] * 1000:.0f} ms to its labelled row)")

    print("timeline: " + ", ".join(f"{e['event_type']} +{e['since_received_ms']:.0f} ms"
                                   for e in detail["timeline"]))

    # the list row
    assert row["tenant"] == "acme" and row["source"] == "smtp"
    assert row["label"] == "order" and 0 < row["confidence"] <= 1
    assert row["status"] == "classified" and row["corrected_label"] is None
    assert row["subject"] == "Purchase order PO-00041"
    assert row["from"] == "buyer@supplier.example"
    assert row["to"] == ["orders+acme@intake.example.com"]
    assert row["documents"] == 3
    assert TRACE_ID.match(row["trace_id"]), row["trace_id"]
    assert row["processing_ms"] is not None and row["processing_ms"] >= 0

    # the detail: every step, in stream order, with its time and the mail's trace id
    timeline = detail["timeline"]
    types = [e["event_type"] for e in timeline]
    assert [t for t in types if t != "mail.authenticated"] == STEPS, types
    assert types.count("mail.authenticated") == 1
    assert [e["sequence"] for e in timeline] == sorted(e["sequence"] for e in timeline)
    received_at = instant(detail["received_at"])
    for event in timeline:
        assert instant(event["occurred_at"]) >= received_at, event
        assert event["since_received_ms"] >= 0, event
        # every service passes the trace on (the classifier through its outbox)
        assert event["trace_id"] == row["trace_id"], (event["event_type"], event["trace_id"])
    assert timeline[0]["since_received_ms"] == 0
    assert {d["filename"] for d in detail["documents"]} == {"po-41.csv", "po-41.pdf",
                                                            "po-41.xlsx"}
    assert detail["authentication"]["spf"]["result"] == "pass"
    assert detail["classification"]["classification"] == "order"
    assert set(detail["classification"]["scores"]) >= {"order", "support", "spam"}
    assert "PO-00041" in detail["body_text"]

    # /results/{email_id}: the seed's shape exactly
    for response in (out["results"], out["results_v1"]):
        assert response.status_code == 200, response.text
        result = response.json()
        assert set(result) == set(SEED_RESULT)
        assert {k: type(v) for k, v in result.items()} == SEED_RESULT, result
        assert result["email_id"] == message_id
        assert result["classification"] == "order"
        assert result["confidence"] == row["confidence"]
        assert instant(result["processed_at"]) >= received_at

    # the live feed: the mail's events as they were applied, once each, in stream order
    mine = [m for m in out["feed"] if m.get("data", {}).get("mail_key") == row["mail_key"]]
    assert all(m["type"] == "email_event" for m in mine)
    assert sorted(m["event"] for m in mine) == sorted(types)
    assert [m["sequence"] for m in mine] == [e["sequence"] for e in timeline]
    classified = next(m for m in mine if m["event"] == "mail.classified")
    assert classified["data"]["email_id"] == message_id
    assert classified["data"]["classification"] == "order"
    assert classified["data"]["label"] == "order"
    instant(classified["timestamp"])
    instant(classified["data"]["processed_at"])

