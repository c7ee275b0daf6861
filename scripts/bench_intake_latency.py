#!/usr/bin/env python
"""Intake latency benchmark: from a supplier's 250 to the third ``document.stored`` event.

The promise under test: "a supplier emails a purchase order with a PDF, an XLSX and a CSV;
within two seconds each attachment is a stored document that other teams see on Postroom's
event subjects".

The script starts its own nats-server (JetStream, ``sync_interval: always``), seeds the tenants
of ``deploy/tenants.yaml`` into the registry, and starts ``postroom-smtp-ingress`` and
``postroom-attachment-extractor`` as processes (temporary SQLite stores, ``BLOB_BACKEND=nats``,
the services' own defaults otherwise: one SMTP process, one extractor).  Like an outside team it
subscribes with plain core NATS (nats-py) to ``postroom.document.stored.*``.  Then it sends
``--messages`` purchase-order mails (default 200) to ``orders+acme@intake.example.com`` with
``smtplib`` (CRLF through ``email.policy.SMTP``), one after another on each of ``--concurrency``
SMTP connections (default 1), without waiting for the documents of one mail before sending the
next (``--wait-each``: each session waits for them, so a mail meets no backlog of its own
session's mails).  Each mail carries a real two-page PDF (reportlab), an XLSX (openpyxl) and a
CSV, all distinct per mail, and its own Message-ID.  All mails are built before the measurement.

Measured per mail: the time from the final ``250`` reply to DATA to the arrival of its third
``document.stored`` event (events are matched by their ``mail_key``, which the ingress derives
as ``postroom_contracts.mail_key(tenant, message_id, sha256 of the message as sent)``).  A mail
whose three events do not arrive within ``--max-seconds`` counts as infinitely late.
``--warmup`` mails (default 5) go first, each waited for, and are not counted.

The in-run baseline ("floor") on the same machine and nats-server: a bare JetStream publish of a
4 KiB message to a file stream, waiting for its ack, to its arrival at a core-NATS subscriber
(another connection), one after another, ``--floor-messages`` times (default: ``--messages``).

Prints a side-by-side table (scenario, N, p50, p95, p99, max in ms, p95 < 2000 ms) and the
machine; ``--json-out`` writes the same as JSON.  Everything stays on 127.0.0.1; the run is
bounded by ``--max-seconds`` per phase; every process is stopped at the end.

    .venv/bin/python scripts/bench_intake_latency.py                    # one SMTP session
    .venv/bin/python scripts/bench_intake_latency.py --concurrency 10   # ten in parallel
    .venv/bin/python scripts/bench_intake_latency.py --wait-each        # one mail at a time
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import io
import json
import math
import os
import queue
import shutil
import smtplib
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from email import policy
from email.message import EmailMessage
from email.utils import formatdate
from pathlib import Path
from typing import Any

import benchcommon
from benchcommon import percentile

REPO_ROOT = Path(__file__).resolve().parents[1]
TENANTS_FILE = REPO_ROOT / "deploy" / "tenants.yaml"
HOST = "127.0.0.1"
TENANT = "acme"
SENDER = "purchasing@supplier-acme.example.net"
RECIPIENT = f"orders+{TENANT}@intake.example.com"
DOCUMENTS_PER_MAIL = 3
DOCUMENT_SUBJECT = "postroom.document.stored.*"
FLOOR_STREAM = "BENCH_FLOOR"
FLOOR_SUBJECT = "bench.floor.msg"
FLOOR_SIZE = 4096
PROMISE_MS = 2000.0
SMTP_TIMEOUT = 30.0  # seconds for one SMTP command
WAIT_EACH_TIMEOUT = 30.0  # --wait-each: longest wait for one mail's documents


# ---------------------------------------------------------------------------------------------
# the mails


XLSX_TYPE = ("application", "vnd.openxmlformats-officedocument.spreadsheetml.sheet")


def _positions(n: int, run_id: str) -> list[tuple[str, str, int, float]]:
    """The order lines of mail ``n``: (article, description, quantity, unit price)."""
    seed = int(run_id[:8], 16) + n
    items = []
    for pos in range(1, 13 + n % 7):
        k = (seed * 31 + pos * 17) % 997
        items.append(
            (
                f"ART-{10000 + k:05d}",
                f"Hex bolt M{6 + k % 6 * 2}x{20 + k % 60} DIN 933, zinc plated",
                25 * (1 + k % 9),
                round(0.05 + (k % 113) / 100, 2),
            )
        )
    return items


def pdf_bytes(po: str, n: int, run_id: str) -> bytes:
    """A real two-page purchase order (reportlab): the order on page 1, terms on page 2."""
    from reportlab.lib.pagesizes import A4
    from reportlab.pdfgen import canvas

    buf = io.BytesIO()
    c = canvas.Canvas(buf, pagesize=A4)
    c.setTitle(f"Purchase order {po}")
    c.setFont("Helvetica-Bold", 16)
    c.drawString(56, 790, f"Purchase order {po}")
    c.setFont("Helvetica", 10)
    c.drawString(56, 770, "Supplier ACME Fasteners Ltd, 12 Dock Road, Hamburg")
    c.drawString(56, 756, f"Order date {datetime.now(UTC):%Y-%m-%d}   reference {run_id}-{n}")
    y = 724
    c.setFont("Helvetica-Bold", 10)
    for x, text in (
        (56, "Pos"),
        (90, "Article"),
        (170, "Description"),
        (430, "Qty"),
        (480, "Unit EUR"),
    ):
        c.drawString(x, y, text)
    c.setFont("Helvetica", 10)
    total = 0.0
    for pos, (art, desc, qty, price) in enumerate(_positions(n, run_id), 1):
        y -= 16
        c.drawString(56, y, f"{pos:3d}")
        c.drawString(90, y, art)
        c.drawString(170, y, desc)
        c.drawRightString(460, y, str(qty))
        c.drawRightString(530, y, f"{price:.2f}")
        total += qty * price
    c.setFont("Helvetica-Bold", 10)
    c.drawRightString(530, y - 24, f"Total EUR {total:,.2f}")
    c.showPage()
    c.setFont("Helvetica-Bold", 12)
    c.drawString(56, 790, f"Terms and conditions ({po})")
    c.setFont("Helvetica", 10)
    terms = [
        "1. Delivery DAP Hamburg within 14 days of this order.",
        "2. Payment 30 days net from the date of invoice.",
        "3. Please quote the order number on every delivery note and invoice.",
        "4. Partial deliveries only after written agreement.",
        f"5. Questions about this order: purchasing desk, reference {run_id}-{n}.",
    ]
    for i, line in enumerate(terms):
        c.drawString(56, 764 - 16 * i, line)
    c.showPage()
    c.save()
    return buf.getvalue()


def xlsx_bytes(po: str, n: int, run_id: str) -> bytes:
    from openpyxl import Workbook

    wb = Workbook()
    ws = wb.active
    ws.title = "Order"
    ws.append(["order", "pos", "article", "description", "qty", "unit_eur"])
    for pos, (art, desc, qty, price) in enumerate(_positions(n, run_id), 1):
        ws.append([po, pos, art, desc, qty, price])
    buf = io.BytesIO()
    wb.save(buf)
    return buf.getvalue()


def csv_bytes(po: str, n: int, run_id: str) -> bytes:
    lines = ["order,pos,article,description,qty,unit_eur"]
    for pos, (art, desc, qty, price) in enumerate(_positions(n, run_id), 1):
        lines.append(f'{po},{pos},{art},"{desc}",{qty},{price:.2f}')
    return ("\r\n".join(lines) + "\r\n").encode()


@dataclass
class Mail:
    index: int
    message_id: str
    mail_key: str
    wire: bytes  # CRLF line ends, as it goes over SMTP


def build_mail(n: int, run_id: str) -> Mail:
    from postroom_contracts import mail_key

    po = f"PO-{run_id[:6].upper()}-{n:05d}"
    msg = EmailMessage()
    msg["From"] = f'"Supplier ACME Purchasing" <{SENDER}>'
    msg["To"] = RECIPIENT
    msg["Subject"] = f"Purchase order {po}"
    msg["Date"] = formatdate(localtime=False)
    msg["Message-ID"] = f"<{run_id}.{n:06d}@supplier-acme.example.net>"
    msg.set_content(
        f"Dear order desk,\n\nplease find attached our purchase order {po} as PDF, with the\n"
        "positions as XLSX and CSV for your system.\n\nKind regards,\nSupplier ACME Purchasing\n"
    )
    msg.add_attachment(
        pdf_bytes(po, n, run_id), maintype="application", subtype="pdf", filename=f"{po}.pdf"
    )
    msg.add_attachment(
        xlsx_bytes(po, n, run_id),
        maintype=XLSX_TYPE[0],
        subtype=XLSX_TYPE[1],
        filename=f"{po}.xlsx",
    )
    msg.add_attachment(
        csv_bytes(po, n, run_id), maintype="text", subtype="csv", filename=f"{po}.csv"
    )
    message_id = str(msg["Message-ID"])
    wire = msg.as_bytes(policy=policy.SMTP)
    # what the server receives: smtplib ends the data with CRLF if it does not already
    received = wire if wire.endswith(b"\r\n") else wire + b"\r\n"
    content = hashlib.sha256(received).hexdigest()
    return Mail(n, message_id, mail_key(TENANT, message_id, content), wire)


# ---------------------------------------------------------------------------------------------
# statistics


@dataclass
class Row:
    scenario: str
    n: int
    completed: int
    p50_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float
    p95_under_2s: bool
    extra: dict[str, Any] = field(default_factory=dict)


def make_row(scenario: str, latencies_s: list[float], extra: dict[str, Any]) -> Row:
    lat = sorted(latencies_s)
    ms = [v * 1000 for v in lat]
    p95 = percentile(ms, 95)
    return Row(
        scenario=scenario,
        n=len(lat),
        completed=sum(1 for v in lat if math.isfinite(v)),
        p50_ms=round(percentile(ms, 50), 2),
        p95_ms=round(p95, 2),
        p99_ms=round(percentile(ms, 99), 2),
        max_ms=round(ms[-1] if ms else math.nan, 2),
        p95_under_2s=p95 < PROMISE_MS,
        extra=extra,
    )


def _summary(values_s: list[float]) -> str:
    ms = sorted(v * 1000 for v in values_s)
    if not ms:
        return "-"
    return f"p50 {percentile(ms, 50):.1f} / p95 {percentile(ms, 95):.1f} / max {ms[-1]:.1f} ms"


# ---------------------------------------------------------------------------------------------
# the floor: one JetStream publish (acked) -> a core-NATS subscriber


async def measure_floor(nats_url: str, n: int, warmup: int, max_seconds: float) -> Row:
    import nats
    from nats.js.api import StorageType, StreamConfig

    pub = await nats.connect(nats_url, name="bench-floor-publisher")
    sub_nc = await nats.connect(nats_url, name="bench-floor-subscriber")
    js = pub.jetstream()
    await js.add_stream(
        StreamConfig(
            name=FLOOR_STREAM, subjects=[FLOOR_SUBJECT], storage=StorageType.FILE, num_replicas=1
        )
    )
    arrivals: dict[int, float] = {}
    waiting: dict[int, asyncio.Future[None]] = {}

    async def on_msg(msg: Any) -> None:
        t = time.perf_counter()
        i = int(msg.data[:12])
        arrivals.setdefault(i, t)
        fut = waiting.get(i)
        if fut is not None and not fut.done():
            fut.set_result(None)

    sub = await sub_nc.subscribe(FLOOR_SUBJECT, cb=on_msg)
    await sub_nc.flush()
    filler = os.urandom(FLOOR_SIZE // 2).hex().encode()[: FLOOR_SIZE - 12]
    loop = asyncio.get_running_loop()
    arrival_lat: list[float] = []
    ack_lat: list[float] = []
    try:
        async with asyncio.timeout(max_seconds):
            for i in range(-warmup, n):
                key = i + warmup
                waiting[key] = loop.create_future()
                payload = f"{key:012d}".encode() + filler
                started = time.perf_counter()
                await js.publish(FLOOR_SUBJECT, payload, headers={"Nats-Msg-Id": f"floor-{key}"})
                acked = time.perf_counter()
                await asyncio.wait_for(waiting[key], 10)
                if i >= 0:
                    ack_lat.append(acked - started)
                    arrival_lat.append(arrivals[key] - started)
    finally:
        await sub.unsubscribe()
        with contextlib.suppress(Exception):
            await js.delete_stream(FLOOR_STREAM)
        await sub_nc.close()
        await pub.close()
    return make_row(
        "floor: JetStream publish+ack 4 KiB -> core subscriber",
        arrival_lat,
        {"publish_to_ack": _summary(ack_lat), "payload_bytes": FLOOR_SIZE},
    )


# ---------------------------------------------------------------------------------------------
# the intake: SMTP 250 -> third document.stored


class DocumentWatcher:
    """An outside team's view: core NATS on ``postroom.document.stored.*``; for every mail the
    arrival time of each of its documents (by index), keyed by the event's ``mail_key``."""

    def __init__(self) -> None:
        self.arrivals: dict[str, dict[int, float]] = {}
        self.wanted: set[str] = set()
        self.complete: dict[str, threading.Event] = {}  # for senders that wait (threads)
        self.all_done = asyncio.Event()
        self.events = 0
        self.foreign = 0  # events for mails this run did not send

    def expect(self, keys: set[str]) -> None:
        self.wanted = set(keys)
        self.complete = {k: threading.Event() for k in keys}
        for k in keys:
            if self._complete(k):
                self.complete[k].set()
        self.all_done.clear()
        self._check()

    def _complete(self, key: str) -> bool:
        return len(self.arrivals.get(key, ())) >= DOCUMENTS_PER_MAIL

    def _check(self) -> None:
        if all(self._complete(k) for k in self.wanted):
            self.all_done.set()

    async def on_msg(self, msg: Any) -> None:
        t = time.perf_counter()
        self.events += 1
        event = json.loads(msg.data)
        key = event["mail_key"]
        docs = self.arrivals.setdefault(key, {})
        docs.setdefault(int(event["index"]), t)  # a repeated event keeps the first arrival
        if key in self.wanted and self._complete(key):
            self.complete[key].set()
            self._check()

    def times(self, key: str) -> tuple[float, float]:
        """(first, third) document arrival; inf when missing."""
        docs = sorted(self.arrivals.get(key, {}).values())
        first = docs[0] if docs else math.inf
        third = docs[DOCUMENTS_PER_MAIL - 1] if len(docs) >= DOCUMENTS_PER_MAIL else math.inf
        return first, third


