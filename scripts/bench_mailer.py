#!/usr/bin/env python3
"""Mailer throughput: delivery.requested published on NATS → accepted by a local SMTP sink.

Starts a nats-server (sync_interval: always) and the mailer as a process (SQLite store by
default, ``--database-url`` for PostgreSQL), an aiosmtpd sink in this process, and per run:

- **mailer**: publishes ``--count`` notification requests at once and measures from the first
  publish until the sink holds them all (consume, compose, queue, claim, SMTP, record);
- **baseline**: the same number of mails sent with raw ``aiosmtplib`` to the same sink, with
  the mailer's concurrency (``MAILER_SEND_CONCURRENCY``, one connection per mail as the mailer
  opens): the ceiling of the SMTP part alone on this machine.

Prints sends/s of both side by side for each run, and their medians.

    uv run --frozen --no-sync python scripts/bench_mailer.py --runs 3 --count 500
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import threading
import time
import uuid
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import aiosmtplib
import benchcommon
import nats
from aiosmtpd.controller import Controller

from postroom_contracts import DeliveryRequested, derive_event_id
from postroom_runtime import event_headers

HOST = "127.0.0.1"


class Counting:
    def __init__(self) -> None:
        self.count = 0
        self.lock = threading.Lock()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        with self.lock:
            self.count += 1
        return "250 2.0.0 Ok"


def request(session: str, run: int, i: int) -> DeliveryRequested:
    # ids unique to this invocation: a reused database already holds earlier runs' deliveries
    delivery_id = f"bench-{session}-{run}-{i:06d}"
    return DeliveryRequested(
        event_id=derive_event_id("bench", delivery_id), tenant="acme",
        mail_key=f"b{session}{run:02d}{i:06d}", delivery_id=delivery_id, kind="notification",
        to=["alice@acme.example"], subject=f"Notice {i}", from_address="desk@acme.example",
        body_text="A notification of a few lines.\n" * 20)


def baseline_message(i: int) -> bytes:
    msg = EmailMessage()
    msg["From"] = "desk@acme.example"
    msg["To"] = "alice@acme.example"
    msg["Subject"] = f"Notice {i}"
    msg["Message-ID"] = f"<base-{i}@bench.local>"
    msg.set_content("A notification of a few lines.\n" * 20)
    return msg.as_bytes()


async def wait_count(sink: Counting, target: int, limit: float) -> None:
    deadline = time.monotonic() + limit
    while sink.count < target:
        if time.monotonic() > deadline:
            raise TimeoutError(f"sink has {sink.count} of {target}")
        await asyncio.sleep(0.005)


async def run_baseline(sink: Counting, port: int, count: int, concurrency: int) -> float:
    start_count = sink.count
    slots = asyncio.Semaphore(concurrency)
    messages = [baseline_message(i) for i in range(count)]

    async def one(data: bytes) -> None:
        async with slots:
            await aiosmtplib.send(data, sender="desk@acme.example",
                                  recipients=["alice@acme.example"], hostname=HOST, port=port)

    started = time.perf_counter()
    await asyncio.gather(*(one(m) for m in messages))
    elapsed = time.perf_counter() - started
    assert sink.count - start_count == count
    return count / elapsed


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--count", type=int, default=500)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--database-url", default="")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    from postroom_testing import NatsServer, ServiceProcess, free_port

    workdir = Path(tempfile.mkdtemp(prefix="bench-mailer-"))
    sink = Counting()
    port = free_port()
    controller = Controller(sink, hostname=HOST, port=port)
    controller.start()
    server = NatsServer(workdir / "nats")
    await server.astart()
    http = free_port()
    mailer = ServiceProcess(
        [sys.executable, "-m", "postroom_mailer"], name="mailer",
        env={"NATS_URL": server.url, "HTTP_HOST": HOST, "HTTP_PORT": str(http),
             "DATABASE_URL": args.database_url or f"sqlite+aiosqlite:///{workdir / 'm.db'}",
             "MAILER_RELAY_URL": f"smtp://{HOST}:{port}", "LOG_LEVEL": "WARNING",
             "MAILER_SEND_CONCURRENCY": str(args.concurrency),
             "OTEL_EXPORTER_OTLP_ENDPOINT": "", "PYTHONUNBUFFERED": "1"},
        ready_url=f"http://{HOST}:{http}/health/ready", log_path=workdir / "mailer.log")
    await mailer.astart(timeout=60)
    nc = await nats.connect(server.url)
    js = nc.jetstream()
    results: list[dict[str, float]] = []
    session = uuid.uuid4().hex[:8]
    try:
        for run in range(args.runs):
            events = [request(session, run, i) for i in range(args.count)]
            before = sink.count
            started = time.perf_counter()
            await asyncio.gather(*(js.publish(e.nats_subject, e.model_dump_json().encode(),
                                              headers=event_headers(e)) for e in events))
            await wait_count(sink, before + args.count, 600)
            mailer_rate = args.count / (time.perf_counter() - started)
            base_rate = await run_baseline(sink, port, args.count, args.concurrency)
            results.append({"mailer": mailer_rate, "baseline": base_rate})
            print(f"run {run + 1}: mailer {mailer_rate:7.1f} sends/s   "
                  f"raw aiosmtplib {base_rate:7.1f} sends/s   "
                  f"ratio {mailer_rate / base_rate:.2f}", flush=True)
    finally:
        await nc.close()
        await mailer.astop()
        await server.astop()
        controller.stop()
    med_m = statistics.median(r["mailer"] for r in results)
    med_b = statistics.median(r["baseline"] for r in results)
    print(f"median: mailer {med_m:.1f} sends/s, raw aiosmtplib {med_b:.1f} sends/s "
          f"({med_m / med_b:.2f}); {args.count} mails per run, concurrency "
          f"{args.concurrency}, store {'PostgreSQL' if args.database_url else 'SQLite'}")
    if args.json:
        print(json.dumps({"runs": results, "machine": benchcommon.machine_info()}))
    return 0


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
