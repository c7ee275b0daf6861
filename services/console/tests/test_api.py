"""Keys, tenant isolation everywhere, stats, dead letters, label corrections and the
dashboard's headers, against the console process on a real nats-server."""

from __future__ import annotations

import asyncio
import base64
import json
from typing import Any

from console_harness import ADMIN_KEY, Bus, Console, until

from postroom_contracts import (
    DLQ_STREAM,
    EVENTS_STREAM,
    DeadLetter,
    MailLabelCorrected,
    dlq_subject,
)

DASHBOARD_CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; "
                 "img-src 'self' data:; connect-src 'self'; frame-src 'self'; "
                 "object-src 'none'; base-uri 'none'; frame-ancestors 'none'")


async def events_on_stream(bus: Bus, event_type: str) -> list[dict[str, Any]]:
    info = await bus.js.stream_info(EVENTS_STREAM)
    out = []
    for seq in range(info.state.first_seq, info.state.last_seq + 1):
        msg = await bus.js.get_msg(EVENTS_STREAM, seq)
        if msg.subject.startswith(f"postroom.{event_type}."):
            out.append(json.loads(msg.data))
    return out


async def test_keys_and_401(bus: Bus, console: Console) -> None:
    async with console.client(None) as anonymous:
        for path in ("/api/v1/session", "/api/v1/mails", "/api/v1/stats", "/results/x",
                     "/api/v1/dead-letters", "/api/v1/events", "/api/v1/outbox",
                     "/api/v1/tenants", "/api/v1/mails/abc"):
            response = await anonymous.get(path)
            assert response.status_code == 401, path
            assert response.headers["content-type"] == "application/problem+json"
            assert response.json()["status"] == 401
    async with console.client("pr_000000000000_" + "B" * 32) as wrong:
        assert (await wrong.get("/api/v1/mails")).status_code == 401
    async with console.client(ADMIN_KEY) as admin:
        assert (await admin.get("/api/v1/session")).json() == {
            "name": "admin", "tenant": None, "admin": True}
    key = await console.tenant_key("acme", "acme-ops")
    async with console.client(key) as acme:
        assert (await acme.get("/api/v1/session")).json() == {
            "name": "acme-ops", "tenant": "acme", "admin": False}
        assert (await acme.get("/api/v1/keys")).status_code == 403
        assert (await acme.post("/api/v1/admin/rebuild")).status_code == 403
    # X-API-Key works too; only the hash is stored, listing shows no secret
    listed = (await console.admin("GET", "/api/v1/keys")).json()
    assert {k["name"] for k in listed} == {"admin", "acme-ops"}
    assert all("key" not in k and "secret_hash" not in k for k in listed)
    acme_id = next(k["key_id"] for k in listed if k["name"] == "acme-ops")
    response = await console.http.get("/api/v1/session", headers={"X-API-Key": key})
    assert response.status_code == 200
    assert (await console.admin("DELETE", f"/api/v1/keys/{acme_id}")).status_code == 200
    response = await console.http.get("/api/v1/session", headers={"X-API-Key": key})
    assert response.status_code == 401


async def test_a_tenant_key_never_sees_another_tenants_mail(bus: Bus,
                                                            console: Console) -> None:
    acme = await bus.mail(tenant="acme", subject="acme order", label="order")
    globex = await bus.mail(tenant="globex", subject="globex order", label="meeting")
    await console.caught_up(bus)
    acme_key = await console.tenant_key("acme")
    async with console.client(acme_key) as http:
        items = (await http.get("/api/v1/mails")).json()["items"]
        assert [m["mail_key"] for m in items] == [acme.mail_key]
        assert (await http.get("/api/v1/mails", params={"tenant": "globex"})).json()[
            "items"] == []
        assert (await http.get(f"/api/v1/mails/{globex.mail_key}")).status_code == 404
        assert (await http.get(f"/api/v1/mails/{acme.mail_key}")).status_code == 200
        assert (await http.get(f"/results/{globex.message_id}")).status_code == 404
        assert (await http.get(f"/results/{acme.message_id}")).status_code == 200
        assert (await http.get(
            f"/api/v1/mails/{globex.mail_key}/documents/{globex.document_id}")).status_code == 404
        assert (await http.get(f"/api/v1/mails/{globex.mail_key}/html")).status_code == 404
        assert (await http.post(f"/api/v1/mails/{globex.mail_key}/label",
                                json={"label": "spam"})).status_code == 404
        events = (await http.get("/api/v1/events", params={"since": 0})).json()["items"]
        assert {e["data"]["mail_key"] for e in events} == {acme.mail_key}
        assert len(events) == 8
        outbox = (await http.get("/api/v1/outbox")).json()["items"]
        assert [d["mail_key"] for d in outbox] == [acme.mail_key]
        stats = (await http.get("/api/v1/stats")).json()
        assert stats["totals"]["mails"] == 1
        assert stats["per_label"] == {"order": 1}
        assert stats["consumers"] == []
        assert (await http.get("/api/v1/stats", params={"tenant": "globex"})).json()[
            "totals"]["mails"] == 0
        assert (await http.get("/api/v1/dead-letters")).status_code == 403
    async with console.client(ADMIN_KEY) as admin:
        assert {m["mail_key"] for m in (await admin.get("/api/v1/mails")).json()["items"]} == {
            acme.mail_key, globex.mail_key}


