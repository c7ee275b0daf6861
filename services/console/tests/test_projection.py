"""The projection of a realistic event sequence, the mail list and the detail page, on a real
nats-server with the console as a process (SQLite and PostgreSQL)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from console_harness import ADMIN_KEY, Bus, Console


async def test_a_mails_journey_is_projected_listed_and_detailed(bus: Bus,
                                                                console: Console) -> None:
    mail = await bus.mail()
    await console.caught_up(bus)
    async with console.client(ADMIN_KEY) as http:
        listed = (await http.get("/api/v1/mails")).json()
        assert listed["next_cursor"] is None
        (item,) = listed["items"]
        assert item == {
            "mail_key": mail.mail_key, "tenant": "acme", "message_id": mail.message_id,
            "source": "smtp", "mailbox": "orders", "from": mail.sender,
            "to": ["orders@acme.example"], "subject": "Order 42",
            "received_at": item["received_at"], "status": "classified", "label": "order",
            "confidence": 0.93, "corrected_label": None, "documents": 1, "transcripts": 1,
            "deliveries": 1, "processing_ms": 80.0, "trace_id": mail.trace_id,
            "sequence": await bus.stream_last(),
        }
        received_at = datetime.fromisoformat(item["received_at"].replace("Z", "+00:00"))
        assert abs(received_at - mail.events[0].occurred_at) < timedelta(milliseconds=1)

        detail = (await http.get(f"/api/v1/mails/{mail.mail_key}")).json()
        assert [e["event_type"] for e in detail["timeline"]] == [
            "mail.received", "mail.authenticated", "document.stored", "mail.parsed",
            "mail.classified", "voicemail.transcribed", "delivery.requested", "delivery.sent"]
        assert [e["since_received_ms"] for e in detail["timeline"]] == [
            0.0, 20.0, 40.0, 60.0, 80.0, 100.0, 120.0, 150.0]
        assert detail["timeline"][0]["trace_id"] == mail.trace_id
        assert detail["authentication"]["dmarc"]["result"] == "pass"
        assert detail["timeline"][1]["summary"] == "spf=pass dkim=pass dmarc=pass"
        (document,) = detail["documents"]
        assert document["document_id"] == mail.document_id
        assert detail["transcripts"][0]["text"] == "Please call me back"
        assert detail["classification"]["classification"] == "order"
        assert detail["classification"]["scores"]["order"] == 0.93
        assert detail["deliveries"] == [{
            "delivery_id": f"fwd-{mail.mail_key}", "kind": "forward",
            "to": ["alice@acme.example"], "status": "sent",
            "at": detail["deliveries"][0]["finished_at"],
            "requested_at": detail["deliveries"][0]["requested_at"],
            "finished_at": detail["deliveries"][0]["finished_at"], "relay": "127.0.0.1:2525",
            "error": None, "message_id": f"<fwd-{mail.mail_key}@mailer.test>"}]
        assert detail["body_text"] == "Hello, order 42 attached."
        assert detail["html_url"] == f"/api/v1/mails/{mail.mail_key}/html"

        # the document, from the blob store
        download = await http.get(document["download_url"])
        assert download.status_code == 200
        assert download.content == mail.document
        assert download.headers["content-disposition"].startswith("attachment;")
        assert "Bestellung%2042.pdf" in download.headers["content-disposition"]

        # the HTML body: sanitised, remote image gone, strict CSP
        html = await http.get(detail["html_url"])
        assert html.status_code == 200
        assert html.headers["content-security-policy"] == (
            "default-src 'none'; style-src 'unsafe-inline'; img-src data: cid:; sandbox")
        assert "<h1>Order 42</h1>" in html.text
        assert "script" not in html.text and "onclick" not in html.text
        assert "tracker.example" not in html.text
        assert 'src="cid:logo@example.org"' in html.text
        assert 'href="https://shop.example/o/42"' in html.text

        # the seed's structured output
        result = (await http.get(f"/results/{mail.message_id}")).json()
        assert result == {"email_id": mail.message_id, "classification": "order",
                          "confidence": 0.93, "processed_at": result["processed_at"],
                          "processor_id": "classifier-test", "processing_time_ms": 1.5}
        assert result["processed_at"].endswith("Z")
        assert (await http.get(f"/api/v1/results/{mail.message_id}")).json() == result
        assert (await http.get("/results/<nobody@example.org>")).status_code == 404


async def test_list_filters_and_cursor_pagination(bus: Bus, console: Console) -> None:
    base = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
    sent = []
    for i in range(7):
        label = "spam" if i % 3 == 0 else "order"
        sent.append(await bus.mail(
            at=base + timedelta(minutes=i), subject=f"Subject {i} {'WIN' if i == 3 else ''}",
            sender=f"s{i}@{'spam' if i % 3 == 0 else 'shop'}.example", label=label,
            stages=5 if i != 6 else 1))
    await console.caught_up(bus)
    async with console.client(ADMIN_KEY) as http:
        async def keys(**params: object) -> list[str]:
            out: list[str] = []
            cursor = None
            while True:
                page = (await http.get("/api/v1/mails", params={
                    **params, "limit": 2, **({"cursor": cursor} if cursor else {})})).json()
                assert len(page["items"]) <= 2
                out += [m["mail_key"] for m in page["items"]]
                cursor = page["next_cursor"]
                if cursor is None:
                    return out

        newest_first = [m.mail_key for m in reversed(sent)]
        assert await keys() == newest_first
        assert await keys(label="spam") == [sent[3].mail_key, sent[0].mail_key]
        assert await keys(status="received") == [sent[6].mail_key]
        assert await keys(sender="SPAM.example") == [
            sent[6].mail_key, sent[3].mail_key, sent[0].mail_key]
        assert await keys(q="win") == [sent[3].mail_key]
        assert await keys(since=(base + timedelta(minutes=2)).isoformat(),
                          until=(base + timedelta(minutes=5)).isoformat()) == [
            sent[4].mail_key, sent[3].mail_key, sent[2].mail_key]
        assert await keys(tenant="other") == []
        bad = await http.get("/api/v1/mails", params={"cursor": "garbage!"})
        assert bad.status_code == 400
        assert bad.headers["content-type"] == "application/problem+json"
