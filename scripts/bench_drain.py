#!/usr/bin/env python
"""Drain benchmark: attachment-extractor's mail.parsed per second, side by side with
smtp-ingress's 250s per second, measured in the same run.

For each variant and kind of mail the script starts its own nats-server (JetStream,
``sync_interval: always``, as ``postroom up`` runs it), seeds ``deploy/tenants.yaml`` into the
tenant registry, and starts ``postroom-smtp-ingress`` (SQLite store, ``BLOB_BACKEND=nats``, one
SMTP process: the embedded default) and ``postroom-attachment-extractor`` (SQLite store, the
embedded default; or a fresh PostgreSQL database, ``CONSUMER_CONCURRENCY`` and replicas as the
variant says) as real processes.  Like an outside team it subscribes with core NATS to
``postroom.mail.parsed.*``.  Then, after ``--warmup`` mails that are not counted:

* **live**: ``--messages`` mails over ``--sessions`` SMTP sessions (raw asyncio client, each
  session loops MAIL/RCPT/DATA/RSET on its connection) while the extractor runs.
  *ingest* = mails / (start of sending .. last ``250``); *drain* = mails / (first ``250`` ..
  last ``mail.parsed``); *ratio* = drain / ingest.
* **backlog**: the extractor is stopped, ``--messages`` more mails are sent (*ingest* with the
  extractor stopped), then the extractor is started and drains the pre-loaded backlog alone:
  *drain* = (mails - 1) / (first .. last ``mail.parsed``).

Kinds: ``4k``, the 4 KiB multipart order confirmation of ``bench_ingest.py`` (text and HTML,
no attachment); ``po``, a purchase order with three attachments as ``postroom send --demo``
sends it (PDF, XLSX, CSV of ``postroom_cli.demo``, ~15 KB), its PO number, and so every
attachment, distinct per mail.  Variants (``--variants``): ``<store>[-c<n>][-r<n>]`` with store
``sqlite`` or ``pg`` (a database created on ``--postgres-url`` and dropped after),
``-c`` ``CONSUMER_CONCURRENCY`` and ``-r`` the number of extractor processes (replicas).

Every mail must be answered ``250`` and get its ``mail.parsed`` (with its 0 or 3 documents), or
the run fails.  Also printed: CPU per mail of the extractor(s), smtp-ingress and nats-server
(user + system time from ``/proc``: steadier than rates on a shared machine), 250 ->
``mail.parsed`` latency in the live phase, the machine and the load average.

    uv run python scripts/bench_drain.py                      # every variant and kind
    uv run python scripts/bench_drain.py --variants sqlite --kinds 4k --repeat 3
    uv run python scripts/bench_drain.py --variants pg-c8-r2 --kinds po
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import email.policy
import json
import math
import re
import shlex
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from email.message import EmailMessage
from email.utils import formatdate
from pathlib import Path
from typing import Any

import benchcommon
from bench_ingest import RECIPIENT, SENDER, SmtpError, SmtpSession, message_factory
from benchcommon import cpu_seconds, loadavg, percentile

REPO_ROOT = Path(__file__).resolve().parents[1]
TENANTS_FILE = REPO_ROOT / "deploy" / "tenants.yaml"
HOST = "127.0.0.1"
PARSED_SUBJECT = "postroom.mail.parsed.*"
FAILED_SUBJECT = "postroom.mail.failed.*"
DEFAULT_PG = "postgresql://postgres@127.0.0.1:5432/postgres"
KINDS = ("4k", "po")
DOCUMENTS = {"4k": 0, "po": 3}
VARIANT_RE = re.compile(r"^(sqlite|pg)(?:-c(\d+))?(?:-r(\d+))?$")


# ---------------------------------------------------------------------------------------------
# the mails: make(i) -> bytes as they go over SMTP (CRLF, dot-stuffed, ending in CRLF)


def message_id_of(run_id: str, i: int) -> str:
    return f"{run_id}.{i:08d}@supplier-acme.example.net"


def four_k_mails(run_id: str) -> Callable[[int], bytes]:
    # bench_ingest's mail: Message-ID <{run_id}.{i:08d}@supplier-acme.example.net>
    return message_factory(4096, run_id)


def po_mail(run_id: str, i: int) -> bytes:
    """``postroom send --demo``'s purchase order (PDF, XLSX, CSV), with its own PO number."""
    from postroom_cli import demo

    po = f"PO-{run_id[-6:].upper()}-{i:06d}"
    demo.PO_NUMBER = po  # the demo's builders read it: every attachment differs per mail
    msg = EmailMessage()
    msg["From"] = f'"Supplier ACME Purchasing" <{SENDER}>'
    msg["To"] = RECIPIENT
    msg["Subject"] = f"Purchase order {po}"
    msg["Date"] = formatdate(localtime=False)
    msg["Message-ID"] = f"<{message_id_of(run_id, i)}>"
    msg.set_content(demo.DEMO_BODY.replace(demo.DEMO_SUBJECT.split()[-1], po))
    for att in demo.purchase_order_attachments():
        data = att.data
        if att.filename.endswith(".csv"):  # the demo's CSV has no PO number: add a column
            lines = data.decode().split("\r\n")
            data = "\r\n".join(
                [f"po_number,{lines[0]}"] + [f"{po},{ln}" for ln in lines[1:] if ln] + [""]
            ).encode()
        maintype, subtype = att.content_type.split("/", 1)
        msg.add_attachment(data, maintype=maintype, subtype=subtype, filename=att.filename)
    wire = msg.as_bytes(policy=email.policy.SMTP)
    if not wire.endswith(b"\r\n"):
        wire += b"\r\n"
    stuffed = wire.replace(b"\r\n.", b"\r\n..")
    return b"." + stuffed if stuffed.startswith(b".") else stuffed