@dataclass
class Sent:
    accepted_at: dict[int, float] = field(default_factory=dict)  # mail index -> after the 250
    smtp_latency: list[float] = field(default_factory=list)  # MAIL FROM .. 250
    errors: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


def smtp_session(
    port: int,
    todo: queue.SimpleQueue[Mail | None],
    sent: Sent,
    stop: threading.Event,
    wait_each: dict[str, threading.Event] | None,
) -> None:
    """One SMTP connection (runs in a thread): send mails from ``todo`` until ``None``; with
    ``wait_each``, wait for a mail's documents before sending the next one."""
    try:
        client = smtplib.SMTP(
            HOST, port, local_hostname="bench-client.example.net", timeout=SMTP_TIMEOUT
        )
    except OSError as err:
        with sent.lock:
            sent.errors.append(f"connect: {err}")
        return
    try:
        client.ehlo()
        while not stop.is_set():
            mail = todo.get()
            if mail is None:
                break
            started = time.perf_counter()
            try:
                code, text = client.mail(SENDER)
                if code == 250:
                    code, text = client.rcpt(RECIPIENT)
                if code in (250, 251):
                    code, text = client.data(mail.wire)
                done = time.perf_counter()
            except (smtplib.SMTPException, OSError) as err:
                with sent.lock:
                    sent.errors.append(f"mail {mail.index}: {type(err).__name__}: {err}")
                break
            with sent.lock:
                if code == 250 and b"duplicate" not in text:
                    sent.accepted_at[mail.index] = done
                    sent.smtp_latency.append(done - started)
                else:
                    sent.errors.append(f"mail {mail.index}: {code} {text.decode(errors='replace')}")
            if code != 250:
                with contextlib.suppress(smtplib.SMTPException, OSError):
                    client.rset()
            elif wait_each is not None:
                wait_each[mail.mail_key].wait(WAIT_EACH_TIMEOUT)
    finally:
        with contextlib.suppress(smtplib.SMTPException, OSError):
            client.quit()
        client.close()