async def test_stats(bus: Bus, console: Console) -> None:
    for label in ("order", "order", "spam"):
        await bus.mail(label=label)
    await bus.mail(stages=1)  # received, not classified yet
    # a durable consumer, as a service has: its lag is in the stats
    from nats.js import api
    await bus.js.add_consumer(EVENTS_STREAM, api.ConsumerConfig(
        durable_name="classifier-mail-parsed", filter_subject="postroom.mail.parsed.*",
        ack_policy=api.AckPolicy.EXPLICIT))
    await console.caught_up(bus)
    stats = (await console.admin("GET", "/api/v1/stats")).json()
    assert stats["totals"] == {"mails": 4, "classified": 3, "failed": 0, "success_rate": 1.0}
    assert sum(h["count"] for h in stats["per_hour"]) == 4
    assert sum(d["count"] for d in stats["per_day"]) == 4
    assert stats["per_label"] == {"order": 2, "spam": 1}
    assert stats["processing_ms"] == {"p50": 80.0, "p95": 80.0, "p99": 80.0}
    (consumer,) = stats["consumers"]
    assert consumer["name"] == "classifier-mail-parsed"
    assert consumer["pending"] == 3 and consumer["ack_pending"] == 0
    last = await bus.stream_last()
    assert stats["projection"]["position"] == last
    assert stats["projection"]["stream_last"] == last and stats["projection"]["lag"] == 0
    metrics = (await console.http.get("/metrics")).text
    assert f"postroom_console_projection_position {float(last)}" in metrics
    assert "postroom_console_projection_lag 0.0" in metrics


async def test_dead_letters_are_listed_and_replayed(bus: Bus, console: Console) -> None:
    mail = await bus.mail(stages=4)
    parsed = mail.events[3]
    letter = DeadLetter(
        consumer="classifier-mail-parsed", original_subject=parsed.nats_subject,
        original_msg_id=parsed.event_id, stream_sequence=4, deliveries=5,
        error="RuntimeError: model exploded",
        payload_b64=base64.b64encode(parsed.model_dump_json().encode()).decode(),
        headers={"Postroom-Event-Type": "mail.parsed", "Postroom-Mail-Key": mail.mail_key},
        mail_key=mail.mail_key)
    ack = await bus.js.publish(dlq_subject(letter.consumer), letter.model_dump_json().encode())
    listed = (await console.admin("GET", "/api/v1/dead-letters")).json()
    assert listed == [{"sequence": ack.seq, "consumer": "classifier-mail-parsed",
                       "original_subject": parsed.nats_subject, "mail_key": mail.mail_key,
                       "deliveries": 5, "error": "RuntimeError: model exploded",
                       "failed_at": listed[0]["failed_at"]}]
    before = await bus.stream_last()
    response = await console.admin("POST", f"/api/v1/dead-letters/{ack.seq}/replay")
    assert response.status_code == 200 and response.json() == {"replayed": ack.seq}
    assert (await console.admin("GET", "/api/v1/dead-letters")).json() == []
    assert (await bus.js.stream_info(DLQ_STREAM)).state.messages == 0
    # the original is on the events stream again; the projection keeps one mail.parsed
    assert await bus.stream_last() == before + 1
    again = await bus.js.get_msg(EVENTS_STREAM, before + 1)
    assert again.subject == parsed.nats_subject
    await console.caught_up(bus)
    detail = (await console.admin("GET", f"/api/v1/mails/{mail.mail_key}")).json()
    assert [e["event_type"] for e in detail["timeline"]].count("mail.parsed") == 1
    response = await console.admin("POST", f"/api/v1/dead-letters/{ack.seq}/replay")
    assert response.status_code == 404