def build_mails(kind: str, run_id: str, count: int) -> list[bytes]:
    if kind == "4k":
        make = four_k_mails(run_id)
        return [make(i) for i in range(count)]
    return [po_mail(run_id, i) for i in range(count)]


# ---------------------------------------------------------------------------------------------
# sending, and watching mail.parsed


@dataclass
class Sent:
    accepted_at: dict[int, float] = field(default_factory=dict)  # index -> time of its 250
    errors: list[str] = field(default_factory=list)


async def send_all(
    port: int, mails: list[bytes], indices: range, sessions: int, max_seconds: float
) -> tuple[Sent, float]:
    """Send ``mails[i]`` for every ``i`` in ``indices`` over ``sessions`` connections; returns
    what was accepted and the start time."""
    sent = Sent()
    todo = iter(indices)
    conns = [SmtpSession(HOST, port) for _ in range(min(sessions, len(indices)))]
    await asyncio.gather(*(c.connect() for c in conns))

    async def loop(sess: SmtpSession) -> None:
        for i in todo:  # one iterator shared by every session: each mail is sent once
            try:
                await sess.send(mails[i])
                sent.accepted_at[i] = time.perf_counter()
            except SmtpError as err:
                sent.errors.append(f"mail {i}: {err}")
            except (OSError, TimeoutError, ConnectionError) as err:
                sent.errors.append(f"mail {i}: {type(err).__name__}: {err}")
                with contextlib.suppress(Exception):
                    await sess.close()
                    await sess.connect()

    started = time.perf_counter()
    try:
        async with asyncio.timeout(max_seconds):
            await asyncio.gather(*(loop(c) for c in conns))
    finally:
        await asyncio.gather(*(c.close() for c in conns))
    return sent, started


class ParsedWatcher:
    """Core NATS on ``postroom.mail.parsed.*`` (and ``mail.failed``): the first arrival time
    of each mail's ``mail.parsed``, by Message-ID, and its number of documents."""

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id
        self.arrivals: dict[int, float] = {}
        self.documents: dict[int, int] = {}
        self.failed: list[str] = []
        self.wanted: set[int] = set()
        self.done = asyncio.Event()

    def _index(self, message_id: str) -> int | None:
        mid = message_id.strip().strip("<>")
        prefix = f"{self.run_id}."
        if not mid.startswith(prefix):
            return None
        with contextlib.suppress(ValueError):
            return int(mid[len(prefix) :].split("@", 1)[0])
        return None

    def expect(self, indices: range) -> None:
        self.wanted = set(indices) - set(self.arrivals)
        self.done.clear()
        if not self.wanted:
            self.done.set()

    async def on_parsed(self, msg: Any) -> None:
        t = time.perf_counter()
        event = json.loads(msg.data)
        i = self._index(event.get("message_id", ""))
        if i is None or i in self.arrivals:
            return
        self.arrivals[i] = t
        self.documents[i] = len(event.get("document_ids", []))
        self.wanted.discard(i)
        if not self.wanted:
            self.done.set()

    async def on_failed(self, msg: Any) -> None:
        event = json.loads(msg.data)
        self.failed.append(f"{event.get('stage')}: {str(event.get('error'))[:200]}")


