"""Stopping the projector while the leader is cleaning up after its consumer ended (a lost
lock, a failed subscription): the cancellation goes on and the projector ends. It was
swallowed by ``suppress(CancelledError)`` around the wait for the lock's task, and the
projector went on trying to lead while stop() waited for it (a console that did not stop)."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

from prometheus_client import CollectorRegistry

from postroom_console.projector import Metrics, Projector


class FakeLeadership:
    def __init__(self) -> None:
        self.acquired = 0

    async def try_acquire(self) -> bool:
        self.acquired += 1
        return True

    async def release(self) -> None:
        return None

    async def check(self) -> None:
        return None


async def test_a_stop_during_the_leaders_clean_up_is_not_swallowed() -> None:
    projector = Projector(SimpleNamespace(store=None), batch_size=10,  # type: ignore[arg-type]
                          resubscribe_seconds=1, metrics=Metrics(CollectorRegistry()))
    leadership = FakeLeadership()
    projector.leadership = leadership  # type: ignore[assignment]
    cleaning = asyncio.Event()
    cleaned = asyncio.Event()

    async def nothing(*_: Any) -> Any:
        return None

    async def position() -> tuple[int, None]:
        return 5, None

    async def run() -> None:  # the consumer ends at once (its subscription failed)
        raise RuntimeError("subscription failed")

    async def hold() -> None:  # the lock's task takes a moment to clean up when cancelled
        try:
            await asyncio.Event().wait()
        finally:
            cleaning.set()
            await cleaned.wait()

    projector._poll = nothing  # type: ignore[method-assign]
    projector._unsubscribe = nothing  # type: ignore[method-assign]
    projector._load_position = position  # type: ignore[method-assign]
    projector._run = run  # type: ignore[method-assign]
    projector._hold = hold  # type: ignore[method-assign]

    projector._task = asyncio.create_task(projector._main())
    await asyncio.wait_for(cleaning.wait(), 30)  # the leader cancels the lock's task
    stopping = asyncio.create_task(projector.stop())
    await asyncio.sleep(0)  # stop() cancels the projector in the middle of that clean-up
    cleaned.set()
    await asyncio.wait({stopping}, timeout=30)
    assert stopping.done(), "stop() is still waiting for the projector"
    assert projector._task.cancelled()
    assert leadership.acquired == 1  # it did not go on to lead again
