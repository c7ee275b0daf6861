"""End to end: real SMTP sessions against the running services, events read from NATS."""

from __future__ import annotations

import asyncio
import json
import smtplib
import sqlite3
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from email.message import EmailMessage

import httpx
import nats
import pytest
from e2e_stack import (
    OtlpReceiver,
    Stack,
    order_mail,
    pdf_bytes,
    stream_count,
    wait_until,
    wire,
    zip_bytes,
)

pytestmark = pytest.mark.e2e

CONSOLE_KEY = "e2e-console-admin-key"


def get_json(url: str) -> object:
    with urllib.request.urlopen(url, timeout=10) as resp:
        return json.loads(resp.read())


def test_purchase_order_becomes_documents_an_outside_subscriber_sees(stack: Stack) -> None:
    received: list[dict] = []
    mail = order_mail(1, pdf=pdf_bytes("PO-00001 total 150.00"))
    mail.add_attachment(zip_bytes(), maintype="application", subtype="zip", filename="extra.zip")

    async def scenario() -> tuple[tuple[int, bytes], float]:
        nc = await nats.connect(stack.nats.url)
        got = asyncio.Queue()

        async def on_msg(msg) -> None:  # type: ignore[no-untyped-def]
            await got.put(json.loads(msg.data))

        await nc.subscribe("postroom.document.stored.*", cb=on_msg)
        await nc.flush()
        reply = await asyncio.to_thread(stack.send, mail)
        accepted_at = time.monotonic()
        while len(received) < 4:
            received.append(await asyncio.wait_for(got.get(), 15))
        elapsed = time.monotonic() - accepted_at
        await nc.close()
        return reply, elapsed

    (code, text), elapsed = asyncio.run(scenario())
    assert (code, text) == (250, b"2.0.0 Message accepted")
    by_name = {e["filename"]: e for e in received}
    assert set(by_name) == {"po-1.csv", "po-1.pdf", "po-1.xlsx", "extra.zip"}
    assert all(e["tenant"] == "acme" for e in received)
    assert by_name["po-1.pdf"]["metadata"]["pages"] == 2
    assert "PO-00001" in by_name["po-1.pdf"]["metadata"]["text_excerpt"]
    assert by_name["po-1.xlsx"]["metadata"]["sheets"] == ["Order"]
    assert by_name["po-1.csv"]["metadata"]["header"] == ["sku", "qty", "price"]
    assert by_name["extra.zip"]["sniffed_content_type"] == "application/zip"
    print(f"mail accepted -> 4 document events in {elapsed * 1000:.0f} ms")
    # the documents are listed by the extractor's API (what `postroom documents` shows)
    docs = get_json(f"{stack.extractor_url}/documents?tenant=acme")
    assert {d["filename"] for d in docs} == set(by_name)  # type: ignore[union-attr]
    # the classifier labels it with the shipped model (mail.classified, its own store)
    classifier = f"http://127.0.0.1:{stack.http_ports['classifier']}"
    rows = wait_until(lambda: get_json(f"{classifier}/classifications?tenant=acme") or None,
                      timeout=30, interval=0.2)
    assert [r["label"] for r in rows] == ["order"]  # type: ignore[index]
    wait_until(lambda: asyncio.run(stream_count(
        stack.nats.url, "postroom.mail.classified.acme")) == 1, timeout=30, interval=0.2)


def test_reply_codes_a_sender_sees(stack: Stack) -> None:
    mail = order_mail(2, with_xlsx=False)
    assert stack.send(mail) == (250, b"2.0.0 Message accepted")
    assert stack.send(mail) == (250, b"2.0.0 Message accepted (duplicate)")
    wait_until(lambda: asyncio.run(stream_count(stack.nats.url, "postroom.mail.parsed.acme")) == 1)
    assert asyncio.run(stream_count(stack.nats.url, "postroom.mail.received.acme")) == 1

    code, text = stack.send(order_mail(3, to="orders+nobody@intake.example.com"))
    assert code == 550 and text.startswith(b"5.1.1")
    code, text = stack.send(order_mail(4, to="someone@elsewhere.example.org"))
    assert code == 550 and text.startswith(b"5.7.1")

    big = order_mail(5, with_xlsx=False)
    big.add_attachment(b"x" * (600 * 1024), maintype="application", subtype="octet-stream",
                       filename="big.bin")
    with stack.smtp() as client:
        client.ehlo()
        assert client.has_extn("size") and int(client.esmtp_features["size"]) == 512 * 1024
        client.mail("buyer@supplier.example")
        client.rcpt("orders+acme@intake.example.com")
        code, _ = client.data(wire(big))
    assert code == 552


def test_nats_outage_is_a_temporary_failure_and_the_retry_is_processed_once(stack: Stack) -> None:
    mail = order_mail(6, with_xlsx=False)
    stack.nats.stop()
    try:
        code, text = stack.send(mail)
    finally:
        stack.nats.start()
    assert code == 451 and text.startswith(b"4.3.0")

    def retried() -> bool:
        try:
            return stack.send(mail)[0] == 250
        except (smtplib.SMTPException, OSError):
            return False

    wait_until(retried, timeout=60, interval=1.0)
    wait_until(lambda: asyncio.run(stream_count(stack.nats.url, "postroom.mail.parsed.acme")) == 1,
               timeout=60)
    assert asyncio.run(stream_count(stack.nats.url, "postroom.mail.received.acme")) == 1
    assert asyncio.run(stream_count(stack.nats.url, "postroom.document.stored.acme")) == 1