# ---------------------------------------------------------------------------------------------
# the stack


@dataclass(frozen=True)
class Variant:
    name: str
    store: str  # sqlite | pg
    concurrency: int | None  # CONSUMER_CONCURRENCY (None: the service's default)
    replicas: int

    @classmethod
    def parse(cls, text: str) -> Variant:
        m = VARIANT_RE.match(text)
        if m is None:
            raise argparse.ArgumentTypeError(
                f"bad variant {text!r}: <sqlite|pg>[-c<concurrency>][-r<replicas>]"
            )
        concurrency = int(m.group(2)) if m.group(2) else None
        replicas = int(m.group(3)) if m.group(3) else 1
        if (concurrency is not None and not 1 <= concurrency <= 256) or not 1 <= replicas <= 8:
            raise argparse.ArgumentTypeError(f"bad variant {text!r}: -c 1..256, -r 1..8")
        return cls(text, m.group(1), concurrency, replicas)

    def describe(self) -> str:
        store = "SQLite" if self.store == "sqlite" else "PostgreSQL"
        conc = "" if self.concurrency is None else f", CONSUMER_CONCURRENCY={self.concurrency}"
        reps = "1 extractor" if self.replicas == 1 else f"{self.replicas} extractors"
        return f"{store}{conc}, {reps}"


async def seed(nats_url: str) -> int:
    import nats

    from postroom_runtime.tenants import load_seed, seed_tenants

    nc = await nats.connect(nats_url)
    try:
        return await seed_tenants(nc.jetstream(), load_seed(TENANTS_FILE))
    finally:
        await nc.close()


def _extra_env(pairs: list[str]) -> dict[str, str]:
    out = {}
    for pair in pairs:
        name, _, value = pair.partition("=")
        out[name] = value
    return out


