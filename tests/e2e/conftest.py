"""The running stack for end-to-end tests: a real nats-server, every registered service its own
process."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from e2e_stack import CONSOLE_ADMIN_KEY, LocalDns, OtlpReceiver, Stack, seed

from postroom_contracts.services import registered
from postroom_testing.nats import NatsServer
from postroom_testing.procs import STARTUP_SECONDS, ServiceProcess, free_port
from postroom_testing.smtp import Sink


@pytest.fixture
def start_stack(nats_server: NatsServer, service_process: Callable[..., ServiceProcess],
                tmp_path: Path, dns: LocalDns) -> Iterator[Callable[..., Stack]]:
    """Start every registered service (its ``postroom-<name>`` console script, its own SQLite
    store, free ports) against the test's nats-server; returns a factory."""

    def start(**env: str) -> Stack:
        asyncio.run(seed(nats_server.url))
        common = {
            "NATS_URL": nats_server.url,
            "AUTH_DNS_SERVERS": dns.address,  # mail authentication asks only this machine
            "BLOB_BACKEND": "nats",
            "HTTP_HOST": "127.0.0.1",
            "LOG_LEVEL": "INFO",
            "CONSUMER_BACKOFF_BASE_SECONDS": "0.2",
            "CONSOLE_ADMIN_KEY": CONSOLE_ADMIN_KEY,  # read by the console only
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
                     "DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path}/{spec.store_name}.db"},
                ready_url=f"http://127.0.0.1:{http_ports[spec.name]}/health/ready",
                name=spec.name,
            )
        for process in processes.values():
            process.start(timeout=STARTUP_SECONDS)
        return Stack(nats_server, processes, http_ports, ports, tmp_path, common)

    yield start


@pytest.fixture
def stack(start_stack: Callable[..., Stack]) -> Stack:
    return start_stack(SMTP_MAX_MESSAGE_SIZE=str(512 * 1024))


@pytest.fixture
def dns() -> Iterator[LocalDns]:
    server = LocalDns()
    yield server
    server.close()


@pytest.fixture
def otlp() -> Iterator[OtlpReceiver]:
    receiver = OtlpReceiver()
    yield receiver
    receiver.close()


@pytest.fixture
def relay() -> Iterator[Sink]:
    """The outbound relay the mailer sends to: a real SMTP server on a free port."""
    sink = Sink().start()
    yield sink
    sink.stop()
