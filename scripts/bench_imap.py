#!/usr/bin/env python
"""IMAP ingest latency: a mail appended to a mailbox (IMAP APPEND) → its ``mail.received``.

The script starts its own nats-server (JetStream, ``sync_interval: always``), a Dovecot
(``postroom_testing.dovecot``: Debian's dovecot-imapd, own config, throwaway Maildir), seeds
the tenants of ``deploy/tenants.yaml`` and runs, one after the other:

* ``idle``     ``postroom-mailbox-sync`` (its own process, SQLite store, ``BLOB_BACKEND=nats``)
               watching the mailbox with the static account of the environment (``IMAP_HOST``,
               ...) and IDLE;
* ``poll``     the same with ``IMAP_IDLE=false`` and ``EMAIL_CHECK_INTERVAL=--poll-interval``
               (default 2 s): expect about half the interval on top;
* ``smtp``     the baseline in the same run: ``postroom-smtp-ingress``, the time from the start
               of the SMTP transaction (smtplib ``sendmail``) to the mail's ``mail.received``;
* ``floor``    what Dovecot itself takes: a bare IDLE client (the service's own
               ``ImapSession``, nothing stored or published), APPEND → the server's ``EXISTS``.

In ``poll`` each mail is appended after a random wait of up to one poll interval, so mails
arrive at random points of the polling cycle (without it every mail would wait a whole
interval: it is appended right after the poll that found the previous one).

Each scenario sends ``--messages`` mails (default 100) one at a time, each waited for (a
subscriber on core NATS ``postroom.mail.received.*`` matches the event by its Message-ID);
``--warmup`` mails (default 3) go first and are not counted. The time runs from the call that
sends the mail (APPEND, or the SMTP transaction) to the event's arrival at the subscriber.
A mail not seen within ``--max-seconds`` counts as infinitely late. Prints p50/p95/p99/max in
ms per scenario; ``--json-out`` writes them as JSON. Everything stays on 127.0.0.1.

    .venv/bin/python scripts/bench_imap.py
    .venv/bin/python scripts/bench_imap.py --messages 200 --poll-interval 1
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import imaplib
import json
import math
import random
import shutil
import smtplib
import sys
import tempfile
import time
from email.utils import make_msgid
from pathlib import Path
from typing import Any

import nats

sys.path.insert(0, str(Path(__file__).parent))
from benchcommon import loadavg, machine_info, percentile

from postroom_mailbox_sync.handlers import Account
from postroom_mailbox_sync.imap import ImapSession
from postroom_runtime.tenants import load_seed, seed_tenants
from postroom_testing.dovecot import PASSWORD, USER, Dovecot
from postroom_testing.nats import NatsServer
from postroom_testing.procs import STARTUP_SECONDS, ServiceProcess, free_port

REPO = Path(__file__).resolve().parents[1]
TENANTS_FILE = REPO / "deploy" / "tenants.yaml"


def raw_mail(message_id: str, n: int) -> bytes:
    return (f"From: Ann <ann@customer.example>\r\nTo: support+acme@intake.example.com\r\n"
            f"Subject: Question {n}\r\nMessage-ID: {message_id}\r\n"
            f"Date: Tue, 01 Dec 2026 10:00:00 +0000\r\n\r\n"
            f"Hello, where is my order {n}?\r\n" + ("x" * 70 + "\r\n") * 30).encode()


class Watcher:
    """Core-NATS subscriber: Message-ID -> arrival time (monotonic)."""

    def __init__(self) -> None:
        self.seen: dict[str, float] = {}
        self.nc: Any = None

    async def start(self, url: str) -> None:
        self.nc = await nats.connect(url)

        async def on_event(msg: Any) -> None:
            self.seen[json.loads(msg.data)["message_id"]] = time.monotonic()

        await self.nc.subscribe("postroom.mail.received.*", cb=on_event)
        await self.nc.flush()

    async def wait(self, message_id: str, limit: float) -> float | None:
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            if message_id in self.seen:
                return self.seen[message_id]
            await asyncio.sleep(0.001)
        return None

    async def close(self) -> None:
        if self.nc is not None:
            await self.nc.close()


def summary(name: str, values: list[float]) -> dict[str, Any]:
    ordered = sorted(values)
    return {"scenario": name, "n": len(values),
            **{f"p{p}": percentile(ordered, p) * 1000 for p in (50, 95, 99)},
            "max": (ordered[-1] * 1000) if ordered else math.nan}


async def run_imap(name: str, args: argparse.Namespace, nats_url: str, dovecot: Dovecot,
                   watcher: Watcher, workdir: Path, env: dict[str, str]) -> dict[str, Any]:
    port = free_port()
    service = ServiceProcess(
        "postroom-mailbox-sync", name=f"mailbox-sync-{name}",
        env={"NATS_URL": nats_url, "HTTP_PORT": str(port), "BLOB_BACKEND": "nats",
             "DATABASE_URL": f"sqlite+aiosqlite:///{workdir}/mailbox_sync_{name}.db",
             "MAILBOX_SYNC_SECRET_KEY_FILE": str(workdir / f"key-{name}"),
             "MAILBOX_SYNC_API_TOKEN_FILE": str(workdir / f"token-{name}"),
             "IMAP_HOST": "127.0.0.1", "IMAP_PORT": str(dovecot.port), "IMAP_SSL": "false",
             "EMAIL_ADDRESS": USER, "EMAIL_PASSWORD": PASSWORD, "MAILBOX_SYNC_TENANT": "acme",
             "MAILBOX_SYNC_MAILBOX": "support", "IMAP_FIRST_SYNC_DAYS": "0",
             "LOG_LEVEL": "WARNING", **env},
        ready_url=f"http://127.0.0.1:{port}/health/ready", log_path=workdir / f"{name}.log")
    service.start(timeout=STARTUP_SECONDS)
    try:
        import httpx

        async with httpx.AsyncClient(trust_env=False) as client:
            for _ in range(600):
                ready = (await client.get(f"http://127.0.0.1:{port}/health/ready")).json()
                if ready.get("details", {}).get("accounts", {}).get("env", {}).get(
                        "state") == "ok":
                    break
                await asyncio.sleep(0.05)
        imap = imaplib.IMAP4("127.0.0.1", dovecot.port, timeout=10)
        imap.login(USER, PASSWORD)
        latencies: list[float] = []
        rng = random.Random(20261201)
        for n in range(args.warmup + args.messages):
            message_id = make_msgid(domain=f"{name}.bench.example")
            raw = raw_mail(message_id, n)
            if name == "poll":
                await asyncio.sleep(rng.uniform(0, args.poll_interval))
            started = time.monotonic()
            await asyncio.to_thread(imap.append, "INBOX", None, None, raw)
            arrived = await watcher.wait(message_id, args.max_seconds)
            if n >= args.warmup:
                latencies.append(math.inf if arrived is None else arrived - started)
        imap.logout()
        return summary(name, latencies)
    finally:
        service.stop()


async def run_floor(args: argparse.Namespace, dovecot: Dovecot) -> dict[str, Any]:
    account = Account(
        id="floor", kind="imap", origin="api", tenant="acme", mailbox="support", address=USER,
        host="127.0.0.1", port=dovecot.port, security="none", tls_verify=True, username=USER,
        auth="password", secret=PASSWORD, folders=("INBOX",), mode="idle", mark_seen=False,
        flag=None, move_to=None, since=None, enabled=True)
    session = ImapSession(account, timeout=args.max_seconds)
    await session.open()
    await session.select("INBOX")
    imap = imaplib.IMAP4("127.0.0.1", dovecot.port, timeout=10)
    imap.login(USER, PASSWORD)
    latencies: list[float] = []
    try:
        for n in range(args.warmup + args.messages):
            idle = asyncio.ensure_future(session.idle(args.max_seconds, args.max_seconds))
            # "+ idling": the server watches the mailbox from now on
            await asyncio.wait_for(session.proto.wait_for_idle_response(), 10)
            started = time.monotonic()
            await asyncio.to_thread(imap.append, "INBOX", None, None,
                                    raw_mail(make_msgid(domain="floor.bench.example"), n))
            reason = await idle
            if n >= args.warmup:
                latencies.append(time.monotonic() - started if reason == "push" else math.inf)
    finally:
        imap.logout()
        await session.close()
    return summary("floor (Dovecot IDLE push)", latencies)


async def run_smtp(args: argparse.Namespace, nats_url: str, watcher: Watcher,
                   workdir: Path) -> dict[str, Any]:
    port, smtp_port = free_port(), free_port()
    service = ServiceProcess(
        "postroom-smtp-ingress", name="smtp-ingress",
        env={"NATS_URL": nats_url, "HTTP_PORT": str(port), "SMTP_PORT": str(smtp_port),
             "BLOB_BACKEND": "nats", "AUTH_VERIFY": "false",
             "DATABASE_URL": f"sqlite+aiosqlite:///{workdir}/smtp_ingress.db",
             "LOG_LEVEL": "WARNING"},
        ready_url=f"http://127.0.0.1:{port}/health/ready", log_path=workdir / "smtp.log")
    service.start(timeout=STARTUP_SECONDS)
    try:
        client = smtplib.SMTP("127.0.0.1", smtp_port, timeout=30)
        latencies: list[float] = []
        for n in range(args.warmup + args.messages):
            message_id = make_msgid(domain="smtp.bench.example")
            raw = raw_mail(message_id, n)
            started = time.monotonic()
            await asyncio.to_thread(client.sendmail, "ann@customer.example",
                                    ["support+acme@intake.example.com"], raw)
            arrived = await watcher.wait(message_id, args.max_seconds)
            if n >= args.warmup:
                latencies.append(math.inf if arrived is None else arrived - started)
        client.quit()
        return summary("smtp (baseline)", latencies)
    finally:
        service.stop()


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=100)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--poll-interval", type=float, default=2.0)
    parser.add_argument("--max-seconds", type=float, default=30.0)
    parser.add_argument("--json-out", type=Path)
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="bench-imap-"))
    nats_server = NatsServer(workdir / "nats")
    dovecot = Dovecot(Dovecot.make_root())
    watcher = Watcher()
    results = []
    try:
        await nats_server.astart()
        dovecot.start()
        nc = await nats.connect(nats_server.url)
        await seed_tenants(nc.jetstream(), load_seed(TENANTS_FILE))
        await nc.close()
        await watcher.start(nats_server.url)
        print(f"load average at start: {loadavg()}", flush=True)
        results.append(await run_imap("idle", args, nats_server.url, dovecot, watcher,
                                      workdir, {}))
        results.append(await run_imap(
            "poll", args, nats_server.url, dovecot, watcher, workdir,
            {"IMAP_IDLE": "false", "EMAIL_CHECK_INTERVAL": str(args.poll_interval)}))
        results.append(await run_smtp(args, nats_server.url, watcher, workdir))
        results.append(await run_floor(args, dovecot))
        print(f"load average at end: {loadavg()}", flush=True)
    finally:
        await watcher.close()
        dovecot.cleanup()
        nats_server.stop()
        with contextlib.suppress(OSError):
            shutil.rmtree(workdir)
    print(f"\n{'scenario':<26} {'n':>5} {'p50 ms':>9} {'p95 ms':>9} {'p99 ms':>9} {'max ms':>9}")
    for r in results:
        print(f"{r['scenario']:<26} {r['n']:>5} {r['p50']:>9.1f} {r['p95']:>9.1f} "
              f"{r['p99']:>9.1f} {r['max']:>9.1f}")
    info = machine_info(("aioimaplib", "nats-py"))
    print(f"\nmachine: {info['cpu_model']}, {info['cpu_cores']} cores, {info['python']}; "
          f"poll interval {args.poll_interval:g} s")
    if args.json_out:
        args.json_out.write_text(json.dumps({"results": results, "machine": info}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