class Stack:
    """nats-server, smtp-ingress and the extractor processes of one variant."""

    def __init__(self, args: argparse.Namespace, variant: Variant, workdir: Path) -> None:
        self.args = args
        self.variant = variant
        self.workdir = workdir
        self.nats: Any = None
        self.ingress: Any = None
        self.extractors: list[Any] = []
        self.smtp_port = 0
        self.database: str | None = None

    async def start(self) -> None:
        from postroom_testing import NatsServer, ServiceProcess, free_port

        self.nats = NatsServer(self.workdir / "nats")  # sync_interval: always
        await self.nats.astart()
        await seed(self.nats.url)
        common = {
            "NATS_URL": self.nats.url,
            "BLOB_BACKEND": "nats",
            "HTTP_HOST": HOST,
            "LOG_LEVEL": self.args.log_level,
            "OTEL_EXPORTER_OTLP_ENDPOINT": "",
            "PYTHONUNBUFFERED": "1",
        }
        self.smtp_port, http = free_port(), free_port()
        self.ingress = ServiceProcess(
            shlex.split(self.args.ingress_command),
            name="smtp-ingress",
            env={
                **common,
                "OTEL_SERVICE_NAME": "smtp-ingress",
                "SMTP_HOST": HOST,
                "SMTP_PORT": str(self.smtp_port),
                "HTTP_PORT": str(http),
                "SMTP_HOSTNAME": "ingress.bench.local",
                "SMTP_WORKERS": str(self.args.ingress_workers),
                "AUTH_VERIFY": "true" if self.args.auth_verify else "false",
                "DATABASE_URL": f"sqlite+aiosqlite:///{self.workdir / 'smtp_ingress.db'}",
            },
            ready_url=f"http://{HOST}:{http}/health/ready",
            log_path=self.workdir / "smtp-ingress.log",
            cwd=self.workdir,
        )
        await self.ingress.astart(timeout=60)
        if self.variant.store == "pg":
            from postroom_testing.postgres import create_database, unique_database_name

            self.database = unique_database_name("bench_drain")
            await create_database(self.args.postgres_url, self.database)
            host = self.args.postgres_url.split("://", 1)[1].rsplit("/", 1)[0]
            database_url = f"postgresql+asyncpg://{host}/{self.database}"
        else:
            database_url = f"sqlite+aiosqlite:///{self.workdir / 'attachment_extractor.db'}"
        env = {
            **common,
            "OTEL_SERVICE_NAME": "attachment-extractor",
            "DATABASE_URL": database_url,
            **_extra_env(self.args.extractor_env),
        }
        if self.variant.concurrency is not None:
            env["CONSUMER_CONCURRENCY"] = str(self.variant.concurrency)
        for n in range(self.variant.replicas):
            port = free_port()
            self.extractors.append(
                ServiceProcess(
                    shlex.split(self.args.extractor_command),
                    name=f"attachment-extractor-{n}",
                    env={**env, "HTTP_PORT": str(port)},
                    ready_url=f"http://{HOST}:{port}/health/ready",
                    log_path=self.workdir / f"attachment-extractor-{n}.log",
                    cwd=self.workdir,
                )
            )
        await self.start_extractors()

    async def start_extractors(self) -> None:
        # the first one migrates the store; then the others start together
        await self.extractors[0].astart(timeout=60)
        await asyncio.gather(*(x.astart(timeout=60) for x in self.extractors[1:]))

    async def stop_extractors(self) -> None:
        await asyncio.gather(*(x.astop(timeout=30) for x in self.extractors))

    def cpu(self) -> dict[str, float]:
        return {
            "extractor": sum(cpu_seconds([x.pid], with_children=True)
                             for x in self.extractors if x.is_running),
            "ingress": cpu_seconds([self.ingress.pid], with_children=True),
            "nats": cpu_seconds([self.nats.pid]),
        }

    def exited(self) -> list[str]:
        procs = [self.ingress, *self.extractors]
        return [f"{p.name} exited with code {p.returncode}" for p in procs if p.returncode]

    async def stop(self) -> None:
        for proc in [*self.extractors, self.ingress]:
            if proc is not None:
                await proc.astop(timeout=30)
        if self.nats is not None:
            await self.nats.astop(timeout=15)
        if self.database is not None:
            from postroom_testing.postgres import drop_database

            with contextlib.suppress(Exception):
                await drop_database(self.args.postgres_url, self.database)


# ---------------------------------------------------------------------------------------------
# one run: warm-up, live, backlog


@dataclass
class Row:
    variant: str
    kind: str
    phase: str  # live | backlog
    mails: int
    ingest_per_s: float
    drain_per_s: float
    ratio: float
    extractor_cpu_ms: float  # per mail, all extractor processes
    ingress_cpu_ms: float
    nats_cpu_ms: float
    latency_p50_ms: float | None = None  # live: 250 -> mail.parsed
    latency_p95_ms: float | None = None
    seconds: float = 0.0
    load_after: str = ""


def _per_mail(before: dict[str, float], after: dict[str, float], n: int) -> dict[str, float]:
    return {k: round((after[k] - before[k]) * 1000 / n, 3) for k in before}


