"""Helpers for end-to-end tests: the stack handle, sample mails, stream counts, an OTLP receiver."""

from __future__ import annotations

import asyncio
import io
import smtplib
import threading
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from email import policy
from email.message import EmailMessage
from email.utils import make_msgid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import nats
from dnslib import PTR, QTYPE, RCODE, RR, TXT, A, DNSRecord
from dnslib.server import BaseResolver, DNSServer
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from postroom_contracts.services import registered
from postroom_runtime.tenants import load_seed, seed_tenants
from postroom_testing.nats import NatsServer
from postroom_testing.procs import STARTUP_SECONDS, ServiceProcess, free_port

REPO = Path(__file__).resolve().parents[2]
TENANTS = REPO / "deploy" / "tenants.yaml"
# the console's admin key in every e2e stack (CONSOLE_ADMIN_KEY, as `postroom up` passes its own)
CONSOLE_ADMIN_KEY = "pr_0e2e0c0a5e01_" + "E" * 32


@dataclass
class Stack:
    nats: NatsServer
    processes: dict[str, ServiceProcess]  # every registered service, by name
    http_ports: dict[str, int]
    ports: dict[tuple[str, str], int]  # (service, port name) -> port, e.g. SMTP
    data: Path
    extra_env: dict[str, str] = field(default_factory=dict)

    @property
    def ingress(self) -> ServiceProcess:
        return self.processes["smtp-ingress"]

    @property
    def extractor(self) -> ServiceProcess:
        return self.processes["attachment-extractor"]

    @property
    def smtp_port(self) -> int:
        return self.ports["smtp-ingress", "smtp"]

    @property
    def ingress_http(self) -> int:
        return self.http_ports["smtp-ingress"]

    @property
    def extractor_http(self) -> int:
        return self.http_ports["attachment-extractor"]

    @property
    def extractor_url(self) -> str:
        return f"http://127.0.0.1:{self.extractor_http}"

    @property
    def console_url(self) -> str:
        return f"http://127.0.0.1:{self.http_ports['console']}"

    def smtp(self) -> smtplib.SMTP:
        return smtplib.SMTP("127.0.0.1", self.smtp_port, timeout=30)

    def send(self, msg: EmailMessage, to: list[str] | None = None) -> tuple[int, bytes]:
        """Send one mail; return the final reply to DATA (code, text)."""
        with self.smtp() as client:
            client.ehlo()
            client.mail(str(msg["From"]))
            for rcpt in to or [str(msg["To"])]:
                code, text = client.rcpt(rcpt)
                if code >= 400:
                    return code, text
            return client.data(wire(msg))


def wire(msg: EmailMessage) -> bytes:
    """The mail as it goes over SMTP: CRLF line endings (bare LF is refused)."""
    return msg.as_bytes(policy=policy.SMTP)


def order_mail(n: int = 0, *, to: str = "orders+acme@intake.example.com",
               pdf: bytes | None = None, with_xlsx: bool = True) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = "buyer@supplier.example"
    msg["To"] = to
    msg["Subject"] = f"Purchase order PO-{n:05d}"
    msg["Message-ID"] = make_msgid(f"po{n}", domain="supplier.example")
    msg.set_content(f"Please find attached purchase order PO-{n:05d}.\n")
    csv = f"sku,qty,price\nA-{n},3,9.99\nB-{n},1,120.00\n".encode()
    msg.add_attachment(csv, maintype="text", subtype="csv", filename=f"po-{n}.csv")
    if pdf is not None:
        msg.add_attachment(pdf, maintype="application", subtype="pdf", filename=f"po-{n}.pdf")
    if with_xlsx:
        msg.add_attachment(xlsx_bytes(n), maintype="application",
                           subtype="vnd.openxmlformats-officedocument.spreadsheetml.sheet",
                           filename=f"po-{n}.xlsx")
    return msg


def xlsx_bytes(n: int) -> bytes:
    from openpyxl import Workbook

    wb = Workbook()
    ws = wb.active
    ws.title = "Order"
    ws.append(["sku", "qty"])
    ws.append([f"A-{n}", n])
    buf = io.BytesIO()
    wb.save(buf)
    return buf.getvalue()


def pdf_bytes(text: str = "Purchase order") -> bytes:
    from reportlab.pdfgen import canvas

    buf = io.BytesIO()
    c = canvas.Canvas(buf)
    c.drawString(72, 720, text)
    c.showPage()
    c.drawString(72, 720, "page two")
    c.save()
    return buf.getvalue()


def zip_bytes() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("inner.txt", "not unpacked")
    return buf.getvalue()


async def seed(url: str) -> None:
    nc = await nats.connect(url)
    try:
        await seed_tenants(nc.jetstream(), load_seed(TENANTS))
    finally:
        await nc.close()


async def stream_count(url: str, subject: str) -> int:
    nc = await nats.connect(url)
    try:
        info = await nc.jetstream().stream_info("POSTROOM_EVENTS", subjects_filter=subject)
        return sum((info.state.subjects or {}).values())
    finally:
        await nc.close()


