#!/usr/bin/env python3
"""Console benchmark: time to first byte of the mail list and of a mail detail with 100,000
mails in the console's store (SQLite and PostgreSQL), the projection's throughput, and the
WebSocket fan-out to 100 clients, each side by side with a baseline measured in the same run.

How the mails get in: the script starts a nats-server (``sync_interval: always``) and
publishes real event sequences on POSTROOM_EVENTS as the services publish them (same
subjects, headers, ``traceparent`` on mail.received): per mail mail.received,
mail.authenticated, mail.parsed, mail.classified; every ``--full-every``-th mail the whole
journey (three document.stored, delivery.requested, delivery.sent too). The mails spread over
30 days, three tenants, eight labels. Then, per store, ``postroom-console`` starts as a process
(uvicorn, the console's own projector) on an empty store and projects the stream from the
start; the script waits until it has caught up.

- **projection**: events/s from the first applied event until the position reaches the
  stream's last sequence, and the console's CPU per event. Baseline: the same stream read by a
  bare ordered consumer in this process (nats-py, nothing applied): the reading ceiling.
- **TTFB**: requests over HTTP/1.1 keep-alive with the admin key; time from writing the
  request to the first byte of the answer (and the whole answer). Rounds interleave every
  target (one request each, shuffled), so the machine's load hits them alike. Baselines:
  ``/health`` (uvicorn and FastAPI, no store) and ``/api/v1/session`` (the key's lookup, one
  query). Targets: first page (50 newest), a filtered page (tenant + label), a deep page (the
  cursor 50,000 mails down, got by paging with the API), a subject search that matches one
  mail in eight, one that matches one mail (served by the trigram index), the sender filter
  for one mail's From, for one sender of 997 and for nearly every mail (served like the
  subject since migration 0004), and the detail of a mail with the whole journey (nine
  timeline rows).
- **sender query, before and after**: the rare sender's first page as a query on the store
  from this process (no HTTP), the scan the list ran before migration 0004 (baseline) and the
  indexed filter the API builds now, interleaved in the same rounds.
- **WebSocket fan-out**: ``--ws-clients`` clients on ``/api/v1/ws`` (live, no ``since``;
  publishing starts once every client has its ``hello``); ``--ws-events`` events published
  one at a time every ``--ws-interval`` seconds; latency from just before the publish to
  the receipt at each client (p50/p95/max over every client and event, and p95 of "the last
  client got it"). Every client must receive every event
  exactly once, in stream order, or the run fails. Baseline: the same with one client.

    uv run --frozen --no-sync python scripts/bench_console.py              # 100,000 mails
    uv run --frozen --no-sync python scripts/bench_console.py --mails 5000 --stores sqlite
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import secrets
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import benchcommon
from benchcommon import cpu_seconds, loadavg, percentile

from postroom_contracts import (
    EVENTS_STREAM,
    BlobRef,
    DeliveryRequested,
    DeliverySent,
    DkimVerdict,
    DmarcVerdict,
    DocumentRef,
    DocumentStored,
    Event,
    MailAuthenticated,
    MailClassified,
    MailParsed,
    MailReceived,
    SpfVerdict,
    derive_event_id,
)

HOST = "127.0.0.1"
ADMIN_KEY = "pr_benchadmin01_" + "B" * 32
DEFAULT_PG = "postgresql://postgres@127.0.0.1:5432/postgres"
LABELS = ("meeting", "promotion", "intro", "voicemail", "order", "support", "spam", "unknown")
TENANTS = (("acme", 5), ("globex", 3), ("initech", 2))  # weights
SUBJECTS = {
    "meeting": "Meeting on {day} about the {thing}",
    "promotion": "Spring sale: {pct}% off every {thing}",
    "intro": "Introducing {name} from {company}",
    "voicemail": "Voice Message from {name} ({phone})",
    "order": "Purchase order PO-{n:06d}",
    "support": "Problem with my invoice {n}",
    "spam": "You have won a {thing} prize",
    "unknown": "Re: {thing} notes",
}
WORDS = {
    "day": ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday"),
    "thing": ("roadmap", "budget", "warehouse", "contract", "laptop", "printer", "garden"),
    "name": ("Robert Miller", "Anna Schmidt", "Claire Dubois", "Sam Lee", "Olga Petrova"),
    "company": ("Contoso", "Fabrikam", "Northwind", "Tailspin"),
}
COMMON_QUERY = "invoice"  # every support mail: one in eight
RARE_SENDER = "Claims.Desk@Rare-Sender.example"  # one mail's From (its envelope: bounces@…)
RARE_SENDER_QUERY = "claims.desk@rare"
COMMON_SENDER_QUERY = "someone42@"  # one mail in 997
FAKE_SHA = "0" * 64


# ---------------------------------------------------------------------------------------------
# the corpus: real contract events, as the services publish them


@dataclass
class Corpus:
    mails: int
    full_every: int
    start: datetime
    span: timedelta = timedelta(days=30)
    full_keys: list[str] = field(default_factory=list)

    def key(self, i: int) -> str:
        return f"bench{i:08d}"

    def label(self, i: int) -> str:
        return LABELS[i % len(LABELS)]

    def tenant(self, i: int) -> str:
        r = (i * 7919) % 10
        for name, weight in TENANTS:
            if r < weight:
                return name
            r -= weight
        return TENANTS[0][0]

    def rare_sender_index(self) -> int:
        return self.mails * 2 // 3 + 1

    def senders(self, i: int) -> tuple[str, str]:
        """(From header, envelope sender) of mail ``i``: one of 997 addresses, one mail from
        ``RARE_SENDER``."""
        if i == self.rare_sender_index():
            return RARE_SENDER, "bounces@rare-sender.example"
        sender = f"someone{i % 997}@sender.example"
        return sender, sender

    def subject(self, i: int) -> str:
        rnd = random.Random(i)
        return SUBJECTS[self.label(i)].format(
            n=i, day=rnd.choice(WORDS["day"]), thing=rnd.choice(WORDS["thing"]),
            name=rnd.choice(WORDS["name"]), company=rnd.choice(WORDS["company"]),
            pct=rnd.randint(10, 70), phone=f"555{rnd.randint(1000, 9999)}")

    def events(self, i: int, at: datetime | None = None) -> list[tuple[Event, dict[str, str]]]:
        """Mail ``i``'s events in the order the services publish them (with their extra
        headers: the traceparent of mail.received)."""
        key, tenant, label = self.key(i), self.tenant(i), self.label(i)
        at = at or self.start + self.span * (i / max(1, self.mails))
        message_id = f"<{key}@sender.example>"
        sender, envelope_sender = self.senders(i)
        raw = BlobRef(bucket="postroom-blobs", key=f"sha256/{FAKE_SHA}", size=4096 + i % 2048,
                      sha256=FAKE_SHA, content_type="message/rfc822")
        full = self.full_every > 0 and i % self.full_every == 0
        received = MailReceived(
            event_id=derive_event_id(key, "mail.received"), occurred_at=at, tenant=tenant,
            mail_key=key, message_id=message_id, mailbox="orders",
            envelope_from=envelope_sender,
            recipients=[f"orders@{tenant}.example"], header_from=sender,
            subject=self.subject(i), size=raw.size, raw=raw)
        authenticated = MailAuthenticated.caused_by(
            received, occurred_at=at + timedelta(milliseconds=30), message_id=message_id,
            authserv_id="mx.postroom.bench",
            spf=SpfVerdict(result="pass", identity="mailfrom", domain="sender.example"),
            dkim=[DkimVerdict(result="pass", domain="sender.example", selector="s1")],
            dmarc=DmarcVerdict(result="pass", header_from="sender.example"),
            authentication_results="mx.postroom.bench; spf=pass; dkim=pass; dmarc=pass")
        documents: list[DocumentStored] = []
        if full:
            for n, (name, ctype) in enumerate((("po.pdf", "application/pdf"),
                                               ("po.xlsx", "application/vnd.ms-excel"),
                                               ("po.csv", "text/csv"))):
                ref = BlobRef(bucket="postroom-blobs", key=f"sha256/{FAKE_SHA}", size=2000,
                              sha256=FAKE_SHA, content_type=ctype)
                documents.append(DocumentStored.caused_by(
                    received, str(n), occurred_at=at + timedelta(milliseconds=40 + n),
                    document_id=derive_event_id(key, "document", str(n)), index=n,
                    filename=name, declared_content_type=ctype, sniffed_content_type=ctype,
                    size=2000, sha256=FAKE_SHA, blob=ref, supported=True))
        parsed = MailParsed.caused_by(
            received, occurred_at=at + timedelta(milliseconds=60), message_id=message_id,
            subject=received.subject, header_from=sender,
            body_text=f"Hello,\n\nthis is mail {i}.\n", has_html=False,
            document_ids=[d.document_id for d in documents],
            documents=[DocumentRef(document_id=d.document_id, index=d.index,
                                   filename=d.filename, content_type=d.sniffed_content_type,
                                   size=d.size, sha256=d.sha256, blob=d.blob)
                       for d in documents],
            raw=raw)
        scores = {name: (0.9 if name == label else 0.0125) for name in LABELS}
        classified = MailClassified.caused_by(
            parsed, occurred_at=at + timedelta(milliseconds=90), email_id=message_id,
            classification=label, confidence=0.9,
            processed_at=at + timedelta(milliseconds=90), processor_id="classifier-bench",
            processing_time_ms=3.1, scores=scores, model_version="logreg-tfidf-bench")
        out: list[Event] = [received, authenticated, *documents, parsed, classified]
        if full:
            delivery_id = f"fwd-{key}"
            requested = DeliveryRequested.caused_by(
                parsed, occurred_at=at + timedelta(milliseconds=120), delivery_id=delivery_id,
                kind="forward", to=[f"alice@{tenant}.example"], original=raw)
            out += [requested, DeliverySent.caused_by(
                requested, occurred_at=at + timedelta(milliseconds=150),
                delivery_id=delivery_id, kind="forward", message_id=f"<fwd-{key}@bench>",
                to=[f"alice@{tenant}.example"], relay="127.0.0.1:2525",
                smtp_response="250 OK", attempts=1)]
        trace = {"traceparent": f"00-{secrets.token_hex(16)}-{secrets.token_hex(8)}-01"}
        return [(e, trace if isinstance(e, MailReceived) else {}) for e in out]


async def publish_corpus(js: Any, corpus: Corpus, window: int = 512) -> tuple[int, float]:
    """Every mail's events on POSTROOM_EVENTS, ``window`` acknowledged publishes in flight;
    returns (events, seconds)."""
    from postroom_runtime import event_headers

    slots = asyncio.Semaphore(window)
    pending: set[asyncio.Task[Any]] = set()
    count = 0
    started = time.perf_counter()

    async def one(subject: str, data: bytes, headers: dict[str, str]) -> None:
        try:
            await js.publish(subject, data, headers=headers, timeout=30)
        finally:
            slots.release()

    # one connection: the server stores publishes in the order they were sent, so a mail's
    # events keep their order with many publishes in flight
    for i in range(corpus.mails):
        if i % corpus.full_every == 0:
            corpus.full_keys.append(corpus.key(i))
        for event, extra in corpus.events(i):
            await slots.acquire()
            task = asyncio.create_task(one(event.nats_subject, event.model_dump_json().encode(),
                                           event_headers(event, extra)))
            pending.add(task)
            task.add_done_callback(pending.discard)
            count += 1
        if i and i % 20000 == 0:
            print(f"  published {i:,} mails ({count:,} events, "
                  f"{count / (time.perf_counter() - started):,.0f} events/s)", flush=True)
    await asyncio.gather(*pending)
    return count, time.perf_counter() - started


async def read_stream_baseline(js: Any, last: int) -> float:
    """Events/s of a bare ordered consumer reading the whole stream (nothing applied)."""
    from nats.js import api

    from postroom_contracts import EVENTS

    config = api.ConsumerConfig(filter_subjects=list(EVENTS.subjects),
                                deliver_policy=api.DeliverPolicy.ALL)
    sub = await js.subscribe("", stream=EVENTS_STREAM, config=config, ordered_consumer=True,
                             idle_heartbeat=2.0)
    started = time.perf_counter()
    seen = 0
    seq = 0
    try:
        while seq < last:
            msg = await sub.next_msg(timeout=30)
            seq = msg.metadata.sequence.stream
            json.loads(msg.data)  # the projector decodes each payload too
            seen += 1
    finally:
        await sub.unsubscribe()
    return seen / (time.perf_counter() - started)


# ---------------------------------------------------------------------------------------------
# HTTP: raw keep-alive client, time to first byte


class Http:
    def __init__(self, port: int, key: str) -> None:
        self.port = port
        self.key = key
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def _connect(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(HOST, self.port)

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            with contextlib.suppress(Exception):
                await self.writer.wait_closed()
        self.reader = self.writer = None

    async def get(self, path: str) -> tuple[int, float, float, bytes]:
        """(status, seconds to the first byte, seconds to the whole answer, body)."""
        if self.writer is None:
            await self._connect()
        assert self.reader is not None and self.writer is not None
        request = (f"GET {path} HTTP/1.1\r\nHost: {HOST}:{self.port}\r\n"
                   f"Authorization: Bearer {self.key}\r\nAccept: application/json\r\n\r\n")
        started = time.perf_counter()
        self.writer.write(request.encode())
        await self.writer.drain()
        first = await self.reader.readexactly(1)
        ttfb = time.perf_counter() - started
        head = first + await self.reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {k.strip().lower(): v.strip() for k, _, v in
                   (line.partition(":") for line in lines[1:] if line)}
        if "content-length" in headers:
            body = await self.reader.readexactly(int(headers["content-length"]))
        elif headers.get("transfer-encoding", "").lower() == "chunked":
            body = b""
            while True:
                size = int((await self.reader.readuntil(b"\r\n")).split(b";")[0], 16)
                chunk = await self.reader.readexactly(size + 2)
                if size == 0:
                    break
                body += chunk[:-2]
        else:
            raise RuntimeError(f"{path}: answer without length")
        total = time.perf_counter() - started
        if headers.get("connection", "").lower() == "close":
            await self.close()
        return status, ttfb, total, body

    async def json(self, path: str) -> Any:
        status, _, _, body = await self.get(path)
        if status != 200:
            raise RuntimeError(f"GET {path}: {status} {body[:300]!r}")
        return json.loads(body)


@dataclass
class Target:
    name: str
    paths: list[str]  # rotated through
    baseline: bool = False
    expect_items: bool = False
    expect_keys: list[str] | None = None  # exactly these mails
    ttfb: list[float] = field(default_factory=list)
    total: list[float] = field(default_factory=list)
    size: int = 0


async def deep_cursor(http: Http, depth: int) -> str:
    """The list's cursor ``depth`` mails down, by paging with the API (500 a page)."""
    cursor = None
    seen = 0
    while seen < depth:
        limit = min(500, depth - seen)
        path = f"/api/v1/mails?limit={limit}" + (f"&cursor={cursor}" if cursor else "")
        page = await http.json(path)
        seen += len(page["items"])
        cursor = page["next_cursor"]
        if cursor is None:
            raise RuntimeError(f"the list ended after {seen} mails")
    return str(cursor)