async def send_and_wait(
    mails: list[Mail],
    concurrency: int,
    smtp_port: int,
    watcher: DocumentWatcher,
    max_seconds: float,
    wait_each: bool = False,
) -> tuple[Sent, float, float]:
    """Send ``mails`` over ``concurrency`` sessions; wait for all their documents.
    Returns what was sent, the seconds the sending took and the seconds until the last
    document (both from the start)."""
    watcher.expect({m.mail_key for m in mails})
    todo: queue.SimpleQueue[Mail | None] = queue.SimpleQueue()
    for mail in mails:
        todo.put(mail)
    for _ in range(concurrency):
        todo.put(None)
    sent = Sent()
    stop = threading.Event()
    loop = asyncio.get_running_loop()
    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="smtp") as pool:
        sessions = [
            loop.run_in_executor(
                pool,
                smtp_session,
                smtp_port,
                todo,
                sent,
                stop,
                watcher.complete if wait_each else None,
            )
            for _ in range(concurrency)
        ]
        try:
            async with asyncio.timeout(max_seconds):
                await asyncio.gather(*sessions)
                send_seconds = time.perf_counter() - started
                await watcher.all_done.wait()
        except TimeoutError:
            send_seconds = time.perf_counter() - started
            print(
                f"  timed out after {max_seconds:.0f} s: counting missing documents as late",
                file=sys.stderr,
                flush=True,
            )
        finally:
            stop.set()
            for event in watcher.complete.values():  # release senders waiting for documents
                event.set()
            while True:  # let blocked sessions see their end marker
                try:
                    todo.get_nowait()
                except queue.Empty:
                    break
            for _ in range(concurrency):
                todo.put(None)
            await asyncio.gather(*sessions, return_exceptions=True)
    last = max((watcher.times(m.mail_key)[1] for m in mails), default=math.inf)
    return sent, send_seconds, last - started


