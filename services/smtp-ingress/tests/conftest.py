"""Fixtures: the whole smtp-ingress service in-process against a real nats-server.

``start_ingress(**settings)`` builds and starts the service (SMTP and HTTP on free ports, a
SQLite store in ``tmp_path``, the test tenants seeded) and stops it after the test. SMTP clients
are the standard library's ``smtplib``, run in a thread (the server shares the test's loop).
"""

from __future__ import annotations

import ssl
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import trustme
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import CollectorRegistry

from postroom_smtp_ingress.app import IngressRuntime, build_runtime
from postroom_smtp_ingress.config import IngressSettings
from postroom_testing.nats import NatsServer

sys.path.insert(0, str(Path(__file__).parent))

from smtp_ingress_testkit import TENANTS_YAML, Ingress


@pytest.fixture
def tenants_file(tmp_path: Path) -> Path:
    path = tmp_path / "tenants.yaml"
    path.write_text(TENANTS_YAML)
    return path


@pytest.fixture(scope="session")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="session")
def server_cert(ca: trustme.CA, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    cert = ca.issue_cert("localhost", "127.0.0.1", "postroom.local")
    folder = tmp_path_factory.mktemp("tls")
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert.private_key_pem.write_to_path(str(key_path))
    cert.cert_chain_pems[0].write_to_path(str(cert_path))
    for extra in cert.cert_chain_pems[1:]:
        with cert_path.open("ab") as fh:
            fh.write(extra.bytes())
    return cert_path, key_path


@pytest.fixture
def client_tls(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    return context


StartIngress = Callable[..., Awaitable[Ingress]]


@pytest.fixture
async def start_ingress(
    nats_server: NatsServer, tmp_path: Path, tenants_file: Path
) -> AsyncIterator[StartIngress]:
    started: list[IngressRuntime] = []

    async def start(**overrides: Any) -> Ingress:
        values: dict[str, Any] = {
            "nats_url": nats_server.url,
            "database_url": f"sqlite+aiosqlite:///{tmp_path}/ingress-{len(started)}.db",
            "smtp_port": 0,
            "http_port": 0,
            "tenants_seed_file": tenants_file,
            "publish_timeout_seconds": 2.0,
            # verification asks DNS: on only where a test serves it (test_authentication_smtp)
            "auth_verify": False,
        }
        values.update(overrides)
        settings = IngressSettings(**values)
        spans = InMemorySpanExporter()
        registry = CollectorRegistry()
        runtime = build_runtime(
            settings, registry=registry, span_exporter=spans, configure_logging=False
        )
        await runtime.start()
        started.append(runtime)
        return Ingress(runtime, nats_server.url, spans, registry, settings)

    try:
        yield start
    finally:
        for runtime in reversed(started):
            await runtime.stop()


@pytest.fixture
async def ingress(start_ingress: StartIngress) -> Ingress:
    return await start_ingress()