async def measure_ttfb(port: int, corpus: Corpus, requests: int, warmup: int) -> list[Target]:
    http = Http(port, ADMIN_KEY)
    try:
        cursor = await deep_cursor(http, min(50_000, corpus.mails // 2))
        details = [f"/api/v1/mails/{k}" for k in corpus.full_keys[-50:]]
        rare = corpus.subject(4 + 8 * (corpus.mails // 3 // 8)).rsplit(" ", 1)[-1]  # one order
        targets = [
            Target("/health (baseline)", ["/health"], baseline=True),
            Target("/api/v1/session (baseline)", ["/api/v1/session"], baseline=True),
            Target("list: first page", ["/api/v1/mails?limit=50"], expect_items=True),
            Target("list: tenant+label", ["/api/v1/mails?tenant=globex&label=support&limit=50"],
                   expect_items=True),
            Target(f"list: deep page (cursor {min(50_000, corpus.mails // 2):,} down)",
                   [f"/api/v1/mails?limit=50&cursor={cursor}"], expect_items=True),
            Target(f"list: q={COMMON_QUERY} (1 in 8)", [f"/api/v1/mails?q={COMMON_QUERY}&limit=50"],
                   expect_items=True),
            Target(f"list: q={rare} (1 mail)", [f"/api/v1/mails?q={rare}&limit=50"],
                   expect_items=True),
            Target(f"list: sender={RARE_SENDER_QUERY} (1 mail)",
                   [f"/api/v1/mails?sender={RARE_SENDER_QUERY}&limit=50"], expect_items=True,
                   expect_keys=[corpus.key(corpus.rare_sender_index())]),
            Target(f"list: sender={COMMON_SENDER_QUERY} (1 in 997)",
                   [f"/api/v1/mails?sender={COMMON_SENDER_QUERY}&limit=50"], expect_items=True),
            Target("list: sender=sender.example (every mail but one)",
                   ["/api/v1/mails?sender=sender.example&limit=50"], expect_items=True),
            Target("detail (9 timeline rows)", details),
        ]
        for t in targets:  # every answer is right before anything is timed
            body = await http.json(t.paths[0])
            if t.expect_items and not body["items"]:
                raise RuntimeError(f"{t.name}: no items")
            if t.expect_keys is not None and [
                    m["mail_key"] for m in body["items"]] != t.expect_keys:
                raise RuntimeError(f"{t.name}: not {t.expect_keys}")
            if t.name.startswith("detail") and len(body["timeline"]) != 9:
                raise RuntimeError(f"{t.name}: {len(body['timeline'])} timeline rows")
            t.size = len(json.dumps(body))
        rnd = random.Random(7)
        for r in range(warmup + requests):
            order = list(targets)
            rnd.shuffle(order)
            for t in order:
                status, ttfb, total, body = await http.get(t.paths[r % len(t.paths)])
                if status != 200:
                    raise RuntimeError(f"{t.name}: {status} {body[:200]!r}")
                if r >= warmup:
                    t.ttfb.append(ttfb)
                    t.total.append(total)
        return targets
    finally:
        await http.close()


async def measure_sender_queries(database_url: str, corpus: Corpus, requests: int,
                                 warmup: int) -> list[Target]:
    """The rare sender's first page as a query on the console's store, from this process:
    the scan the list ran before migration 0004 (``lower(header_from) LIKE '%…%' OR
    lower(envelope_from) LIKE '%…%'``, the baseline) against the filter the API builds now
    (``Api.search_filter``: on SQLite the FTS5 probe and the query through its rowids, on
    PostgreSQL the pattern written into the statement for the planner), interleaved."""
    from types import SimpleNamespace

    from sqlalchemy import func, or_, select

    from postroom_console import store as tables
    from postroom_console.api import SENDER_SEARCH, Api
    from postroom_runtime.store import Store

    db = Store(database_url)
    api = Api.__new__(Api)
    api.runtime = SimpleNamespace(store=db)  # type: ignore[assignment]
    m = tables.mails
    order = (m.c.received_at.desc(), m.c.mail_key.desc())
    needle = RARE_SENDER_QUERY.lower()

    async def scan() -> list[str]:
        query = select(m.c.mail_key).where(or_(
            func.lower(m.c.header_from).contains(needle, autoescape=True),
            func.lower(m.c.envelope_from).contains(needle, autoescape=True)))
        async with db.sessions() as session:
            return list((await session.execute(query.order_by(*order).limit(51))).scalars())

    async def indexed() -> list[str]:
        query = select(m.c.mail_key).where(
            await api.search_filter(SENDER_SEARCH, RARE_SENDER_QUERY))
        async with db.sessions() as session:
            return list((await session.execute(query.order_by(*order).limit(51))).scalars())

    targets = {scan: Target(f"query: sender={RARE_SENDER_QUERY}, scan (before 0004)", []),
               indexed: Target(f"query: sender={RARE_SENDER_QUERY}, index (now)", [])}
    try:
        want = [corpus.key(corpus.rare_sender_index())]
        for run, t in targets.items():
            if await run() != want:
                raise RuntimeError(f"{t.name}: not {want}")
        rnd = random.Random(11)
        for r in range(warmup + requests):
            runs = list(targets)
            rnd.shuffle(runs)
            for run in runs:
                started = time.perf_counter()
                await run()
                if r >= warmup:
                    targets[run].ttfb.append(time.perf_counter() - started)
        for t in targets.values():
            t.total = t.ttfb
        return list(targets.values())
    finally:
        await db.close()


# ---------------------------------------------------------------------------------------------
# WebSocket fan-out


@dataclass
class FanOut:
    clients: int
    events: int
    latencies_ms: list[float]
    last_client_ms: list[float]  # per event: until the last client had it
    problems: list[str]


async def fan_out(port: int, nats_url: str, corpus: Corpus, clients: int, events: int,
                  interval: float, base_index: int) -> FanOut:
    import nats
    import websockets

    from postroom_runtime import event_headers

    received: list[list[tuple[int, float]]] = [[] for _ in range(clients)]
    ready = asyncio.Event()
    connected = 0
    expected_last = -1

    async def client(n: int) -> None:
        nonlocal connected
        url = f"ws://{HOST}:{port}/api/v1/ws?key={ADMIN_KEY}"
        async with websockets.connect(url, max_queue=None, ping_interval=None) as ws:
            async for raw in ws:
                t = time.perf_counter()
                message = json.loads(raw)
                if message.get("type") == "hello":  # registered: every later event comes
                    connected += 1
                    if connected == clients:
                        ready.set()
                    continue
                if message.get("type") != "email_event":
                    received[n].append((-1, t))
                    continue
                received[n].append((int(message["sequence"]), t))
                if message["sequence"] == expected_last:
                    return

    tasks = [asyncio.create_task(client(n)) for n in range(clients)]
    await asyncio.wait_for(ready.wait(), 60)
    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    published: dict[int, float] = {}
    order: list[int] = []
    try:
        i = base_index
        while len(order) < events:
            mail_events = corpus.events(i, at=datetime.now(UTC))[:2]  # received, authenticated
            i += 1
            for event, extra in mail_events:
                if len(order) == events:
                    break
                t = time.perf_counter()
                ack = await js.publish(event.nats_subject, event.model_dump_json().encode(),
                                       headers=event_headers(event, extra))
                published[int(ack.seq)] = t
                order.append(int(ack.seq))
                await asyncio.sleep(interval)
        expected_last = order[-1]
        # a client may already have seen the last before expected_last was set
        for n, got in enumerate(received):
            if got and got[-1][0] == expected_last and not tasks[n].done():
                tasks[n].cancel()
        _, pending = await asyncio.wait(tasks, timeout=60)
        for task in pending:
            task.cancel()
        with contextlib.suppress(Exception):
            await asyncio.gather(*tasks, return_exceptions=True)
    finally:
        await nc.close()
    problems: list[str] = []
    latencies: list[float] = []
    per_event: dict[int, float] = {}
    for n, got in enumerate(received):
        seqs = [s for s, _ in got]
        if seqs != order:
            missing = len(set(order) - set(seqs))
            dup = len(seqs) - len(set(seqs))
            problems.append(f"client {n}: {len(seqs)} messages for {len(order)} events "
                            f"({missing} missing, {dup} repeated, in order "
                            f"{seqs == sorted(seqs)})")
            continue
        for s, t in got:
            ms = (t - published[s]) * 1000
            latencies.append(ms)
            per_event[s] = max(per_event.get(s, 0.0), ms)
    return FanOut(clients, len(order), sorted(latencies), sorted(per_event.values()), problems)


# ---------------------------------------------------------------------------------------------
# one store


@dataclass
class StoreResult:
    store: str
    events: int
    projection_seconds: float
    projection_rate: float
    cpu_ms_per_event: float
    targets: list[Target]
    fanouts: list[FanOut]
    load: str


async def projection_state(http: Http) -> dict[str, Any]:
    return dict(await http.json("/api/v1/admin/projection"))


async def run_store(args: argparse.Namespace, store: str, nats_url: str, corpus: Corpus,
                    stream_last: int, workdir: Path) -> StoreResult:
    from postroom_testing import ServiceProcess, free_port

    database = None
    if store == "pg":
        from postroom_testing.postgres import create_database, unique_database_name

        database = unique_database_name("bench_console")
        await create_database(args.postgres_url, database)
        host = args.postgres_url.split("://", 1)[1].rsplit("/", 1)[0]
        database_url = f"postgresql+asyncpg://{host}/{database}"
    else:
        database_url = f"sqlite+aiosqlite:///{workdir / 'console.db'}"
    port = free_port()
    console = ServiceProcess(
        [sys.executable, "-m", "postroom_console"], name=f"console-{store}",
        env={"NATS_URL": nats_url, "HTTP_HOST": HOST, "HTTP_PORT": str(port),
             "DATABASE_URL": database_url, "CONSOLE_ADMIN_KEY": ADMIN_KEY,
             "BLOB_BACKEND": "nats", "LOG_LEVEL": args.log_level,
             "OTEL_EXPORTER_OTLP_ENDPOINT": "", "PYTHONUNBUFFERED": "1"},
        ready_url=f"http://{HOST}:{port}/health", log_path=workdir / f"console-{store}.log")
    http = Http(port, ADMIN_KEY)
    try:
        await console.astart(timeout=120)
        cpu0 = cpu_seconds([console.pid])
        first_at = None
        first_pos = 0
        started = time.perf_counter()
        last_print = started
        while True:
            state = await projection_state(http)
            now = time.perf_counter()
            pos = int(state["position"])
            if first_at is None and pos > 0:
                first_at, first_pos = now, pos
            if pos >= stream_last:
                break
            if now - last_print > 15:
                print(f"  projected {pos:,} of {stream_last:,} events", flush=True)
                last_print = now
            if now - started > args.max_seconds:
                raise RuntimeError(f"projection at {pos} of {stream_last} after "
                                   f"{args.max_seconds:.0f} s")
            await asyncio.sleep(0.25)
        done_at = time.perf_counter()
        cpu1 = cpu_seconds([console.pid])
        assert first_at is not None
        seconds = done_at - first_at
        rate = (stream_last - first_pos) / seconds if seconds > 0 else float("nan")
        print(f"  caught up: {stream_last:,} events, {rate:,.0f} events/s "
              f"({(cpu1 - cpu0) * 1000 / stream_last:.3f} ms CPU per event)", flush=True)
        if state.get("failures"):
            raise RuntimeError(f"projection failures: {state['failures'][:3]}")
        targets = await measure_ttfb(port, corpus, args.requests, args.warmup)
        targets += await measure_sender_queries(database_url, corpus, args.requests,
                                                args.warmup)
        fanouts = []
        base = corpus.mails + (0 if store == "sqlite" else 100_000)
        for n, clients in enumerate((1, args.ws_clients)):
            fo = await fan_out(port, nats_url, corpus, clients, args.ws_events,
                               args.ws_interval, base + n * 10_000)
            fanouts.append(fo)
            if fo.problems:
                raise RuntimeError(f"fan-out to {clients}: {fo.problems[:3]}")
        return StoreResult(store, stream_last, seconds, rate,
                           (cpu1 - cpu0) * 1000 / stream_last, targets, fanouts, loadavg())
    finally:
        await http.close()
        await console.astop(timeout=30)
        if database is not None and args.keep_database:
            print(f"  database kept: {database_url}", flush=True)
        elif database is not None:
            from postroom_testing.postgres import drop_database

            with contextlib.suppress(Exception):
                await drop_database(args.postgres_url, database)


# ---------------------------------------------------------------------------------------------
# report


def ms(values: list[float], p: float) -> float:
    return percentile(sorted(values), p) * 1000


def print_ttfb(results: list[StoreResult]) -> None:
    print("\nTTFB over HTTP/1.1 keep-alive (ms; p50 / p95; whole answer p95; answer size)")
    for r in results:
        print(f"\n{'SQLite' if r.store == 'sqlite' else 'PostgreSQL'} "
              f"(load average after: {r.load})")
        width = max(len(t.name) for t in r.targets)
        print(f"  {'target':<{width}}  {'TTFB p50':>9}  {'TTFB p95':>9}  {'total p95':>9}  "
              f"{'bytes':>7}  {'n':>5}")
        for t in r.targets:
            print(f"  {t.name:<{width}}  {ms(t.ttfb, 50):9.2f}  {ms(t.ttfb, 95):9.2f}  "
                  f"{ms(t.total, 95):9.2f}  {t.size:7d}  {len(t.ttfb):5d}")


def print_fanout(results: list[StoreResult]) -> None:
    print("\nWebSocket fan-out: publish -> receipt at each client (ms)")
    print(f"  {'store':<10} {'clients':>7} {'events':>6} {'p50':>8} {'p95':>8} {'max':>8} "
          f"{'last client p95':>15}  every client every event once, in order")
    for r in results:
        for f in r.fanouts:
            lat = f.latencies_ms
            print(f"  {r.store:<10} {f.clients:>7} {f.events:>6} {percentile(lat, 50):8.1f} "
                  f"{percentile(lat, 95):8.1f} {lat[-1]:8.1f} "
                  f"{percentile(f.last_client_ms, 95):15.1f}  "
                  f"{'yes' if not f.problems else 'NO'}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--mails", type=int, default=100_000)
    p.add_argument("--full-every", type=int, default=100,
                   help="every n-th mail has the whole journey (9 events; default 100)")
    p.add_argument("--stores", default="sqlite,pg", help="comma-separated sqlite,pg")
    p.add_argument("--postgres-url", default=DEFAULT_PG)
    p.add_argument("--requests", type=int, default=200, help="timed requests per target")
    p.add_argument("--warmup", type=int, default=10, help="untimed rounds first")
    p.add_argument("--ws-clients", type=int, default=100)
    p.add_argument("--ws-events", type=int, default=200)
    p.add_argument("--ws-interval", type=float, default=0.05,
                   help="seconds between two published events (default 0.05)")
    p.add_argument("--max-seconds", type=float, default=1800.0,
                   help="bound on the projection's catch-up (default 1800)")
    p.add_argument("--log-level", default="WARNING")
    p.add_argument("--json-out", type=Path)
    p.add_argument("--keep", action="store_true", help="keep the work dir (SQLite store)")
    p.add_argument("--keep-database", action="store_true",
                   help="keep the PostgreSQL database (for EXPLAIN; drop it yourself)")
    args = p.parse_args(argv)
    args.store_list = [s.strip() for s in args.stores.split(",") if s.strip()]
    if any(s not in ("sqlite", "pg") for s in args.store_list):
        p.error("--stores: sqlite, pg")
    return args


async def amain(args: argparse.Namespace) -> int:
    import nats

    from postroom_runtime import provision_streams
    from postroom_testing import NatsServer

    machine = benchcommon.machine_info(("fastapi", "uvicorn", "sqlalchemy", "asyncpg",
                                        "aiosqlite", "nats-py", "websockets"))
    load_before = loadavg()
    stores = list(args.store_list)
    if "pg" in stores:
        from bench_drain import postgres_answers

        why = await postgres_answers(args.postgres_url)
        if why is not None:
            stores.remove("pg")
            print(f"PostgreSQL skipped: no PostgreSQL at {args.postgres_url} ({why})")
    print(f"bench_console: {args.mails:,} mails (every {args.full_every}th with the whole "
          f"journey), stores {', '.join(stores)}, {args.requests} requests per target, "
          f"fan-out to {args.ws_clients} clients x {args.ws_events} events; load average "
          f"{load_before}", flush=True)
    workdir = Path(tempfile.mkdtemp(prefix="bench-console-"))
    # the corpus goes in without an fsync per write (a fill, not a measurement); everything
    # measured runs on the same store with ``sync_interval: always``, as in production
    server = NatsServer(workdir / "nats", sync_always=False)
    await server.astart()
    results: list[StoreResult] = []
    failed = False
    nc = None
    try:
        nc = await nats.connect(server.url)
        js = nc.jetstream()
        await provision_streams(js)
        corpus = Corpus(args.mails, args.full_every,
                        start=datetime.now(UTC) - timedelta(days=30, minutes=5))
        events, seconds = await publish_corpus(js, corpus)
        stream_last = int((await js.stream_info(EVENTS_STREAM)).state.last_seq)
        print(f"published {events:,} events of {args.mails:,} mails in {seconds:.1f} s "
              f"({events / seconds:,.0f} events/s, acknowledged); stream last {stream_last:,}",
              flush=True)
        await nc.close()
        await server.astop()
        server = NatsServer(workdir / "nats", port=server.port, monitor_port=server.monitor_port)
        await server.astart()
        nc = await nats.connect(server.url)
        js = nc.jetstream()
        reading = await read_stream_baseline(js, stream_last)
        print(f"baseline: bare ordered consumer reads the stream at {reading:,.0f} events/s",
              flush=True)
        for store in stores:
            print(f"[{store}] console projecting from an empty store", flush=True)
            sub = workdir / store
            sub.mkdir()
            results.append(await run_store(args, store, server.url, corpus, stream_last, sub))
            stream_last = int((await js.stream_info(EVENTS_STREAM)).state.last_seq)
    except Exception as err:
        failed = True
        print(f"FAILED: {type(err).__name__}: {err}", file=sys.stderr, flush=True)
    finally:
        if nc is not None:
            await nc.close()
        await server.astop()
        if args.keep or failed:
            print(f"work dir kept: {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    if results:
        print("\nprojection (catch-up from an empty store, the console's own projector)")
        print(f"  {'store':<10} {'events':>9} {'seconds':>8} {'events/s':>9} "
              f"{'CPU ms/event':>12}   baseline (bare ordered consumer) events/s")
        for r in results:
            print(f"  {r.store:<10} {r.events:9,} {r.projection_seconds:8.1f} "
                  f"{r.projection_rate:9,.0f} {r.cpu_ms_per_event:12.3f}   {reading:,.0f}")
        print_ttfb(results)
        print_fanout(results)
    pk = ", ".join(f"{k} {v}" for k, v in machine.get("packages", {}).items())
    print(f"\nmachine: {machine['cpu_model']}, {machine['cpu_cores']} cores "
          f"({machine['cpu_usable']} usable), {machine['python']}, {machine['platform']}; {pk}; "
          f"load average before {load_before}, after {loadavg()}")
    if args.json_out and results:
        args.json_out.write_text(json.dumps({
            "machine": machine, "load_average": {"before": load_before, "after": loadavg()},
            "stream_read_baseline": reading,
            "results": [{
                "store": r.store, "events": r.events, "projection_rate": r.projection_rate,
                "cpu_ms_per_event": r.cpu_ms_per_event, "load_after": r.load,
                "ttfb_ms": {t.name: {"p50": ms(t.ttfb, 50), "p95": ms(t.ttfb, 95),
                                     "total_p95": ms(t.total, 95)} for t in r.targets},
                "fanout": [{"clients": f.clients, "events": f.events,
                            "p50": percentile(f.latencies_ms, 50),
                            "p95": percentile(f.latencies_ms, 95),
                            "max": f.latencies_ms[-1]} for f in r.fanouts],
            } for r in results]}, indent=2) + "\n")
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    return asyncio.run(amain(parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