def test_extractor_killed_midway_parses_every_mail_exactly_once(stack: Stack) -> None:
    total = 1000
    pdf = pdf_bytes("shared terms and conditions")  # the same file in every tenth mail

    def send_batch(start: int) -> list[int]:
        codes = []
        with stack.smtp() as client:
            for n in range(start, start + 100):
                msg = order_mail(1000 + n, with_xlsx=False, pdf=pdf if n % 10 == 0 else None)
                client.ehlo_or_helo_if_needed()
                client.mail(str(msg["From"]))
                client.rcpt(str(msg["To"]))
                codes.append(client.data(wire(msg))[0])
                client.rset()
        return codes

    with ThreadPoolExecutor(10) as pool:
        codes = [c for batch in pool.map(send_batch, range(0, total, 100)) for c in batch]
    assert codes == [250] * total

    db = stack.data / "attachment_extractor.db"

    def parsed() -> int:
        try:
            with sqlite3.connect(db) as conn:
                sql = "SELECT count(*) FROM mails WHERE status='PARSED'"
                return conn.execute(sql).fetchone()[0]
        except sqlite3.Error:
            return 0

    wait_until(lambda: parsed() >= 200, timeout=120, interval=0.05)
    stack.extractor.kill()  # SIGKILL, mid-stream
    killed_at = parsed()
    assert killed_at < total, "extractor finished before it could be killed"
    stack.extractor.start()
    wait_until(lambda: parsed() == total, timeout=300, interval=0.5)
    time.sleep(2)  # let any stray duplicate surface

    expected_docs = total + total // 10
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT count(*) FROM mails").fetchone()[0] == total
        assert conn.execute("SELECT count(*) FROM documents").fetchone()[0] == expected_docs
        assert conn.execute("SELECT count(DISTINCT sha256) FROM documents "
                            "WHERE filename LIKE '%.pdf'").fetchone()[0] == 1
    count = lambda s: asyncio.run(stream_count(stack.nats.url, s))  # noqa: E731
    assert count("postroom.mail.received.acme") == total
    assert count("postroom.mail.parsed.acme") == total
    assert count("postroom.document.stored.acme") == expected_docs
    print(f"killed after {killed_at} parsed mails; all {total} parsed exactly once")


def test_one_trace_from_smtp_data_through_the_extractor(start_stack, otlp: OtlpReceiver) -> None:
    stack = start_stack(OTEL_EXPORTER_OTLP_ENDPOINT=otlp.endpoint, OTEL_BSP_SCHEDULE_DELAY="100",
                        CONSOLE_ADMIN_KEY=CONSOLE_KEY)
    mail: EmailMessage = order_mail(7, with_xlsx=False)
    assert stack.send(mail)[0] == 250

    def traced() -> list[dict] | None:
        spans = otlp.snapshot()
        data = [s for s in spans if s["service"] == "smtp-ingress" and "DATA" in s["name"]]
        if not data:
            return None
        trace_id = data[0]["trace_id"]
        extractor = [s for s in spans if s["service"] == "attachment-extractor"
                     and s["trace_id"] == trace_id]
        published = [s for s in extractor if "document.stored" in s["name"]]
        return extractor if published else None

    extractor_spans = wait_until(traced, timeout=30, interval=0.2)
    trace_id = extractor_spans[0]["trace_id"]
    # every consumer of the mail's events joins the trace: the transcriber receives its
    # mail.parsed too (and leaves it alone: no route), the classifier labels it, and
    # ai-responder reads its mail.received and mail.classified (orders: no `reply`, nothing)
    consumers = {"transcriber", "classifier", "ai-responder"}
    wait_until(lambda: consumers <= {s["service"] for s in otlp.snapshot()
                                     if s["trace_id"] == trace_id}, timeout=30, interval=0.2)
    services = {s["service"] for s in otlp.snapshot() if s["trace_id"] == trace_id}
    # the services that published or consumed this mail's events (no other service may
    # claim a span of it)
    assert services == {"smtp-ingress", "attachment-extractor", "transcriber", "classifier",
                        "ai-responder"}
    assert any("mail.received" in s["name"] for s in extractor_spans)
    # the verification after the 250 is part of the same trace, and its verdict is published
    wait_until(lambda: any(s["name"] == "mail authentication" and s["trace_id"] == trace_id
                           for s in otlp.snapshot()), timeout=30, interval=0.2)
    wait_until(lambda: asyncio.run(stream_count(
        stack.nats.url, "postroom.mail.authenticated.acme")) == 1, timeout=30, interval=0.2)

    # the console shows the mail with its label, its whole journey and the same trace id
    console = f"http://127.0.0.1:{stack.http_ports['console']}"
    auth = {"Authorization": f"Bearer {CONSOLE_KEY}"}

    def in_console() -> dict | None:
        items = httpx.get(f"{console}/api/v1/mails", headers=auth, timeout=5).json()["items"]
        done = [m for m in items if m["label"] is not None]
        return done[0] if done else None

    listed = wait_until(in_console, timeout=30, interval=0.2)
    assert listed["trace_id"] == trace_id and listed["status"] == "classified"
    assert listed["message_id"] == mail["Message-ID"]
    journey = {"mail.received", "mail.authenticated", "document.stored", "mail.parsed",
               "mail.classified"}

    def detail() -> dict | None:
        found = httpx.get(f"{console}/api/v1/mails/{listed['mail_key']}", headers=auth,
                          timeout=5).json()
        return found if journey <= {e["event_type"] for e in found["timeline"]} else None

    shown = wait_until(detail, timeout=30, interval=0.2)
    assert shown["timeline"][0]["trace_id"] == trace_id
    # every step keeps the trace of its message's traceparent (the console itself adds no
    # span: it is not among the services above)
    assert {e["trace_id"] for e in shown["timeline"]} == {trace_id}
    assert shown["authentication"]["dmarc"]["result"] in ("pass", "fail", "none")