async def run_one(args: argparse.Namespace, variant: Variant, kind: str) -> list[Row]:
    import nats

    n, warm = (args.messages, args.warmup) if kind == "4k" else (args.po_messages, args.warmup)
    run_id = f"drain-{uuid.uuid4().hex[:12]}"
    t0 = time.perf_counter()
    mails = await asyncio.to_thread(build_mails, kind, run_id, warm + 2 * n)
    print(f"  built {len(mails)} {kind} mails in {time.perf_counter() - t0:.1f} s "
          f"(median {sorted(map(len, mails))[len(mails) // 2]:,} B)", flush=True)
    warmup, live, backlog = range(warm), range(warm, warm + n), range(warm + n, warm + 2 * n)
    workdir = Path(tempfile.mkdtemp(prefix="bench-drain-"))
    stack = Stack(args, variant, workdir)
    failures: list[str] = []
    rows: list[Row] = []
    nc = None
    try:
        await stack.start()
        watcher = ParsedWatcher(run_id)
        nc = await nats.connect(stack.nats.url, name="bench-drain-watcher")
        await nc.subscribe(PARSED_SUBJECT, cb=watcher.on_parsed)
        await nc.subscribe(FAILED_SUBJECT, cb=watcher.on_failed)
        await nc.flush()

        async def wait_parsed(indices: range, what: str) -> None:
            watcher.expect(indices)
            try:
                async with asyncio.timeout(args.max_seconds):
                    await watcher.done.wait()
            except TimeoutError:
                raise RuntimeError(
                    f"{what}: {len(watcher.wanted)} of {len(indices)} mails without mail.parsed "
                    f"after {args.max_seconds:.0f} s; mail.failed: {watcher.failed[:3]}"
                ) from None

        def check_sent(sent: Sent, indices: range, what: str) -> None:
            if sent.errors or len(sent.accepted_at) != len(indices):
                raise RuntimeError(f"{what}: {len(indices) - len(sent.accepted_at)} mails not "
                                   f"accepted, e.g. {sent.errors[:3]}")

        # warm-up: every process has imported, connected and handled a few mails
        sent, _ = await send_all(stack.smtp_port, mails, warmup, args.sessions, args.max_seconds)
        check_sent(sent, warmup, "warm-up")
        await wait_parsed(warmup, "warm-up")

        # live: sending while the extractor drains
        cpu0 = stack.cpu()
        sent, started = await send_all(stack.smtp_port, mails, live, args.sessions,
                                       args.max_seconds)
        check_sent(sent, live, "live")
        last_250 = max(sent.accepted_at.values())
        first_250 = min(sent.accepted_at.values())
        await wait_parsed(live, "live")
        cpu1 = stack.cpu()
        last_parsed = max(watcher.arrivals[i] for i in live)
        ingest = n / (last_250 - started)
        drain = n / (last_parsed - first_250)
        lat = sorted((watcher.arrivals[i] - sent.accepted_at[i]) * 1000 for i in live)
        cpu = _per_mail(cpu0, cpu1, n)
        rows.append(Row(variant.name, kind, "live", n, round(ingest, 1), round(drain, 1),
                        round(drain / ingest, 3), cpu["extractor"], cpu["ingress"],
                        cpu["nats"], round(percentile(lat, 50), 1),
                        round(percentile(lat, 95), 1), round(last_parsed - started, 2),
                        loadavg()))
        print(f"  live: ingest {ingest:.1f}/s, drain {drain:.1f}/s, ratio {drain / ingest:.3f}",
              flush=True)

        # backlog: the extractor stopped while the mails come in, then draining them alone
        await stack.stop_extractors()
        c_ing0 = stack.cpu()
        sent, started = await send_all(stack.smtp_port, mails, backlog, args.sessions,
                                       args.max_seconds)
        check_sent(sent, backlog, "backlog")
        ingest = n / (max(sent.accepted_at.values()) - started)
        c_ing1 = stack.cpu()
        await stack.start_extractors()
        cpu0 = stack.cpu()  # (extractor CPU counted from its readiness: start-up excluded)
        await wait_parsed(backlog, "backlog")
        cpu1 = stack.cpu()
        times = sorted(watcher.arrivals[i] for i in backlog)
        drain = (n - 1) / (times[-1] - times[0]) if n > 1 else math.nan
        cpu = _per_mail(cpu0, cpu1, n)
        ing = _per_mail(c_ing0, c_ing1, n)
        rows.append(Row(variant.name, kind, "backlog", n, round(ingest, 1), round(drain, 1),
                        round(drain / ingest, 3), cpu["extractor"], ing["ingress"],
                        cpu["nats"], seconds=round(times[-1] - times[0], 2),
                        load_after=loadavg()))
        print(f"  backlog: ingest alone {ingest:.1f}/s, drain alone {drain:.1f}/s, "
              f"ratio {drain / ingest:.3f}", flush=True)

        wrong = {i: d for i, d in watcher.documents.items() if d != DOCUMENTS[kind]}
        if wrong:
            failures.append(f"{len(wrong)} mails with a wrong number of documents: "
                            f"{list(wrong.items())[:3]}")
        if watcher.failed:
            failures.append(f"mail.failed: {watcher.failed[:3]}")
        failures += stack.exited()
    except Exception as err:
        failures.append(f"{type(err).__name__}: {err}")
    finally:
        if nc is not None:
            with contextlib.suppress(Exception):
                await nc.close()
        await stack.stop()
        if args.keep or failures:
            print(f"  work dir kept: {workdir}", flush=True)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    if failures:
        raise RuntimeError("; ".join(failures))
    return rows