async def measure_intake(
    nats_url: str,
    smtp_port: int,
    mails: list[Mail],
    warmup: list[Mail],
    concurrency: int,
    max_seconds: float,
    wait_each: bool,
) -> tuple[Row, list[str]]:
    import nats

    nc = await nats.connect(nats_url, name="bench-outside-team")
    watcher = DocumentWatcher()
    sub = await nc.subscribe(DOCUMENT_SUBJECT, cb=watcher.on_msg)
    await nc.flush()
    failures: list[str] = []
    try:
        for mail in warmup:  # one at a time, each waited for
            sent, _, _ = await send_and_wait([mail], 1, smtp_port, watcher, 60, wait_each=True)
            if sent.errors or not math.isfinite(watcher.times(mail.mail_key)[1]):
                why = sent.errors or "no documents"
                raise RuntimeError(f"warm-up mail {mail.index} failed: {why}")
        sent, send_s, last_s = await send_and_wait(
            mails, concurrency, smtp_port, watcher, max_seconds, wait_each
        )
    finally:
        await sub.unsubscribe()
        await nc.close()

    third: list[float] = []
    first: list[float] = []
    for mail in mails:
        accepted = sent.accepted_at.get(mail.index)
        t_first, t_third = watcher.times(mail.mail_key)
        if accepted is None:
            third.append(math.inf)  # not accepted: the promise is not kept for it either
            continue
        third.append(t_third - accepted)
        first.append(t_first - accepted)
    missing = sum(1 for v in third if not math.isfinite(v))
    if sent.errors:
        failures.append(f"{len(sent.errors)} SMTP errors, e.g. {sent.errors[:3]}")
    if missing:
        failures.append(f"{missing} of {len(mails)} mails without three document.stored events")
    sizes = sorted(len(m.wire) for m in mails)
    extra = {
        "smtp_mail_from_to_250": _summary(sent.smtp_latency),
        "250_to_first_document": _summary([v for v in first if math.isfinite(v)]),
        "send_seconds": round(send_s, 2),
        "accepted_per_s": round(len(sent.accepted_at) / send_s, 1) if send_s else None,
        "last_document_after_s": round(last_s, 2) if math.isfinite(last_s) else None,
        "documents_per_s": (
            round(len(mails) * DOCUMENTS_PER_MAIL / last_s, 1)
            if math.isfinite(last_s) and last_s
            else None
        ),
        "document_events_seen": watcher.events,
        "mail_bytes_median": sizes[len(sizes) // 2],
    }
    sessions = "1 SMTP session" if concurrency == 1 else f"{concurrency} SMTP sessions"
    if wait_each:
        sessions += ", each waits for its documents"
    row = make_row(f"intake: 250 -> 3rd document.stored ({sessions})", third, extra)
    return row, failures


# ---------------------------------------------------------------------------------------------
# the stack


async def seed(nats_url: str) -> int:
    import nats

    from postroom_runtime.tenants import load_seed, seed_tenants

    nc = await nats.connect(nats_url)
    try:
        return await seed_tenants(nc.jetstream(), load_seed(TENANTS_FILE))
    finally:
        await nc.close()


def start_services(
    nats_url: str, workdir: Path, concurrency: int, log_level: str
) -> tuple[list[Any], int]:
    """smtp-ingress and attachment-extractor (not started yet) and the SMTP port."""
    from postroom_testing import ServiceProcess, free_port

    smtp_port, ingress_http, extractor_http = free_port(), free_port(), free_port()
    common = {
        "NATS_URL": nats_url,
        "BLOB_BACKEND": "nats",
        "HTTP_HOST": HOST,
        "LOG_LEVEL": log_level,
        "OTEL_EXPORTER_OTLP_ENDPOINT": "",
    }
    ingress = ServiceProcess(
        "postroom-smtp-ingress",
        name="smtp-ingress",
        env={
            **common,
            "OTEL_SERVICE_NAME": "smtp-ingress",
            "SMTP_HOST": HOST,
            "SMTP_PORT": str(smtp_port),
            "HTTP_PORT": str(ingress_http),
            "SMTP_HOSTNAME": "ingress.bench.local",
            "SMTP_MAX_CONNECTIONS_PER_IP": str(concurrency + 10),
            "DATABASE_URL": f"sqlite+aiosqlite:///{workdir / 'smtp_ingress.db'}",
        },
        ready_url=f"http://{HOST}:{ingress_http}/health/ready",
        log_path=workdir / "smtp-ingress.log",
        cwd=workdir,
    )
    extractor = ServiceProcess(
        "postroom-attachment-extractor",
        name="attachment-extractor",
        env={
            **common,
            "OTEL_SERVICE_NAME": "attachment-extractor",
            "HTTP_PORT": str(extractor_http),
            "DATABASE_URL": f"sqlite+aiosqlite:///{workdir / 'attachment_extractor.db'}",
        },
        ready_url=f"http://{HOST}:{extractor_http}/health/ready",
        log_path=workdir / "attachment-extractor.log",
        cwd=workdir,
    )
    return [ingress, extractor], smtp_port


# ---------------------------------------------------------------------------------------------
# report


def _version(argv: list[str]) -> str:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)
        return (out.stdout or out.stderr).strip().splitlines()[0]
    except (OSError, IndexError, subprocess.SubprocessError):
        return "unknown"


