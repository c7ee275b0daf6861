from __future__ import annotations

import sys
from pathlib import Path

# importlib mode: make the shared helpers importable (classifier_harness)
sys.path.insert(0, str(Path(__file__).parent))

from collections.abc import AsyncIterator, Iterator
from typing import Any

import nats
import pytest
from classifier_harness import Bus, SpamdProcess

from postroom_runtime import provision_streams
from postroom_testing.procs import STARTUP_SECONDS, free_port


@pytest.fixture
async def bus(nats_server: Any) -> AsyncIterator[Bus]:
    nc = await nats.connect(nats_server.url)
    await provision_streams(nc.jetstream())
    try:
        yield Bus(nc)
    finally:
        await nc.close()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path}/classifier.db"
    return str(request.getfixturevalue("postgres_url"))


@pytest.fixture
def spamd() -> Iterator[SpamdProcess]:
    """A real spamd (Debian's spamassassin, installed by scripts/test-deps.sh). Measured: it
    answers PING about 2 s after start on an idle 2-core machine (the rules are
    pre-compiled); STARTUP_SECONDS leaves room for a busy one."""
    proc = SpamdProcess(free_port())
    try:
        proc.start(timeout=STARTUP_SECONDS)
        yield proc
    finally:
        proc.stop(timeout=15)
        proc.cleanup()