# ---------------------------------------------------------------------------------------------
# report


def print_table(rows: list[Row]) -> None:
    cols = ["variant", "kind", "phase", "mails", "ingest/s", "drain/s", "drain/ingest",
            "extr CPU ms/mail", "ingress ms", "nats ms", "250->parsed p50/p95 ms"]
    table = [
        [r.variant, r.kind, r.phase, str(r.mails), f"{r.ingest_per_s:.1f}",
         f"{r.drain_per_s:.1f}", f"{r.ratio:.3f}", f"{r.extractor_cpu_ms:.2f}",
         f"{r.ingress_cpu_ms:.2f}", f"{r.nats_cpu_ms:.2f}",
         "-" if r.latency_p50_ms is None else f"{r.latency_p50_ms:.0f} / {r.latency_p95_ms:.0f}"]
        for r in rows
    ]
    widths = [max(len(x) for x in col) for col in zip(cols, *table, strict=True)]
    print()
    for line in [cols, *table]:
        print("  ".join(c.ljust(w) if i < 3 else c.rjust(w)
                        for i, (c, w) in enumerate(zip(line, widths, strict=True))))


def print_spread(rows: list[Row]) -> None:
    groups: dict[tuple[str, str, str], list[Row]] = {}
    for r in rows:
        groups.setdefault((r.variant, r.kind, r.phase), []).append(r)
    if all(len(g) < 2 for g in groups.values()):
        return
    print("\nspread over the repeats (min - max):")
    for (variant, kind, phase), g in groups.items():
        def span(values: list[float], fmt: str = ".1f") -> str:
            return f"{min(values):{fmt}}-{max(values):{fmt}}"
        print(f"  {variant} {kind} {phase} (x{len(g)}): ingest {span([r.ingest_per_s for r in g])}"
              f", drain {span([r.drain_per_s for r in g])}, ratio "
              f"{span([r.ratio for r in g], '.3f')}, extractor CPU ms/mail "
              f"{span([r.extractor_cpu_ms for r in g], '.2f')}")


def machine_info() -> dict[str, Any]:
    import subprocess

    from postroom_testing.nats import nats_server_binary

    info = benchcommon.machine_info(("nats-py", "faststream", "sqlalchemy", "asyncpg"))
    try:
        out = subprocess.run([nats_server_binary(), "--version"], capture_output=True,
                             text=True, timeout=10, check=False)
        info["nats_server"] = (out.stdout or out.stderr).strip()
    except (OSError, subprocess.SubprocessError):
        info["nats_server"] = "unknown"
    return info