def machine_info() -> dict[str, Any]:
    from postroom_testing.nats import nats_server_binary

    info = benchcommon.machine_info(("nats-py", "reportlab", "openpyxl", "faststream"))
    info["nats_server"] = _version([nats_server_binary(), "--version"])
    return info


def _finite(row: dict[str, Any]) -> dict[str, Any]:
    """JSON has no infinity: a latency that timed out is written as null."""
    return {k: None if isinstance(v, float) and math.isinf(v) else v for k, v in row.items()}


def _loadavg() -> str:
    try:
        return " ".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:
        return "unknown"


def print_report(rows: list[Row], machine: dict[str, Any], load: tuple[str, str]) -> None:
    def fmt(v: float) -> str:
        return "timeout" if math.isinf(v) else f"{v:.1f}"

    cols = ["scenario", "N", "p50 ms", "p95 ms", "p99 ms", "max ms", "p95 < 2000 ms"]
    table = [
        [
            r.scenario,
            str(r.n),
            fmt(r.p50_ms),
            fmt(r.p95_ms),
            fmt(r.p99_ms),
            fmt(r.max_ms),
            "yes" if r.p95_under_2s else "NO",
        ]
        for r in rows
    ]
    widths = [max(len(x) for x in col) for col in zip(cols, *table, strict=True)]
    print()
    for line in [cols, *table]:
        print(
            "  ".join(
                c.ljust(w) if i == 0 else c.rjust(w)
                for i, (c, w) in enumerate(zip(line, widths, strict=True))
            )
        )
    print()
    for r in rows:
        for key, value in r.extra.items():
            print(f"  {r.scenario.split(':')[0]} {key}: {value}")
    pk = ", ".join(f"{k} {v}" for k, v in machine["packages"].items())
    print(
        f"\nmachine: {machine['cpu_model']}, {machine['cpu_cores']} cores "
        f"({machine['cpu_usable']} usable), {machine['python']}, {machine['platform']}; "
        f"{machine['nats_server']}; {pk}; load average before {load[0]}, after {load[1]}"
    )


