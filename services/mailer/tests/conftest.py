from __future__ import annotations

import sys
from pathlib import Path

# importlib mode: make the shared helpers importable (mailer_samples, ...)
sys.path.insert(0, str(Path(__file__).parent))

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from mailer_harness import Harness

from postroom_testing.procs import ManagedProcess, free_port
from postroom_testing.smtp import Sink


@pytest.fixture
def sink() -> Any:
    server = Sink().start()
    yield server
    server.stop()


@pytest.fixture
async def start_mailer(nats_url: str, service_process: Callable[..., ManagedProcess],
                       tmp_path: Path) -> AsyncIterator[Callable[..., Any]]:
    harnesses: list[Harness] = []

    async def start(relay_url: str = "", *, database_url: str | None = None,
                    name: str = "mailer", **env: str) -> Harness:
        port = free_port()
        database_url = database_url or f"sqlite+aiosqlite:///{tmp_path / 'mailer.db'}"
        proc_env = {
            "NATS_URL": nats_url, "DATABASE_URL": database_url, "HTTP_PORT": str(port),
            "MAILER_RELAY_URL": relay_url, "MAILER_CAPTURE_DIR": str(tmp_path / "outbox"),
            "MAILER_MESSAGE_ID_DOMAIN": "mailer.test", "MAILER_RETRY_SCHEDULE": "1s,2s",
            "MAILER_SENDER_POLL_SECONDS": "0.2", "CONSUMER_BACKOFF_BASE_SECONDS": "0.2",
            "CONSUMER_BACKOFF_MAX_SECONDS": "1", "OUTBOX_POLL_SECONDS": "0.2",
            "WORKER_PROCESSES": "0", "LOG_LEVEL": "INFO", **env,
        }
        proc = service_process([sys.executable, "-m", "postroom_mailer"], env=proc_env,
                               ready_url=f"http://127.0.0.1:{port}/health/ready", name=name)
        await proc.astart()
        harness = Harness(proc, nats_url, port, database_url)
        await harness.connect()
        harnesses.append(harness)
        return harness

    yield start
    for harness in harnesses:
        await harness.close()

