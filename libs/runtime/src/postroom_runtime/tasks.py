"""Ending asyncio tasks without swallowing the caller's own cancellation."""

from __future__ import annotations

import asyncio
from typing import Any


async def cancel_and_wait(task: asyncio.Future[Any]) -> None:
    """Cancel ``task`` and wait for it to end, dropping its outcome. Unlike
    ``suppress(BaseException): await task`` (or ``suppress(CancelledError)``), a cancellation
    of the caller meanwhile still propagates: swallowed, it once left a stopped worker looping
    and a ``stop()`` waiting forever."""
    task.cancel()
    await asyncio.wait({task})
    if not task.cancelled():
        task.exception()  # retrieved: no "exception was never retrieved" at exit
