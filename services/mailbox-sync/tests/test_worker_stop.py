"""Stopping an account's worker (an IMAP folder's, a provider account's) while the caller is
itself cancelled (the service's shutdown given up on, a test's teardown): the caller's
cancellation goes on. ``suppress(BaseException)`` around the wait for the worker's task once
swallowed it, so the caller carried on as if nothing had happened."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest

from postroom_mailbox_sync.folders import FolderWorker
from postroom_mailbox_sync.provider import ProviderAccount


def folder_worker() -> FolderWorker:
    return FolderWorker(SimpleNamespace(settings=None), None, "INBOX")  # type: ignore[arg-type]


def provider_worker() -> ProviderAccount:
    return ProviderAccount(SimpleNamespace(), None)  # type: ignore[arg-type]


@pytest.mark.parametrize("make", [folder_worker, provider_worker], ids=["imap", "provider"])
async def test_a_cancelled_stop_is_not_swallowed(make: Any) -> None:
    worker = make()
    cleaning = asyncio.Event()
    cleaned = asyncio.Event()

    async def run() -> None:  # a worker whose clean-up (a LOGOUT, say) takes a while
        try:
            await asyncio.Event().wait()
        finally:
            cleaning.set()
            await cleaned.wait()

    worker.task = asyncio.create_task(run())
    await asyncio.sleep(0)  # the worker runs
    stopping = asyncio.create_task(worker.stop())
    await asyncio.wait_for(cleaning.wait(), 30)  # stop() cancelled the worker and waits for it
    stopping.cancel()  # the caller of stop() is cancelled meanwhile
    cleaned.set()
    await asyncio.wait({stopping}, timeout=30)
    assert stopping.done() and stopping.cancelled()
    assert worker.task.done()
