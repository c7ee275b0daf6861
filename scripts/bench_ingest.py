#!/usr/bin/env python
"""Ingest throughput benchmark: SMTP messages per second into smtp-ingress, against a baseline.

Sends ``--messages`` mails (default 10,000) of ``--size`` bytes (default 4 KiB: a small multipart
purchase-order confirmation from a supplier to ``orders+acme@intake.example.com``, each with its
own Message-ID) over ``--sessions`` concurrent SMTP sessions (default 50).  Each session keeps its
connection and loops MAIL FROM / RCPT TO / DATA / RSET; latency is measured from sending
MAIL FROM to the final reply after DATA.  Before the measured run every session sends
``--warmup`` messages in total (default 2 per session), which are not counted.

Targets, each in its own process (the client is a light raw-asyncio SMTP client in this one):

* ``baseline``: a plain aiosmtpd ``Controller`` whose ``handle_DATA`` only returns ``250 OK``:
  the cost of SMTP on aiosmtpd itself, on this machine.
* ``ingress``: the real ``postroom-smtp-ingress`` with its own nats-server (JetStream,
  ``sync_interval: always``), a temporary SQLite ``DATABASE_URL``, ``BLOB_BACKEND=nats``,
  ``TENANTS_SEED_FILE=deploy/tenants.yaml`` and ``SMTP_WORKERS=--ingress-workers`` (default 2:
  two processes share the SMTP port; ``--ingress-workers 1`` measures one).  Every reply must
  be a 250, or the run fails.  Its CPU is that of all its processes plus nats-server's.

Prints a side-by-side table, the ingress/baseline msg/s ratio and the machine, and writes the
same as JSON with ``--json-out``.  All traffic stays on 127.0.0.1; a run is bounded by
``--max-seconds`` per target.

    .venv/bin/python scripts/bench_ingest.py                      # both targets
    .venv/bin/python scripts/bench_ingest.py --target baseline --messages 2000 --json-out b.json
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import email.utils
import json
import math
import shlex
import shutil
import signal
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from benchcommon import cpu_seconds, machine_info, percentile

REPO_ROOT = Path(__file__).resolve().parents[1]
HOST = "127.0.0.1"
SENDER = "billing@supplier-acme.example.net"
RECIPIENT = "orders+acme@intake.example.com"
CLIENT_NAME = "bench-client.example.net"
REPLY_TIMEOUT = 60.0  # seconds for one whole transaction
MAX_RECONNECTS = 3  # per session


# ---------------------------------------------------------------------------------------------
# the mail


def message_factory(size: int, run_id: str) -> Callable[[int], bytes]:
    """Return ``make(i) -> bytes``: a realistic MIME mail of exactly ``size`` bytes (CRLF line
    ends, no line starting with a dot), unique per ``i`` through its Message-ID."""
    date = email.utils.formatdate(localtime=False)
    boundary = "=_po_confirmation_7f3a"

    def head(i: int) -> bytes:
        return (
            f'From: "Supplier ACME Billing" <{SENDER}>\r\n'
            f"To: <{RECIPIENT}>\r\n"
            f"Subject: Order confirmation PO-{i:08d}\r\n"
            f"Date: {date}\r\n"
            f"Message-ID: <{run_id}.{i:08d}@supplier-acme.example.net>\r\n"
            "MIME-Version: 1.0\r\n"
            f'Content-Type: multipart/alternative; boundary="{boundary}"\r\n'
            "\r\n"
            "This is a multi-part message in MIME format.\r\n"
            f"--{boundary}\r\n"
            "Content-Type: text/plain; charset=utf-8\r\n"
            "Content-Transfer-Encoding: 7bit\r\n"
            "\r\n"
            "Dear purchasing team,\r\n"
            "\r\n"
            f"we confirm your purchase order PO-{i:08d} as follows:\r\n"
            "\r\n"
        ).encode("ascii")

    html_open = (
        f"\r\n--{boundary}\r\n"
        "Content-Type: text/html; charset=utf-8\r\n"
        "Content-Transfer-Encoding: 7bit\r\n"
        "\r\n"
        "<html><body><p>Dear purchasing team,</p><p>we confirm your purchase order; "
        "the positions are listed in the text part.</p>"
    ).encode("ascii")
    tail = (
        f"<p>Kind regards,<br>Supplier ACME Billing</p></body></html>\r\n--{boundary}--\r\n"
    ).encode("ascii")

    items = []
    fixed = len(head(0)) + len(html_open) + len(tail)
    budget = size - fixed
    if budget < 0:
        raise SystemExit(f"--size must be at least {fixed} bytes")
    pos = 1
    while True:
        line = (
            f"Pos {pos:03d}  ART-{10000 + pos:05d}  Hex bolt M8x{20 + pos % 60:02d} DIN 933  "
            f"qty {25 * (pos % 9 + 1):4d}  EUR {0.07 * (pos % 13 + 1):7.2f}\r\n"
        ).encode("ascii")
        if sum(map(len, items)) + len(line) > budget:
            break
        items.append(line)
        pos += 1
    rest = budget - sum(map(len, items))
    if rest >= 2:  # fill the exact size with one last line (+ CRLF)
        note = b"Delivery DAP Hamburg, payment 30 days net. Thank you for your order. "
        items.append((note * (1 + rest // len(note)))[: rest - 2] + b"\r\n")
    elif rest == 1:
        items[-1] = items[-1][:-2] + b" \r\n"
    body_items = b"".join(items)

    def make(i: int) -> bytes:
        return b"".join((head(i), body_items, html_open, tail))

    sample = make(0)
    assert len(sample) == size, (len(sample), size)
    assert all(not ln.startswith(b".") and len(ln) < 998 for ln in sample.split(b"\r\n"))
    return make


# ---------------------------------------------------------------------------------------------
# a minimal SMTP client (raw asyncio streams: the client shares the CPU with the server)


class SmtpError(Exception):
    pass


MAIL_CMD = f"MAIL FROM:<{SENDER}>\r\n".encode()
RCPT_CMD = f"RCPT TO:<{RECIPIENT}>\r\n".encode()


class SmtpSession:
    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def _reply(self) -> tuple[int, bytes]:
        assert self.reader is not None
        while True:
            line = await self.reader.readline()
            if not line:
                raise ConnectionError("server closed the connection")
            if len(line) < 4 or not line[:3].isdigit():
                raise SmtpError(f"bad reply line {line!r}")
            if line[3:4] != b"-":
                return int(line[:3]), line.rstrip()

    async def _command(self, cmd: bytes, expect: tuple[int, ...]) -> None:
        assert self.writer is not None
        self.writer.write(cmd)
        code, line = await self._reply()
        if code not in expect:
            verb = "end of DATA" if cmd == b".\r\n" else cmd.split(b":")[0].strip().decode()
            raise SmtpError(f"{verb} -> {line.decode(errors='replace')}")

    async def connect(self) -> None:
        async with asyncio.timeout(REPLY_TIMEOUT):
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
            code, line = await self._reply()
            if code != 220:
                raise SmtpError(f"greeting -> {line!r}")
            await self._command(f"EHLO {CLIENT_NAME}\r\n".encode(), (250,))

    async def send(self, message: bytes) -> float:
        """One transaction; returns its latency in seconds (MAIL FROM .. final 250)."""
        assert self.writer is not None
        async with asyncio.timeout(REPLY_TIMEOUT):
            started = time.perf_counter()
            try:
                await self._command(MAIL_CMD, (250,))
                await self._command(RCPT_CMD, (250, 251))
                await self._command(b"DATA\r\n", (354,))
                self.writer.write(message)
                await self._command(b".\r\n", (250,))
            except SmtpError:
                with contextlib.suppress(Exception):
                    await self._command(b"RSET\r\n", (250,))
                raise
            latency = time.perf_counter() - started
            await self._command(b"RSET\r\n", (250,))
            return latency

    async def close(self) -> None:
        if self.writer is None:
            return
        with contextlib.suppress(Exception):
            async with asyncio.timeout(5):
                await self._command(b"QUIT\r\n", (221,))
        self.writer.close()
        with contextlib.suppress(Exception):
            await self.writer.wait_closed()
        self.writer = self.reader = None


@dataclass
class Phase:
    latencies: list[float] = field(default_factory=list)
    errors: int = 0  # messages not accepted with a 250 (failed or never sent)
    error_samples: list[str] = field(default_factory=list)

    def error(self, text: str) -> None:
        if len(self.error_samples) < 5 and text not in self.error_samples:
            self.error_samples.append(text)


async def _session_loop(
    sess: SmtpSession, indices: Iterator[int], make: Callable[[int], bytes], phase: Phase
) -> None:
    reconnects = 0
    for i in indices:  # one iterator shared by every session: each index is sent once
        try:
            phase.latencies.append(await sess.send(make(i)))
        except SmtpError as err:
            phase.error(str(err))
        except (OSError, TimeoutError, ConnectionError) as err:
            phase.error(f"{type(err).__name__}: {err}")
            await sess.close()
            if reconnects >= MAX_RECONNECTS:
                return
            reconnects += 1
            try:
                await sess.connect()
            except Exception as cerr:
                phase.error(f"reconnect: {type(cerr).__name__}: {cerr}")
                return


async def _run_phase(
    sessions: list[SmtpSession], indices: range, make: Callable[[int], bytes]
) -> Phase:
    phase = Phase()
    shared = iter(indices)
    await asyncio.gather(*(_session_loop(s, shared, make, phase) for s in sessions))
    phase.errors = len(indices) - len(phase.latencies)
    return phase


@dataclass
class Result:
    target: str
    messages: int
    sessions: int
    size: int
    seconds: float
    msg_per_s: float
    p50_ms: float
    p99_ms: float
    max_ms: float
    errors: int
    error_samples: list[str]
    server_cpu_ms_per_msg: float
    client_cpu_ms_per_msg: float
    extra: dict[str, Any] = field(default_factory=dict)


async def run_load(
    target: str,
    port: int,
    *,
    messages: int,
    sessions: int,
    size: int,
    warmup: int,
    server_pids: list[int],
    max_seconds: float,
    pid_names: list[str] | None = None,
) -> Result:
    make = message_factory(size, f"bench-{uuid.uuid4().hex[:12]}")
    conns = [SmtpSession(HOST, port) for _ in range(sessions)]
    await asyncio.gather(*(c.connect() for c in conns))
    try:
        async with asyncio.timeout(max_seconds):
            if warmup:
                await _run_phase(conns, range(messages, messages + warmup), make)
            # (the workers of smtp-ingress live through the whole measured phase)
            cpu_each0 = [cpu_seconds([pid], with_children=True) for pid in server_pids]
            cpu_client0 = time.process_time()
            t0 = time.perf_counter()
            phase = await _run_phase(conns, range(messages), make)
            seconds = time.perf_counter() - t0
            cpu_each = [
                cpu_seconds([pid], with_children=True) - c0
                for pid, c0 in zip(server_pids, cpu_each0, strict=True)
            ]
            cpu_server = sum(cpu_each)
            cpu_client = time.process_time() - cpu_client0
    finally:
        await asyncio.gather(*(c.close() for c in conns))
    lat = sorted(phase.latencies)
    done = max(len(lat), 1)
    extra: dict[str, Any] = {}
    if pid_names and len(server_pids) > 1:
        extra["server_cpu_ms_per_msg_by_process"] = {
            name: round(cpu * 1000 / done, 3) for name, cpu in zip(pid_names, cpu_each, strict=True)
        }
    return Result(
        target=target,
        messages=messages,
        sessions=sessions,
        size=size,
        seconds=round(seconds, 3),
        msg_per_s=round(len(lat) / seconds, 1),
        p50_ms=round(percentile(lat, 50) * 1000, 2),
        p99_ms=round(percentile(lat, 99) * 1000, 2),
        max_ms=round((lat[-1] if lat else math.nan) * 1000, 2),
        errors=phase.errors,
        error_samples=phase.error_samples,
        server_cpu_ms_per_msg=round(cpu_server * 1000 / done, 3),
        client_cpu_ms_per_msg=round(cpu_client * 1000 / done, 3),
        extra=extra,
    )


# ---------------------------------------------------------------------------------------------
# targets


def serve_baseline(port: int) -> None:
    """The baseline server (runs in its own process): aiosmtpd that accepts everything."""
    from aiosmtpd.controller import Controller

    class AcceptAll:
        async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
            return "250 OK"

    controller = Controller(
        AcceptAll(), hostname=HOST, port=port, server_hostname="baseline.bench.local"
    )
    controller.start()
    print("READY", flush=True)
    signal.sigwait({signal.SIGTERM, signal.SIGINT})
    controller.stop()


def _baseline_process(port: int, workdir: Path) -> Any:
    from postroom_testing.procs import ManagedProcess

    class BaselineServer(ManagedProcess):
        def check_ready(self) -> bool:
            return self.is_running and "READY" in self.log_text(tail_lines=5)

    return BaselineServer(
        [sys.executable, str(Path(__file__).resolve()), "--serve-baseline", str(port)],
        name="baseline-smtp",
        log_path=workdir / "baseline.log",
    )


async def bench_baseline(args: argparse.Namespace, workdir: Path) -> Result:
    from postroom_testing.procs import free_port

    port = free_port()
    server = _baseline_process(port, workdir)
    server.start(timeout=30)
    try:
        return await run_load(
            "baseline",
            port,
            messages=args.messages,
            sessions=args.sessions,
            size=args.size,
            warmup=args.warmup,
            server_pids=[server.pid],
            max_seconds=args.max_seconds,
        )
    finally:
        server.stop()


async def _stream_counts(nats_url: str) -> dict[str, int]:
    import nats

    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream()
        return {s.config.name: s.state.messages for s in await js.streams_info()}
    finally:
        await nc.close()


async def bench_ingress(args: argparse.Namespace, workdir: Path) -> Result:
    from postroom_testing.nats import NatsServer
    from postroom_testing.procs import ServiceProcess, free_port, resolve_executable

    command = shlex.split(args.ingress_command)
    try:
        resolve_executable(command[0])
    except FileNotFoundError as err:
        raise SystemExit(f"ingress: {err} (is the smtp-ingress service installed?)") from None
    nats_server = NatsServer(workdir / "nats")
    nats_server.start()
    smtp_port, http_port = free_port(), free_port()
    env = {
        "OTEL_SERVICE_NAME": "smtp-ingress",
        "OTEL_EXPORTER_OTLP_ENDPOINT": "",
        "NATS_URL": nats_server.url,
        "DATABASE_URL": args.database_url or f"sqlite+aiosqlite:///{workdir / 'ingress.db'}",
        "BLOB_BACKEND": "nats",
        "HTTP_HOST": HOST,
        "HTTP_PORT": str(http_port),
        "SMTP_HOST": HOST,
        "SMTP_PORT": str(smtp_port),
        "SMTP_HOSTNAME": "ingress.bench.local",
        "SMTP_MAX_CONNECTIONS_PER_IP": str(args.sessions + 10),
        "SMTP_WORKERS": str(args.ingress_workers),
        "TENANTS_SEED_FILE": str(REPO_ROOT / "deploy" / "tenants.yaml"),
        "LOG_LEVEL": args.ingress_log_level,
    }
    ingress = ServiceProcess(
        command,
        name="smtp-ingress",
        env=env,
        ready_url=f"http://{HOST}:{http_port}/health/ready",
        log_path=workdir / "smtp-ingress.log",
        cwd=workdir,
    )
    try:
        ingress.start(timeout=60)
        result = await run_load(
            "ingress",
            smtp_port,
            messages=args.messages,
            sessions=args.sessions,
            size=args.size,
            warmup=args.warmup,
            server_pids=[ingress.pid, nats_server.pid],
            max_seconds=args.max_seconds,
            pid_names=["smtp-ingress", "nats-server"],
        )
        result.extra["stream_messages_incl_warmup"] = await _stream_counts(nats_server.url)
        result.extra["server_cpu_includes"] = "smtp-ingress (all its processes) + nats-server"
        result.extra["smtp_workers"] = args.ingress_workers
        return result
    finally:
        ingress.stop()
        nats_server.stop()


# ---------------------------------------------------------------------------------------------
# report


def print_report(results: list[Result], machine: dict[str, Any]) -> float | None:
    cols = [
        "target",
        "messages",
        "sessions",
        "msg/s",
        "p50 ms",
        "p99 ms",
        "errors",
        "srv CPU ms/msg",
        "cli CPU ms/msg",
    ]
    rows = [
        [
            r.target,
            r.messages,
            r.sessions,
            f"{r.msg_per_s:.1f}",
            f"{r.p50_ms:.2f}",
            f"{r.p99_ms:.2f}",
            r.errors,
            f"{r.server_cpu_ms_per_msg:.3f}",
            f"{r.client_cpu_ms_per_msg:.3f}",
        ]
        for r in results
    ]
    widths = [max(len(str(x)) for x in col) for col in zip(cols, *rows, strict=False)]
    print()
    print(
        "  ".join(
            str(c).rjust(w) if i else str(c).ljust(w)
            for i, (c, w) in enumerate(zip(cols, widths, strict=True))
        )
    )
    for row in rows:
        print(
            "  ".join(
                str(c).rjust(w) if i else str(c).ljust(w)
                for i, (c, w) in enumerate(zip(row, widths, strict=True))
            )
        )
    by = {r.target: r for r in results}
    ratio = None
    if "baseline" in by and "ingress" in by and by["baseline"].msg_per_s:
        ratio = by["ingress"].msg_per_s / by["baseline"].msg_per_s
        print(f"\ningress/baseline msg/s: {ratio:.3f}")
    for r in results:
        for sample in r.error_samples:
            print(f"  {r.target} error: {sample}")
        for key, value in r.extra.items():
            print(f"  {r.target} {key}: {value}")
    print(
        f"\nmachine: {machine['cpu_model']}, {machine['cpu_cores']} cores "
        f"({machine['cpu_usable']} usable), {machine['python']}, {machine['platform']}"
    )
    return ratio


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--target", choices=["baseline", "ingress", "both"], default="both")
    p.add_argument("--messages", type=int, default=10_000)
    p.add_argument("--sessions", type=int, default=50)
    p.add_argument("--size", type=int, default=4096, help="bytes per message (default 4096)")
    p.add_argument(
        "--warmup", type=int, default=None, help="unmeasured messages first (default 2 per session)"
    )
    p.add_argument("--json-out", type=Path)
    p.add_argument(
        "--max-seconds", type=float, default=600.0, help="bound on one target's run (default 600)"
    )
    p.add_argument(
        "--ingress-log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"]
    )
    p.add_argument(
        "--ingress-workers",
        type=int,
        default=2,
        help="SMTP_WORKERS for smtp-ingress: processes sharing the SMTP port (default 2; the "
        "service's own default is 1)",
    )
    p.add_argument("--database-url", help="DATABASE_URL for ingress (default: temp SQLite)")
    p.add_argument(
        "--ingress-command",
        default="postroom-smtp-ingress",
        help="command that starts smtp-ingress (default: the console script)",
    )
    p.add_argument("--keep", action="store_true", help="keep the work dir (logs, stores)")
    p.add_argument("--serve-baseline", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.messages < 1 or args.sessions < 1 or args.sessions > 1000:
        p.error("--messages must be >= 1 and --sessions between 1 and 1000")
    if not 1 <= args.ingress_workers <= 32:
        p.error("--ingress-workers must be between 1 and 32")
    if args.warmup is None:
        args.warmup = 2 * args.sessions
    return args


async def amain(args: argparse.Namespace) -> int:
    machine = machine_info()
    targets = ["baseline", "ingress"] if args.target == "both" else [args.target]
    workdir = Path(tempfile.mkdtemp(prefix="bench-ingest-"))
    results: list[Result] = []
    failed: list[str] = []
    print(
        f"bench_ingest: {args.messages} messages x {args.size} B over {args.sessions} sessions "
        f"(+{args.warmup} warm-up), targets: {', '.join(targets)}; work dir {workdir}",
        flush=True,
    )
    try:
        for target in targets:
            try:
                bench = bench_baseline if target == "baseline" else bench_ingress
                result = await bench(args, workdir)
            except (Exception, SystemExit) as err:
                failed.append(f"{target}: {err}")
                print(f"{target}: FAILED: {err}", file=sys.stderr, flush=True)
                continue
            results.append(result)
            print(f"{target}: {result.msg_per_s:.1f} msg/s, {result.errors} errors", flush=True)
            if target == "ingress" and result.errors:
                failed.append(f"ingress: {result.errors} replies were not 250")
    finally:
        if args.keep or failed:
            print(f"work dir kept: {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    ratio = print_report(results, machine) if results else None
    if args.json_out:
        args.json_out.write_text(
            json.dumps(
                {
                    "machine": machine,
                    "config": {
                        k: v
                        for k, v in vars(args).items()
                        if k not in ("json_out", "serve_baseline")
                    },
                    "results": [asdict(r) for r in results],
                    "ratio_ingress_over_baseline": ratio,
                    "failures": failed,
                },
                indent=2,
                default=str,
            )
            + "\n"
        )
    for f in failed:
        print(f"FAILED {f}", file=sys.stderr)
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.serve_baseline is not None:
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})
        serve_baseline(args.serve_baseline)
        return 0
    return asyncio.run(amain(args))


if __name__ == "__main__":
    sys.exit(main())
