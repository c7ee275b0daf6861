"""The console script as deployed: its own process, on uvloop with the tuned garbage collector,
configured from the environment, speaking STARTTLS + AUTH, and stopping cleanly on SIGTERM."""

from __future__ import annotations

import asyncio
import smtplib
import ssl
from pathlib import Path
from typing import Any

from smtp_ingress_testkit import DOMAIN, Ingress, make_mail

from postroom_testing.nats import NatsServer
from postroom_testing.procs import free_port


async def test_console_script_end_to_end(
    service_process: Any, nats_server: NatsServer, tmp_path: Path, tenants_file: Path,
    server_cert: tuple[Path, Path], client_tls: ssl.SSLContext,
) -> None:
    cert, key = server_cert
    smtp_port, http_port = free_port(), free_port()
    proc = service_process(
        "postroom-smtp-ingress",
        env={
            "NATS_URL": nats_server.url,
            "DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path}/ingress.db",
            "HTTP_PORT": str(http_port),
            "SMTP_PORT": str(smtp_port),
            "SMTP_TLS_CERT": str(cert),
            "SMTP_TLS_KEY": str(key),
            "SMTP_REQUIRE_TLS": "true",
            "SMTP_AUTH_USERS": "alice:pw",
            "TENANTS_SEED_FILE": str(tenants_file),
        },
        ready_url=f"http://127.0.0.1:{http_port}/health/ready",
    )
    await proc.astart()

    def session() -> tuple[Any, ...]:
        with smtplib.SMTP("127.0.0.1", smtp_port, timeout=30) as client:
            client.ehlo("client.example")
            refused = client.mail("a@b.example")
            client.starttls(context=client_tls)
            client.ehlo("client.example")
            client.login("alice", "pw")
            client.mail("a@b.example")
            client.rcpt(f"orders+acme@{DOMAIN}")
            return refused, client.data(make_mail())

    refused, accepted = await asyncio.to_thread(session)
    assert refused[0] == 530
    assert accepted == (250, b"2.0.0 Message accepted")
    assert '"event_loop": "uvloop"' in proc.log_text()
    assert '"gc_threshold": [10000, 10, 10]' in proc.log_text()  # tune_gc
    events = await Ingress.events_at(nats_server.url)
    assert [(e.tenant, e.tls, e.authenticated) for e, _ in events] == [("acme", True, True)]
    assert await proc.astop(timeout=20) == 0
