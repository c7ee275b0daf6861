from __future__ import annotations

import sys
from pathlib import Path

# importlib mode: make the shared helpers importable (console_harness)
sys.path.insert(0, str(Path(__file__).parent))

from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest
from console_harness import (
    Bus,
    Console,
    FakeMailboxSync,
    console_argv,
    console_env,
    mailbox_sync_accounts,
)

from postroom_testing.procs import ManagedProcess, free_port


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path}/console.db"
    return str(request.getfixturevalue("postgres_url"))


@pytest.fixture
async def bus(nats_url: str) -> AsyncIterator[Bus]:
    b = await Bus.connect(nats_url)
    try:
        yield b
    finally:
        await b.close()


@pytest.fixture
async def start_console(nats_url: str, database_url: str,
                        service_process: Callable[..., ManagedProcess]
                        ) -> AsyncIterator[Callable[..., Any]]:
    consoles: list[Console] = []

    async def start(name: str = "console", **env: str) -> Console:
        port = free_port()
        proc = service_process(console_argv(), env=console_env(nats_url, database_url, port,
                                                                **env),
                               ready_url=f"http://127.0.0.1:{port}/health/ready", name=name)
        await proc.astart()
        console = Console(proc, port)
        consoles.append(console)
        return console

    yield start
    for console in consoles:
        await console.close()


@pytest.fixture
async def console(start_console: Callable[..., Any]) -> Console:
    return await start_console()


@pytest.fixture
def mailbox_sync() -> Iterator[FakeMailboxSync]:
    """mailbox-sync's account API (token ``sync-token``) over a real socket."""
    fake = FakeMailboxSync(mailbox_sync_accounts())
    yield fake
    fake.server.shutdown()
