"""Worker processes for CPU-bound calls: another process, errors handed back, and a call that
is cancelled (a consumer's time limit) stops its worker, which a thread could not."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from postroom_runtime import ProcessPool, RuntimeSettings, ServiceRuntime, WorkerDied


def _gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] == "Z"  # ended, not yet reaped
    except FileNotFoundError:
        return True


async def _until(check: object, within: float = 10.0) -> None:
    deadline = time.monotonic() + within
    while not check():  # type: ignore[operator]
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


async def test_a_call_runs_in_another_process_and_hands_back_result_and_errors() -> None:
    pool = ProcessPool(1)
    try:
        worker = await pool.run(os.getpid)
        assert worker != os.getpid()
        assert await pool.run(sorted, [3, 1, 2]) == [1, 2, 3]
        with pytest.raises(ValueError, match="invalid literal"):
            await pool.run(int, "not a number")
        assert await pool.run(os.getpid) == worker  # an error does not cost the worker
        assert pool.killed == 0
    finally:
        await pool.aclose()


async def test_a_cancelled_call_kills_its_worker_and_the_next_call_gets_a_fresh_one() -> None:
    pool = ProcessPool(1)
    try:
        worker = await pool.run(os.getpid)
        started = time.monotonic()
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.5):  # like a consumer's time limit
                await pool.run(time.sleep, 60)  # a parser that runs away
        assert time.monotonic() - started < 30
        await _until(lambda: _gone(worker))  # stopped, not left running for a minute
        assert pool.killed == 1
        fresh = await pool.run(os.getpid)
        assert fresh not in (worker, os.getpid())
    finally:
        await pool.aclose()


async def test_a_worker_that_dies_fails_its_call_and_is_replaced() -> None:
    pool = ProcessPool(1)
    try:
        with pytest.raises(WorkerDied):
            await pool.run(os._exit, 3)  # a crash in a C extension, the OOM killer
        assert pool.killed == 1
        assert await pool.run(abs, -5) == 5
    finally:
        await pool.aclose()


async def test_calls_share_the_workers() -> None:
    pool = ProcessPool(2)
    try:
        # calls that start together each start a worker, up to the pool's size
        pids = await asyncio.gather(*(pool.run(os.getpid) for _ in range(4)))
        assert len(set(pids)) == 2 and os.getpid() not in pids
    finally:
        await pool.aclose()


async def test_the_runtime_runs_cpu_work_in_its_workers_or_in_a_thread(tmp_path: Path) -> None:
    def runtime(processes: int) -> ServiceRuntime:
        settings = RuntimeSettings(database_url=f"sqlite+aiosqlite:///{tmp_path}/s.db",
                                   worker_processes=processes, http_port=0)
        return ServiceRuntime(settings, registry=CollectorRegistry(), configure_logging=False)

    pooled = runtime(2)
    assert await pooled.run_cpu(os.getpid) != os.getpid()
    assert pooled.workers is not None and pooled.workers.size == 2
    await pooled.stop()
    threaded = runtime(0)
    assert await threaded.run_cpu(os.getpid) == os.getpid()
    assert threaded.workers is None
    await threaded.stop()
