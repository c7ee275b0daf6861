"""A mail appended to a real Dovecot mailbox travels the same path as SMTP mail, in one trace:
mailbox-sync (IMAP IDLE, the static account of the environment) publishes mail.received, the
extractor parses it, the classifier labels it, ai-responder drafts a reply with the local
model, and the console shows it. Approved in the console, the reply reaches the relay
threaded; the same question from a list, as a bounce or as an auto-reply gets no draft."""

from __future__ import annotations

from collections.abc import Iterator
from email import policy
from email.parser import BytesParser
from email.utils import make_msgid
from typing import Any

import httpx
import pytest
from e2e_stack import CONSOLE_ADMIN_KEY, OtlpReceiver, wait_until

from postroom_testing.dovecot import PASSWORD, USER, Dovecot
from postroom_testing.smtp import Sink

pytestmark = pytest.mark.e2e


@pytest.fixture
def dovecot() -> Iterator[Dovecot]:
    server = Dovecot(Dovecot.make_root())
    try:
        yield server.start()
    finally:
        server.cleanup()


def test_mail_appended_in_dovecot_travels_in_one_trace(start_stack, otlp: OtlpReceiver,
                                                        dovecot: Dovecot, relay: Sink) -> None:
    stack = start_stack(
        MAILER_RELAY_URL=relay.url, OTEL_EXPORTER_OTLP_ENDPOINT=otlp.endpoint,
        OTEL_BSP_SCHEDULE_DELAY="100",
        IMAP_HOST="127.0.0.1", IMAP_PORT=str(dovecot.port), IMAP_SSL="false",
        EMAIL_ADDRESS=USER, EMAIL_PASSWORD=PASSWORD, MAILBOX_SYNC_TENANT="acme",
        MAILBOX_SYNC_MAILBOX="support", IMAP_FIRST_SYNC_DAYS="0", AI_MAX_TOKENS="16")
    sync = f"http://127.0.0.1:{stack.http_ports['mailbox-sync']}"

    def idle() -> bool:
        ready = httpx.get(f"{sync}/health/ready", timeout=5).json()
        return ready.get("details", {}).get("accounts", {}).get("env", {}).get("state") == "ok"

    wait_until(idle, timeout=60, interval=0.2)
    message_id = make_msgid(domain="customer.example")
    dovecot.append((f"From: Ann <ann@customer.example>\r\nTo: {USER}\r\n"
                    f"Subject: Where is my order 4711?\r\nMessage-ID: {message_id}\r\n"
                    "\r\nHello, my order 4711 has not arrived. Can you help?\r\n").encode())

    def traced() -> str | None:
        spans = otlp.snapshot()
        ingest = [s for s in spans if s["service"] == "mailbox-sync" and "ingest" in s["name"]]
        if not ingest:
            return None
        trace_id = ingest[0]["trace_id"]
        services = {s["service"] for s in spans if s["trace_id"] == trace_id}
        return trace_id if {"attachment-extractor", "classifier"} <= services else None

    trace_id = wait_until(traced, timeout=60, interval=0.2)
    spans = [s for s in otlp.snapshot() if s["trace_id"] == trace_id]
    # the trace starts at mailbox-sync's ingest: nothing of it happened before the IMAP read
    [root] = [s for s in spans if not s["parent"]]
    assert root["service"] == "mailbox-sync"

    console = stack.console_url
    auth = {"Authorization": f"Bearer {CONSOLE_ADMIN_KEY}"}

    def in_console() -> dict | None:
        items = httpx.get(f"{console}/api/v1/mails", headers=auth, timeout=5).json()["items"]
        done = [m for m in items if m["message_id"] == message_id and m["label"] is not None]
        return done[0] if done else None

    listed = wait_until(in_console, timeout=60, interval=0.2)
    assert listed["trace_id"] == trace_id

    # the question gets a draft from the local model, in the same trace
    def drafted() -> bool:
        return any(s["service"] == "ai-responder" and "reply.drafted" in s["name"]
                   and s["trace_id"] == trace_id for s in otlp.snapshot())

    wait_until(drafted, timeout=120, interval=0.2)

    # a person approves the draft in the console: the mailer sends it once, threaded
    def awaiting() -> list[dict[str, Any]]:
        return httpx.get(f"{console}/api/v1/replies", headers=auth, timeout=5,
                         params={"status": "awaiting"}).json()["items"]

    [draft] = wait_until(awaiting, timeout=60, interval=0.2)
    assert draft["mail_key"] == listed["mail_key"] and draft["to"] == ["ann@customer.example"]
    review = httpx.post(f"{console}/api/v1/replies/{draft['reply_id']}/review", headers=auth,
                        json={"decision": "approved",
                              "body_text": "Hello Ann, we are looking into order 4711."},
                        timeout=10)
    assert review.status_code == 202, review.text
    [sent] = wait_until(relay.snapshot, timeout=60, interval=0.2)
    assert sent.rcpt_tos == ["ann@customer.example"]
    reply = BytesParser(policy=policy.default).parsebytes(sent.data)
    assert reply["In-Reply-To"] == message_id and message_id in reply["References"]
    assert reply["Auto-Submitted"] == "auto-replied"
    assert reply["From"].addresses[0].addr_spec == USER  # from the mailbox Ann wrote to
    assert reply["Subject"] == "Re: Where is my order 4711?"
    assert "we are looking into order 4711" in reply.get_body(("plain",)).get_content()

    # the same question from a list, as a bounce and as an auto-reply: no draft for any
    automated = {
        "list": "From: Ann <ann@customer.example>\r\nList-Id: <customers.lists.example>\r\n",
        "bounce": "From: MAILER-DAEMON@customer.example\r\nContent-Type: multipart/report; "
                  "report-type=delivery-status; boundary=b\r\n",
        "auto-reply": "From: Ann <ann@customer.example>\r\nAuto-Submitted: auto-replied\r\n",
    }
    ids = {}
    for kind, head in automated.items():
        ids[kind] = make_msgid(domain="customer.example")
        body = ("--b\r\nContent-Type: text/plain\r\n\r\nWhere is my order 4711?\r\n--b--\r\n"
                if kind == "bounce" else "Hello, my order 4711 has not arrived.\r\n")
        dovecot.append((f"{head}To: {USER}\r\nSubject: Where is my order 4711?\r\n"
                        f"Message-ID: {ids[kind]}\r\nMIME-Version: 1.0\r\n\r\n{body}").encode())

    def skipped() -> dict[str, dict[str, Any]] | None:
        items = httpx.get(f"{console}/api/v1/mails", headers=auth, timeout=5).json()["items"]
        keys = {m["message_id"]: m["mail_key"] for m in items}
        if not all(i in keys for i in ids.values()):
            return None
        found = {}
        for kind, mid in ids.items():
            detail = httpx.get(f"{console}/api/v1/mails/{keys[mid]}", headers=auth,
                               timeout=5).json()
            events = {e["event_type"]: e for e in detail["timeline"]}
            if "reply.skipped" not in events:
                return None
            found[kind] = events
        return found

    timelines = wait_until(skipped, timeout=120, interval=0.5)
    for kind, events in timelines.items():
        assert "reply.drafted" not in events, kind
    assert len(awaiting()) == 0
    assert len(relay.snapshot()) == 1