# ---------------------------------------------------------------------------------------------
# main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--messages", type=int, default=200, help="measured mails (default 200)")
    p.add_argument("--concurrency", type=int, default=1, help="parallel SMTP sessions (default 1)")
    p.add_argument(
        "--wait-each",
        action="store_true",
        help="each session waits for a mail's three documents before it sends the "
        "next (default: sessions send back to back)",
    )
    p.add_argument(
        "--warmup", type=int, default=5, help="unmeasured mails first, each waited for (default 5)"
    )
    p.add_argument(
        "--floor-messages", type=int, default=None, help="floor publishes (default: --messages)"
    )
    p.add_argument(
        "--max-seconds", type=float, default=300.0, help="bound on each phase (default 300)"
    )
    p.add_argument(
        "--log-level",
        default="WARNING",
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="LOG_LEVEL of the services (default WARNING)",
    )
    p.add_argument("--json-out", type=Path)
    p.add_argument("--keep", action="store_true", help="keep the work dir (logs, stores)")
    args = p.parse_args(argv)
    if not 1 <= args.messages <= 10_000:
        p.error("--messages must be between 1 and 10000")
    if not 1 <= args.concurrency <= 50:
        p.error("--concurrency must be between 1 and 50")
    if not 0 <= args.warmup <= 100:
        p.error("--warmup must be between 0 and 100")
    if args.floor_messages is None:
        args.floor_messages = args.messages
    if not 1 <= args.floor_messages <= 100_000:
        p.error("--floor-messages must be between 1 and 100000")
    if not 1 <= args.max_seconds <= 3600:
        p.error("--max-seconds must be between 1 and 3600")
    return args


