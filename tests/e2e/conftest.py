"""The running stack for end-to-end tests: a real nats-server, every registered service its own
process."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from e2e_stack import LocalDns, OtlpReceiver, Stack
from e2e_stack import start_stack as start_e2e_stack

from postroom_testing.nats import NatsServer
from postroom_testing.procs import ServiceProcess
from postroom_testing.smtp import Sink


@pytest.fixture
def start_stack(nats_server: NatsServer, service_process: Callable[..., ServiceProcess],
                tmp_path: Path, dns: LocalDns) -> Iterator[Callable[..., Stack]]:
    """Start every registered service (its ``postroom-<name>`` console script, its own SQLite
    store, free ports) against the test's nats-server; returns a factory."""

    def start(**env: str) -> Stack:
        return start_e2e_stack(nats_server, service_process, tmp_path, dns, **env)

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
