"""Helpers shared by smtp-ingress tests (imported by name: conftest puts this folder on
sys.path, as pytest's importlib mode does not)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import nats
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import CollectorRegistry

from postroom_contracts import EVENTS_STREAM, MailReceived
from postroom_smtp_ingress.app import IngressRuntime
from postroom_smtp_ingress.config import IngressSettings

TENANTS_YAML = """\
tenants:
  - slug: acme
    name: ACME GmbH
    domains: [intake.example.com]
    mailboxes:
      orders: {actions: [extract]}
      support: {actions: [extract, classify, reply]}
  - slug: globex
    domains: [globex.example, intake.example.com]
    mailboxes:
      "*": {actions: [classify]}
  - slug: gone
    domains: [intake.example.com]
    enabled: false
"""

DOMAIN = "intake.example.com"


def make_mail(
    message_id: str | None = "<order-1@supplier.example>",
    subject: str = "Purchase order 4711",
    body: str = "Please find the order attached.",
    to: str = f"orders+acme@{DOMAIN}",
    extra_headers: str = "",
) -> bytes:
    headers = [
        "From: Supplier <buyer@supplier.example>",
        f"To: {to}",
        f"Subject: {subject}",
        "Date: Sat, 21 Nov 2026 10:00:00 +0000",
    ]
    if message_id is not None:
        headers.append(f"Message-ID: {message_id}")
    text = "\r\n".join(headers) + "\r\n" + extra_headers + "\r\n" + body + "\r\n"
    return text.encode()


@dataclass
class Ingress:
    runtime: IngressRuntime
    nats_url: str
    spans: InMemorySpanExporter
    registry: CollectorRegistry
    settings: IngressSettings

    @property
    def port(self) -> int:
        assert self.runtime.smtp.port is not None
        return self.runtime.smtp.port

    @property
    def tls_port(self) -> int:
        assert self.runtime.smtp.tls_port is not None
        return self.runtime.smtp.tls_port

    def metric(self, name: str, **labels: str) -> float:
        value = self.registry.get_sample_value(name, labels or None)
        return value or 0.0

    async def events(self) -> list[tuple[MailReceived, dict[str, str]]]:
        """Every mail.received event in the stream, with its headers (read with nats-py)."""
        return await self.events_at(self.nats_url)

    @staticmethod
    async def events_at(nats_url: str) -> list[tuple[MailReceived, dict[str, str]]]:
        nc = await nats.connect(nats_url)
        try:
            js = nc.jetstream()
            info = await js.stream_info(EVENTS_STREAM)
            out = []
            for seq in range(info.state.first_seq, info.state.last_seq + 1):
                if info.state.messages == 0:
                    break
                msg = await js.get_msg(EVENTS_STREAM, seq)
                if msg.subject and msg.subject.startswith("postroom.mail.received."):
                    out.append((MailReceived.model_validate_json(msg.data or b""),
                                dict(msg.headers or {})))
            return out
        finally:
            await nc.close()

    async def rows(self) -> list[dict[str, Any]]:
        from sqlalchemy import select

        from postroom_smtp_ingress.store import received_mails

        async with self.runtime.store.engine.connect() as conn:
            result = await conn.execute(select(received_mails).order_by(received_mails.c.id))
            return [dict(r._mapping) for r in result]


async def wait_for(predicate: Callable[[], bool], within: float = 15.0) -> None:
    async with asyncio.timeout(within):
        while not predicate():  # noqa: ASYNC110 - polling state owned elsewhere
            await asyncio.sleep(0.05)
