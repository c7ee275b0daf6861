"""A real Dovecot on a free port with a throwaway mail store, and mailbox-sync running
in-process against a real nats-server, watching the mail.received events it publishes."""

from __future__ import annotations

import asyncio
import contextlib
import imaplib
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from datetime import datetime
from email.utils import make_msgid
from pathlib import Path
from typing import Any

import httpx
import nats
import pytest
from prometheus_client import CollectorRegistry

from postroom_contracts import EVENTS_STREAM, Tenant
from postroom_mailbox_sync.app import MailboxSyncRuntime, build_runtime
from postroom_mailbox_sync.config import MailboxSyncSettings
from postroom_runtime.tenants import seed_tenants
from postroom_testing.procs import free_port, until

DOVECOT = shutil.which("dovecot") or "/usr/sbin/dovecot"
DOVEADM = shutil.which("doveadm") or "/usr/bin/doveadm"
USER, PASSWORD = "support@acme.example", "s3cret-pass"
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


class Dovecot:
    """``dovecot -F`` with its own config, passwd-file users and Maildir store under ``root``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.config = root / "dovecot.conf"
        for sub in ("run", "state", "mail"):
            (root / sub).mkdir(parents=True, exist_ok=True)
        shutil.chown(root / "mail", "nobody", "nogroup")
        (root / "users").write_text(f"{USER}:{{PLAIN}}{PASSWORD}::::::\n")
        self.config.write_text(f"""
base_dir = {root}/run
state_dir = {root}/state
instance_name = postroom-test-{self.port}
log_path = {root}/dovecot.log
protocols = imap
listen = 127.0.0.1
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
mail_location = maildir:{root}/mail/%u
first_valid_uid = 1
shutdown_clients = yes
mail_max_userip_connections = 200
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {root}/users
}}
userdb {{
  driver = static
  args = uid=nobody gid=nogroup home={root}/mail/%u
}}
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {self.port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
service imap {{
  process_limit = 200
}}
""")

    def start(self) -> Dovecot:
        self.proc = subprocess.Popen(
            [DOVECOT, "-c", str(self.config), "-F"], stdout=subprocess.DEVNULL,
            stderr=open(self.root / "dovecot.stderr", "ab"))
        deadline = time.monotonic() + 20
        while True:
            try:
                with imaplib.IMAP4("127.0.0.1", self.port, timeout=2) as client:
                    client.noop()
                return self
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"dovecot did not start: {self.log()}") from None
                time.sleep(0.05)

    def _children(self) -> list[int]:
        if self.proc is None:
            return []
        found = subprocess.run(["pgrep", "-P", str(self.proc.pid)], capture_output=True,
                               text=True, check=False).stdout
        return [int(pid) for pid in found.split()]

    def stop(self) -> None:
        """Stop the server and every process it started: its clients' connections drop (an
        imap process would otherwise outlive its master and keep serving)."""
        children = self._children()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None
        for pid in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def log(self) -> str:
        path = self.root / "dovecot.log"
        return path.read_text()[-3000:] if path.exists() else ""

    def doveadm(self, *args: str) -> str:
        return subprocess.run([DOVEADM, "-c", str(self.config), *args], check=True,
                              capture_output=True, text=True, timeout=20).stdout

    def kick(self) -> None:
        """Disconnect every session of the user (doveadm kick: the server closes them)."""
        self.doveadm("kick", USER)

    def imap(self) -> imaplib.IMAP4:
        client = imaplib.IMAP4("127.0.0.1", self.port, timeout=10)
        client.login(USER, PASSWORD)
        return client

    def append(self, raw: bytes, folder: str = "INBOX", when: datetime | None = None) -> None:
        with self.imap() as client:
            date = imaplib.Time2Internaldate(when) if when is not None else None
            status, data = client.append(folder, None, date, raw)
            assert status == "OK", data

    def create(self, folder: str) -> None:
        with self.imap() as client:
            client.create(folder)

    def delete(self, folder: str) -> None:
        with self.imap() as client:
            status, data = client.delete(folder)
            assert status == "OK", data

    def uidvalidity(self, folder: str = "INBOX") -> int:
        with self.imap() as client:
            _, data = client.status(folder, "(UIDVALIDITY)")
        return int(data[0].split(b"UIDVALIDITY ")[1].rstrip(b")"))

    def messages(self, folder: str = "INBOX") -> list[tuple[int, bytes]]:
        """(UID, flags) of every message in ``folder``."""
        with self.imap() as client:
            client.select(folder)
            _, data = client.uid("FETCH", "1:*", "(UID FLAGS)")
        out = []
        for line in data:
            if isinstance(line, bytes) and b"UID" in line:
                uid = int(line.split(b"UID ")[1].split()[0].rstrip(b")"))
                out.append((uid, line.split(b"FLAGS (")[1].split(b")")[0]))
        return out


@pytest.fixture
def dovecot() -> Iterator[Dovecot]:
    # not under pytest's tmp_path: its parents are 0700, and Dovecot's auth and mail processes
    # run as unprivileged users that must reach the passwd file and the mail store
    root = Path(tempfile.mkdtemp(prefix="postroom-dovecot-"))
    root.chmod(0o755)
    server = Dovecot(root)
    try:
        yield server.start()
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


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

        await until(ready, 20, what=f"every folder of {account_id} {state}")

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

    async def wait_received(self, count: int, within: float = 10.0) -> list[dict[str, Any]]:
        async def enough() -> list[dict[str, Any]] | None:
            found = await self.received()
            return found if len(found) >= count else None

        return await until(enough, within, what=f"{count} mail.received", interval=0.02)

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


def subjects(events: list[dict[str, Any]]) -> list[str]:
    return sorted(e["subject"] for e in events)


async def settle(seconds: float) -> None:
    """Give a wrong extra event the chance to appear (used only after the expected ones)."""
    await asyncio.sleep(seconds)


__all__ = ["ACME", "PASSWORD", "USER", "Dovecot", "Harness", "mail", "os", "settle"]
