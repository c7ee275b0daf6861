"""End to end: a customer question sent over SMTP to the demo tenant's support mailbox gets a
draft from the local model (the embedded default) in the mail's own trace; approving it
sends the reply through the mailer to the relay, threaded and marked auto-replied; the same
question as an auto-reply gets none."""

from __future__ import annotations

import asyncio
import json
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from email.utils import make_msgid
from typing import Any

import httpx
import nats
import pytest
from e2e_stack import OtlpReceiver, stream_count, wait_until

from postroom_contracts import EVENTS_STREAM
from postroom_testing.smtp import Sink

pytestmark = pytest.mark.e2e

REVIEW_KEY = "e2e-review-key"


def question(headers: dict[str, str] | None = None) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = "Sophie Fontaine <sophie@customer.example>"
    msg["To"] = "support+acme@intake.example.com"
    msg["Subject"] = "How can I update the contact details on our contract?"
    msg["Message-ID"] = make_msgid(domain="customer.example")
    for name, value in (headers or {}).items():
        msg[name] = value
    msg.set_content(
        "Dear team,\n\nHow can I update the contact details on our contract? Nobody answered "
        "my previous request and I would like to know when your support team is available."
        "\n\nKind regards\nSophie Fontaine\n")
    return msg


async def events(url: str, event_type: str) -> list[dict[str, Any]]:
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        info = await js.stream_info(EVENTS_STREAM)
        out = []
        for seq in range(info.state.first_seq, info.state.last_seq + 1):
            try:
                msg = await js.get_msg(EVENTS_STREAM, seq)
            except nats.js.errors.NotFoundError:
                continue
            if msg.subject.startswith(f"postroom.{event_type}."):
                out.append(json.loads(msg.data))
        return out
    finally:
        await nc.close()


def test_a_support_question_gets_a_draft_in_its_trace_and_the_approved_reply_is_sent(
        start_stack: Any, relay: Sink, otlp: OtlpReceiver) -> None:
    stack = start_stack(MAILER_RELAY_URL=relay.url, OTEL_EXPORTER_OTLP_ENDPOINT=otlp.endpoint,
                        OTEL_BSP_SCHEDULE_DELAY="100", AI_MAX_TOKENS="16",
                        REPLY_API_KEY=REVIEW_KEY)
    mail = question()
    assert stack.send(mail)[0] == 250
    [drafted] = wait_until(lambda: asyncio.run(events(stack.nats.url, "reply.drafted")),
                           timeout=120, interval=0.2)
    assert drafted["backend"] == "local" and drafted["mailbox"] == "support"
    assert drafted["to"] == ["sophie@customer.example"]
    assert drafted["in_reply_to"] == mail["Message-ID"]
    assert drafted["status"] in ("pending", "held")  # draft-only: never sent by itself

    def traced() -> list[dict[str, Any]] | None:
        spans = otlp.snapshot()
        data = [s for s in spans if s["service"] == "smtp-ingress" and "DATA" in s["name"]]
        if not data:
            return None
        trace_id = data[0]["trace_id"]
        mine = [s for s in spans if s["service"] == "ai-responder"
                and s["trace_id"] == trace_id]
        return mine if any("reply.drafted" in s["name"] for s in mine) else None

    # the draft is part of the mail's one trace, from SMTP DATA on
    spans = wait_until(traced, timeout=60, interval=0.2)
    assert any(s["name"] == "ai-responder draft" for s in spans)

    # a person approves it (the review API, as the console does): the mailer sends it once
    ai = f"http://127.0.0.1:{stack.http_ports['ai-responder']}"
    response = httpx.post(f"{ai}/replies/{drafted['reply_id']}/review",
                          json={"decision": "approved", "reviewed_by": "e2e"},
                          headers={"Authorization": f"Bearer {REVIEW_KEY}"}, timeout=10)
    assert response.status_code == 202
    [sent] = wait_until(lambda: relay.snapshot(), timeout=60, interval=0.2)
    assert sent.rcpt_tos == ["sophie@customer.example"]
    reply = BytesParser(policy=policy.default).parsebytes(sent.data)
    assert reply["In-Reply-To"] == mail["Message-ID"]
    assert mail["Message-ID"] in reply["References"]
    assert reply["Auto-Submitted"] == "auto-replied"
    assert reply["Subject"] == f"Re: {mail['Subject']}"
    assert reply["From"] == "support+acme@intake.example.com"
    wait_until(lambda: asyncio.run(stream_count(
        stack.nats.url, "postroom.delivery.sent.acme")) == 1, timeout=60)

    # the same question as an out-of-office reply: no draft, a reply.skipped
    assert stack.send(question({"Auto-Submitted": "auto-replied"}))[0] == 250
    [skipped] = wait_until(lambda: asyncio.run(events(stack.nats.url, "reply.skipped")),
                           timeout=60, interval=0.2)
    assert skipped["reason"] == "loop-guard"
    assert len(asyncio.run(events(stack.nats.url, "reply.drafted"))) == 1
    state = httpx.get(f"{ai}/replies/{drafted['reply_id']}", timeout=10,
                      headers={"Authorization": f"Bearer {REVIEW_KEY}"}).json()
    assert state["status"] == "approved" and state["reviewed_by"] == "e2e"
    assert [a["action"] for a in state["audit"]][-1] == "approved"