async def test_a_label_correction_goes_out_and_comes_back(bus: Bus, console: Console) -> None:
    mail = await bus.mail(label="promotion")
    await console.caught_up(bus)
    key = await console.tenant_key("acme", "alice")
    async with console.client(key) as http:
        bad = await http.post(f"/api/v1/mails/{mail.mail_key}/label", json={"label": "nope"})
        assert bad.status_code == 422
        response = await http.post(f"/api/v1/mails/{mail.mail_key}/label",
                                   json={"label": "order"})
        assert response.status_code == 202
        correction_id = response.json()["correction_id"]

        async def published() -> list[dict[str, Any]]:
            return await events_on_stream(bus, MailLabelCorrected.event_type)

        (event,) = await until(published, "mail.label_corrected on the stream")
        corrected = MailLabelCorrected.model_validate(event)
        assert corrected.correction_id == correction_id
        assert (corrected.tenant, corrected.mail_key, corrected.email_id) == (
            "acme", mail.mail_key, mail.message_id)
        assert (corrected.label, corrected.previous_label, corrected.corrected_by) == (
            "order", "promotion", "alice")
        assert corrected.previous_model_version == "logreg-tfidf-test"
        assert corrected.raw is not None and corrected.raw.sha256 == mail.events[0].raw.sha256

        async def shown() -> dict[str, Any] | None:
            detail = (await http.get(f"/api/v1/mails/{mail.mail_key}")).json()
            return detail if detail["corrected_label"] == "order" else None

        detail = await until(shown, "corrected_label in the detail")
        assert detail["label"] == "promotion"
        assert detail["timeline"][-1]["event_type"] == "mail.label_corrected"
        assert detail["classification"]["corrected_by"] == "alice"
        items = (await http.get("/api/v1/mails")).json()["items"]
        assert items[0]["corrected_label"] == "order"


async def test_the_dashboard_is_served_with_a_strict_csp(console: Console) -> None:
    index = await console.http.get("/")
    assert index.status_code == 200
    assert index.headers["content-type"].startswith("text/html")
    assert index.headers["content-security-policy"] == DASHBOARD_CSP
    static = await console.http.get("/static/index.html")
    assert static.status_code == 200
    assert static.headers["content-security-policy"] == DASHBOARD_CSP
    missing = await console.http.get("/static/nope.js")
    assert missing.status_code == 404
    assert missing.headers["content-security-policy"] == DASHBOARD_CSP
    await asyncio.sleep(0)


async def test_tenants_from_the_registry(bus: Bus, console: Console) -> None:
    from postroom_contracts import Tenant
    from postroom_runtime.tenants import put_tenant

    for slug in ("acme", "globex"):
        await put_tenant(bus.js, Tenant(slug=slug, name=slug.title(),
                                        domains=[f"{slug}.example"]))
    admin = (await console.admin("GET", "/api/v1/tenants")).json()
    assert [t["slug"] for t in admin] == ["acme", "globex"]
    assert admin[0]["name"] == "Acme" and admin[0]["domains"] == ["acme.example"]
    key = await console.tenant_key("globex")
    async with console.client(key) as http:
        assert [t["slug"] for t in (await http.get("/api/v1/tenants")).json()] == ["globex"]


async def test_the_api_docs_load_nothing_from_another_host(console: Console) -> None:
    import re

    page = await console.http.get("/docs")
    assert page.status_code == 200
    urls = re.findall(r"""(?:src|href|url)\s*[=:]\s*['"]([^'"]+)['"]""", page.text)
    assert urls, page.text
    assert not [u for u in urls if "//" in u], urls  # no scheme, no protocol-relative host
    assert "cdn" not in page.text.lower()
    for url in urls:
        assert (await console.http.get(url)).status_code == 200, url
    assert {"/docs/assets/swagger-ui-bundle.js", "/docs/assets/swagger-ui.css"} <= set(urls)