def _step(text: str) -> Callable[[], None]:
    t0 = time.perf_counter()
    print(f"{text} ...", end=" ", flush=True)
    return lambda: print(f"{time.perf_counter() - t0:.1f} s", flush=True)


async def amain(args: argparse.Namespace) -> int:
    from postroom_testing import NatsServer

    machine = machine_info()
    load_before = _loadavg()
    workdir = Path(tempfile.mkdtemp(prefix="bench-intake-"))
    run_id = uuid.uuid4().hex[:12]
    print(
        f"bench_intake_latency: {args.messages} purchase orders (PDF + XLSX + CSV) over "
        f"{args.concurrency} SMTP session(s), +{args.warmup} warm-up; floor: "
        f"{args.floor_messages} JetStream publishes; work dir {workdir}",
        flush=True,
    )
    rows: list[Row] = []
    failures: list[str] = []
    nats_server = NatsServer(workdir / "nats")  # sync_interval: always
    services: list[Any] = []
    try:
        done = _step("building mails")
        total = args.warmup + args.messages
        built = await asyncio.to_thread(lambda: [build_mail(i, run_id) for i in range(total)])
        done()
        warmup, mails = built[: args.warmup], built[args.warmup :]

        done = _step("starting nats-server, seeding tenants, starting the services")
        await nats_server.astart()
        await seed(nats_server.url)
        services, smtp_port = start_services(
            nats_server.url, workdir, args.concurrency, args.log_level
        )
        for svc in services:
            await svc.astart(timeout=60)
        done()

        done = _step("floor: JetStream publish -> core subscriber")
        rows.append(await measure_floor(nats_server.url, args.floor_messages, 20, args.max_seconds))
        done()

        done = _step(f"intake: {args.messages} mails over {args.concurrency} session(s)")
        row, intake_failures = await measure_intake(
            nats_server.url,
            smtp_port,
            mails,
            warmup,
            args.concurrency,
            args.max_seconds,
            args.wait_each,
        )
        rows.append(row)
        failures += intake_failures
        done()
        for svc in services:
            if not svc.is_running:
                failures.append(f"{svc.name} exited with code {svc.returncode}")
    except Exception as err:
        failures.append(f"{type(err).__name__}: {err}")
    finally:
        for svc in reversed(services):
            await svc.astop(timeout=15)
        await nats_server.astop(timeout=15)
        if args.keep or failures:
            print(f"work dir kept: {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    load = (load_before, _loadavg())
    if rows:
        print_report(rows, machine, load)
    if args.json_out:
        args.json_out.write_text(
            json.dumps(
                {
                    "machine": machine,
                    "load_average": {"before": load[0], "after": load[1]},
                    "config": {k: v for k, v in vars(args).items() if k != "json_out"},
                    "rows": [_finite(asdict(r)) for r in rows],
                    "failures": failures,
                },
                indent=2,
                default=str,
            )
            + "\n"
        )
    for f in failures:
        print(f"FAILED {f}", file=sys.stderr)
    return 1 if failures else 0


def main(argv: list[str] | None = None) -> int:
    return asyncio.run(amain(parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
