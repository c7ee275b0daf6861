"""The running stack for end-to-end tests: a real nats-server, each service its own process."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from e2e_stack import OtlpReceiver, Stack, seed

from postroom_testing.nats import NatsServer
from postroom_testing.procs import ServiceProcess, free_port


@pytest.fixture
def start_stack(nats_server: NatsServer, service_process: Callable[..., ServiceProcess],
                tmp_path: Path) -> Iterator[Callable[..., Stack]]:
    """Start ingress + extractor against the test's nats-server; returns a factory."""

    def start(**env: str) -> Stack:
        asyncio.run(seed(nats_server.url))
        smtp_port, ingress_http, extractor_http = free_port(), free_port(), free_port()
        common = {
            "NATS_URL": nats_server.url,
            "BLOB_BACKEND": "nats",
            "HTTP_HOST": "127.0.0.1",
            "LOG_LEVEL": "INFO",
            "CONSUMER_BACKOFF_BASE_SECONDS": "0.2",
            **env,
        }
        ingress = service_process(
            "postroom-smtp-ingress",
            env={**common, "OTEL_SERVICE_NAME": "smtp-ingress", "SMTP_HOST": "127.0.0.1",
                 "SMTP_PORT": str(smtp_port), "HTTP_PORT": str(ingress_http),
                 "DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path}/smtp_ingress.db"},
            ready_url=f"http://127.0.0.1:{ingress_http}/health/ready",
            name="smtp-ingress",
        )
        extractor = service_process(
            "postroom-attachment-extractor",
            env={**common, "OTEL_SERVICE_NAME": "attachment-extractor",
                 "HTTP_PORT": str(extractor_http),
                 "DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path}/attachment_extractor.db"},
            ready_url=f"http://127.0.0.1:{extractor_http}/health/ready",
            name="attachment-extractor",
        )
        ingress.start(timeout=60)
        extractor.start(timeout=60)
        return Stack(nats_server, smtp_port, ingress, extractor, ingress_http, extractor_http,
                     tmp_path, common)

    yield start


@pytest.fixture
def stack(start_stack: Callable[..., Stack]) -> Stack:
    return start_stack(SMTP_MAX_MESSAGE_SIZE=str(512 * 1024))


@pytest.fixture
def otlp() -> Iterator[OtlpReceiver]:
    receiver = OtlpReceiver()
    yield receiver
    receiver.close()