class LocalDns(BaseResolver):  # type: ignore[misc]
    """The stack's DNS for mail authentication (``AUTH_DNS_SERVERS``): a dnslib server on a free
    port of 127.0.0.1, so the end-to-end tests never ask a resolver outside this machine. It
    publishes SPF and DMARC for the sample mails' supplier.example and 127.0.0.1's PTR name;
    every other name does not exist."""

    ZONE: dict[tuple[str, str], list[Any]] = {
        ("supplier.example", "TXT"): [TXT("v=spf1 ip4:127.0.0.0/8 -all")],
        ("_dmarc.supplier.example", "TXT"): [TXT("v=DMARC1; p=quarantine")],
        ("1.0.0.127.in-addr.arpa", "PTR"): [PTR("mail.supplier.example.")],
        ("mail.supplier.example", "A"): [A("127.0.0.1")],
    }

    def __init__(self) -> None:
        class Quiet:
            def __getattr__(self, _name: str) -> Any:
                return lambda *args, **kwargs: None

        self.server = DNSServer(self, address="127.0.0.1", port=0, logger=Quiet())
        self.port = self.server.server.server_address[1]
        self.server.start_thread()

    def resolve(self, request: DNSRecord, handler: Any) -> DNSRecord:
        name = str(request.q.qname).lower().rstrip(".")
        reply = request.reply()
        records = self.ZONE.get((name, QTYPE[request.q.qtype]))
        if records:
            for rdata in records:
                reply.add_answer(RR(name + ".", request.q.qtype, rdata=rdata, ttl=60))
        elif not any(known == name for known, _ in self.ZONE):
            reply.header.rcode = RCODE.NXDOMAIN
        return reply

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def close(self) -> None:
        self.server.stop()
        self.server.server.server_close()


class OtlpReceiver:
    """A local OTLP/HTTP trace receiver: decodes real ExportTraceServiceRequest protobufs."""

    def __init__(self) -> None:
        self.spans: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                request = ExportTraceServiceRequest()
                request.ParseFromString(body)
                with receiver.lock:
                    for rs in request.resource_spans:
                        service = next((a.value.string_value for a in rs.resource.attributes
                                        if a.key == "service.name"), "?")
                        for ss in rs.scope_spans:
                            for span in ss.spans:
                                receiver.spans.append({
                                    "service": service, "name": span.name,
                                    "trace_id": span.trace_id.hex(),
                                    "span_id": span.span_id.hex(),
                                    "parent": span.parent_span_id.hex(),
                                })
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def snapshot(self) -> list[dict[str, Any]]:
        with self.lock:
            return list(self.spans)

    def close(self) -> None:
        self.server.shutdown()



def wait_until(check: Any, timeout: float = 60.0, interval: float = 0.1) -> Any:
    """Poll ``check`` until it returns something true (returned); AssertionError after
    ``timeout`` seconds (a bound for a hang, not a speed check: the whole stack shares two
    busy cores)."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(interval)


def start_stack(nats_server: NatsServer, service_process: Callable[..., ServiceProcess],
                data: Path, dns: LocalDns, **env: str) -> Stack:
    """Seed the tenants and start every registered service (its ``postroom-<name>`` console
    script, its own SQLite store under ``data``, free ports) against ``nats_server``; ``env``
    goes to every service on top of the common wiring."""
    asyncio.run(seed(nats_server.url))
    common = {
        "NATS_URL": nats_server.url,
        "AUTH_DNS_SERVERS": dns.address,  # mail authentication asks only this machine
        "BLOB_BACKEND": "nats",
        "HTTP_HOST": "127.0.0.1",
        "LOG_LEVEL": "INFO",
        "CONSUMER_BACKOFF_BASE_SECONDS": "0.2",
        "CONSOLE_ADMIN_KEY": CONSOLE_ADMIN_KEY,  # read by the console only
        # mailbox-sync's credentials key and API token (as `postroom up` keeps them)
        "MAILBOX_SYNC_SECRET_KEY_FILE": str(data / "mailbox-sync" / "secret-key"),
        "MAILBOX_SYNC_API_TOKEN_FILE": str(data / "mailbox-sync" / "api-token"),
        **env,
    }
    processes: dict[str, ServiceProcess] = {}
    http_ports: dict[str, int] = {}
    ports: dict[tuple[str, str], int] = {}
    for spec in registered():
        http_ports[spec.name] = free_port()
        own = {}
        for port in spec.ports:
            ports[spec.name, port.name] = free_port()
            own[port.env] = str(ports[spec.name, port.name])
        processes[spec.name] = service_process(
            f"postroom-{spec.name}",
            env={**common, **own, "OTEL_SERVICE_NAME": spec.name,
                 "HTTP_PORT": str(http_ports[spec.name]),
                 "DATABASE_URL": f"sqlite+aiosqlite:///{data}/{spec.store_name}.db"},
            ready_url=f"http://127.0.0.1:{http_ports[spec.name]}/health/ready",
            name=spec.name,
        )
    for process in processes.values():
        process.start(timeout=STARTUP_SECONDS)
    return Stack(nats_server, processes, http_ports, ports, data, common)
