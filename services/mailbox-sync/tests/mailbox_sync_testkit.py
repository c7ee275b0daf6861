"""A real Dovecot on a free port with a throwaway mail store, and mailbox-sync running
in-process against a real nats-server, watching the mail.received events it publishes."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from email.utils import make_msgid
from pathlib import Path
from typing import Any

import httpx
import nats
import pytest
from prometheus_client import CollectorRegistry
from sqlalchemy import select

from postroom_contracts import EVENTS_STREAM, Tenant
from postroom_mailbox_sync.app import MailboxSyncRuntime, build_runtime
from postroom_mailbox_sync.config import MailboxSyncSettings
from postroom_mailbox_sync.store import outbox
from postroom_runtime.tenants import seed_tenants
from postroom_testing.dovecot import PASSWORD, USER, Dovecot
from postroom_testing.procs import until

ACME = Tenant.model_validate({
    "slug": "acme", "domains": ["intake.example.com"],
    "mailboxes": {"support": {"actions": ["extract", "classify", "reply"]},
                  "orders": {"actions": ["extract"]}},
})


def mail(subject: str = "Question", body: str = "Where is my order?",
         message_id: str | None = None) -> bytes:
    message_id = message_id or make_msgid(domain="customer.example")
    return (f"Return-Path: <ann@customer.example>\r\nFrom: Ann <ann@customer.example>\r\n"
            f"To: {USER}\r\nSubject: {subject}\r\nMessage-ID: {message_id}\r\n"
            f"Date: Tue, 01 Dec 2026 10:00:00 +0000\r\n\r\n{body}\r\n").encode()


@pytest.fixture
def dovecot() -> Iterator[Dovecot]:
    server = Dovecot(Dovecot.make_root())
    try:
        yield server.start()
    finally:
        server.cleanup()


class Harness:
    """mailbox-sync in-process (started on demand with settings) plus a NATS client."""

    def __init__(self, nats_url: str, tmp_path: Path) -> None:
        self.nats_url = nats_url
        self.tmp_path = tmp_path
        self.runtime: MailboxSyncRuntime | None = None
        self.nc: Any = None
        self.token = "test-token-123"

    def settings(self, **overrides: Any) -> MailboxSyncSettings:
        values: dict[str, Any] = {
            "nats_url": self.nats_url,
            "database_url": f"sqlite+aiosqlite:///{self.tmp_path}/mailbox_sync.db",
            "http_port": 0,
            "mailbox_sync_secret_key_file": self.tmp_path / "secret-key",
            "mailbox_sync_api_token": self.token,
            "imap_timeout_seconds": 3.0,
            "imap_watchdog_seconds": 2.0,
            "imap_backoff_base_seconds": 0.1,
            "imap_backoff_max_seconds": 0.5,
            "email_check_interval": 0.5,
            "imap_first_sync_days": 0,
            "outbox_poll_seconds": 0.2,
        }
        values.update(overrides)
        return MailboxSyncSettings(**values)

    async def start(self, **overrides: Any) -> MailboxSyncRuntime:
        if self.nc is None:
            self.nc = await nats.connect(self.nats_url)
            self.js = self.nc.jetstream()
            await seed_tenants(self.js, [ACME], overwrite=True)  # as `postroom up` does first
        self.runtime = build_runtime(self.settings(**overrides), registry=CollectorRegistry(),
                                     configure_logging=False)
        await self.runtime.start()
        return self.runtime

    async def stop(self) -> None:
        if self.runtime is not None:
            await self.runtime.stop()
            self.runtime = None

    @property
    def http(self) -> httpx.AsyncClient:
        assert self.runtime is not None
        return httpx.AsyncClient(base_url=f"http://127.0.0.1:{self.runtime.http_port}",
                                 headers={"Authorization": f"Bearer {self.token}"},
                                 timeout=10, trust_env=False)

    async def add_account(self, dovecot: Dovecot, **fields: Any) -> dict[str, Any]:
        body = {"id": "support", "tenant": "acme", "mailbox": "support", "host": "127.0.0.1",
                "port": dovecot.port, "security": "none", "username": USER,
                "password": PASSWORD, **fields}
        async with self.http as client:
            response = await client.post("/api/v1/accounts", json=body)
        assert response.status_code == 201, response.text
        return response.json()

    async def account(self, account_id: str = "support") -> dict[str, Any]:
        async with self.http as client:
            response = await client.get(f"/api/v1/accounts/{account_id}")
        assert response.status_code == 200, response.text
        return response.json()

    async def watching(self, account_id: str = "support", state: str = "idle") -> None:
        async def ready() -> bool:
            folders = (await self.account(account_id))["status"]["folders"]
            return bool(folders) and all(f["state"] == state for f in folders)

        await until(ready, 60, what=f"every folder of {account_id} {state}")

    async def received(self) -> list[dict[str, Any]]:
        """Every mail.received in the stream, in order."""
        try:
            info = await self.js.stream_info(EVENTS_STREAM)
        except Exception:
            return []
        out = []
        for seq in range(info.state.first_seq, info.state.last_seq + 1):
            try:
                msg = await self.js.get_msg(EVENTS_STREAM, seq)
            except Exception:
                continue
            if msg.subject.startswith("postroom.mail.received."):
                out.append(json.loads(msg.data))
        return out

    async def wait_received(self, count: int, within: float = 30.0) -> list[dict[str, Any]]:
        async def enough() -> list[dict[str, Any]] | None:
            found = await self.received()
            return found if len(found) >= count else None

        return await until(enough, within, what=f"{count} mail.received", interval=0.02)

    async def published_all(self) -> None:
        """Wait until every event the service committed is published (its outbox is empty):
        after that, an event missing from the stream was never made."""
        assert self.runtime is not None
        store = self.runtime.store

        async def drained() -> bool:
            async with store.sessions() as session:
                rows = (await session.execute(select(outbox.c.id).where(
                    outbox.c.published_at.is_(None)).limit(1))).all()
            return not rows

        await until(drained, 60, what="the outbox published")

    async def close(self) -> None:
        await self.stop()
        if self.nc is not None:
            await self.nc.close()


@pytest.fixture
async def harness(nats_url: str, tmp_path: Path) -> AsyncIterator[Harness]:
    h = Harness(nats_url, tmp_path)
    try:
        yield h
    finally:
        await h.close()


__all__ = ["ACME", "PASSWORD", "USER", "Dovecot", "Harness", "mail"]