# ---------------------------------------------------------------------------------------------
# main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="Defaults: every variant and kind once; 2,000 4 KiB mails and 500 POs over 20 "
        "sessions. PostgreSQL variants need --postgres-url (trust auth on 127.0.0.1:5432 by "
        "default) and are skipped with a note when it does not answer.",
    )
    p.add_argument("--variants", default="sqlite,pg-c1,pg-c8,pg-c8-r2",
                   help="comma-separated <sqlite|pg>[-c<n>][-r<n>] (default: %(default)s)")
    p.add_argument("--kinds", default="4k,po", help="comma-separated 4k,po (default: %(default)s)")
    p.add_argument("--messages", type=int, default=2000,
                   help="4 KiB mails per phase (default 2000)")
    p.add_argument("--po-messages", type=int, default=500,
                   help="purchase orders per phase (default 500)")
    p.add_argument("--sessions", type=int, default=20, help="SMTP sessions (default 20)")
    p.add_argument("--warmup", type=int, default=20, help="unmeasured mails first (default 20)")
    p.add_argument("--repeat", type=int, default=1, help="run everything this often (default 1)")
    p.add_argument("--postgres-url", default=DEFAULT_PG,
                   help="admin URL of the PostgreSQL server (default: %(default)s)")
    p.add_argument("--ingress-workers", type=int, default=1,
                   help="SMTP_WORKERS of smtp-ingress (default 1, the embedded default)")
    p.add_argument("--auth-verify", action="store_true",
                   help="leave smtp-ingress's SPF/DKIM/DMARC consumer on (default off: its DNS "
                   "lookups would make the figures depend on this machine's resolver)")
    p.add_argument("--extractor-env", action="append", default=[], metavar="NAME=VALUE",
                   help="extra environment of the extractor processes (repeatable)")
    p.add_argument("--extractor-command", default="postroom-attachment-extractor",
                   help="command that starts one extractor (e.g. an older checkout's)")
    p.add_argument("--ingress-command", default="postroom-smtp-ingress")
    p.add_argument("--max-seconds", type=float, default=900.0,
                   help="bound on each phase (default 900)")
    p.add_argument("--log-level", default="WARNING",
                   choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    p.add_argument("--json-out", type=Path)
    p.add_argument("--keep", action="store_true", help="keep the work dirs (logs, stores)")
    args = p.parse_args(argv)
    try:
        args.variant_list = [Variant.parse(v.strip()) for v in args.variants.split(",")]
    except argparse.ArgumentTypeError as err:
        p.error(str(err))
    args.kind_list = [k.strip() for k in args.kinds.split(",")]
    if any(k not in KINDS for k in args.kind_list):
        p.error(f"--kinds: choose from {', '.join(KINDS)}")
    for name in ("messages", "po_messages", "sessions", "repeat"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.sessions > 100:
        p.error("--sessions must be at most 100")
    bad = [e for e in args.extractor_env if "=" not in e]
    if bad:
        p.error(f"--extractor-env wants NAME=VALUE, got {bad[0]!r}")
    return args


async def postgres_answers(url: str) -> str | None:
    """None when PostgreSQL answers, else why not."""
    from postroom_testing.postgres import plain_dsn

    try:
        import asyncpg

        conn = await asyncpg.connect(plain_dsn(url), timeout=3)
        await conn.close()
    except Exception as err:
        return f"{type(err).__name__}: {err}"
    return None


async def amain(args: argparse.Namespace) -> int:
    machine = machine_info()
    load_before = loadavg()
    rows: list[Row] = []
    failures: list[str] = []
    skipped: list[str] = []
    variants = list(args.variant_list)
    if any(v.store == "pg" for v in variants):
        why = await postgres_answers(args.postgres_url)
        if why is not None:
            skipped = [v.name for v in variants if v.store == "pg"]
            variants = [v for v in variants if v.store != "pg"]
            print(f"PostgreSQL variants skipped ({', '.join(skipped)}): no PostgreSQL at "
                  f"{args.postgres_url} ({why})", flush=True)
    print(f"bench_drain: variants {', '.join(v.name for v in variants)}; kinds "
          f"{', '.join(args.kind_list)}; {args.messages} 4 KiB mails / {args.po_messages} POs "
          f"per phase over {args.sessions} sessions (+{args.warmup} warm-up); repeat "
          f"{args.repeat}; load average {load_before}", flush=True)
    for rep in range(args.repeat):
        for variant in variants:
            for kind in args.kind_list:
                print(f"[{rep + 1}/{args.repeat}] {variant.name} ({variant.describe()}), {kind}",
                      flush=True)
                try:
                    rows += await run_one(args, variant, kind)
                except Exception as err:
                    failures.append(f"{variant.name} {kind}: {err}")
                    print(f"  FAILED: {err}", file=sys.stderr, flush=True)
    if rows:
        print_table(rows)
        print_spread(rows)
    pk = ", ".join(f"{k} {v}" for k, v in machine.get("packages", {}).items())
    print(
        f"\nmachine: {machine['cpu_model']}, {machine['cpu_cores']} cores "
        f"({machine['cpu_usable']} usable), {machine['python']}, {machine['platform']}; "
        f"{machine['nats_server']}; {pk}; load average before {load_before}, after {loadavg()}"
    )
    print("ingest = mails / (start .. last 250); drain (live) = mails / (first 250 .. last "
          "mail.parsed); drain (backlog) = the extractor alone, first .. last mail.parsed")
    if args.json_out:
        args.json_out.write_text(json.dumps({
            "machine": machine,
            "load_average": {"before": load_before, "after": loadavg()},
            "config": {k: v for k, v in vars(args).items()
                       if k not in ("json_out", "variant_list", "kind_list")},
            "rows": [asdict(r) for r in rows],
            "skipped": skipped,
            "failures": failures,
        }, indent=2, default=str) + "\n")
    for f in failures:
        print(f"FAILED {f}", file=sys.stderr)
    return 1 if failures else 0


def main(argv: list[str] | None = None) -> int:
    return asyncio.run(amain(parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
