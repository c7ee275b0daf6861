"""The supervisor of `postroom up`: prefixed output, restart with backoff, orderly stop."""

from __future__ import annotations

import asyncio
import io
import os
import signal
import sys
import time

import pytest

from postroom_cli import supervisor
from postroom_cli.supervisor import Console, Supervised

# A child that says who it is, then waits; ``IGNORE_TERM=1`` makes it deaf to SIGTERM.
CHILD = """
import os, signal, sys, time
if os.environ.get("IGNORE_TERM"):
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
print(f"hello from {os.getpid()}", flush=True)
print("second line", flush=True)
sys.exit(int(os.environ.get("EXIT_AT_ONCE", "-1"))) if os.environ.get("EXIT_AT_ONCE") else None
time.sleep(600)
"""


def child(name: str, console: Console, **env: str) -> Supervised:
    return Supervised(name, [sys.executable, "-c", CHILD], env={**os.environ, **env},
                      console=console, stop_timeout=1.0)


def console() -> tuple[Console, io.StringIO]:
    out = io.StringIO()
    con = Console(stream=out, color=False)
    con.register("worker")
    return con, out


async def until(predicate, limit: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + limit
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.02)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def test_output_is_prefixed_and_a_crash_restarts_the_child() -> None:
    con, out = console()
    worker = child("worker", con)
    await worker.start()
    first_pid = worker.pid
    assert first_pid is not None
    await until(lambda: "second line" in out.getvalue())
    assert f"worker   | hello from {first_pid}\n" in out.getvalue()

    os.kill(first_pid, signal.SIGKILL)  # a crash
    await until(lambda: "restarted" in out.getvalue())
    text = out.getvalue()
    assert "postroom | worker exited with signal SIGKILL after" in text
    assert "restarting in 0.5s (restart #1)" in text
    assert worker.pid != first_pid
    assert f"postroom | worker restarted (pid {worker.pid})" in text
    await until(lambda: f"hello from {worker.pid}" in out.getvalue())

    second_pid = worker.pid
    await worker.stop()
    assert worker.proc is not None and worker.proc.returncode == -signal.SIGTERM
    assert not alive(second_pid)
    assert worker.finished == "stopped"


async def test_backoff_doubles_between_quick_crashes(monkeypatch) -> None:
    monkeypatch.setattr(supervisor, "RESTART_DELAY_INITIAL", 0.05)
    con, out = console()
    worker = child("worker", con, EXIT_AT_ONCE="3")
    await worker.start()
    await until(lambda: "(restart #3)" in out.getvalue())
    await worker.stop()
    text = out.getvalue()
    assert "worker exited with code 3" in text
    assert "restarting in 0.05s (restart #1)" in text
    assert "restarting in 0.1s (restart #2)" in text
    assert "restarting in 0.2s (restart #3)" in text


async def test_a_configuration_error_is_not_restarted() -> None:
    con, out = console()
    worker = child("worker", con, EXIT_AT_ONCE="2")
    await worker.start()
    await until(lambda: worker.finished is not None)
    assert "a configuration error, so it is not restarted" in out.getvalue()
    assert worker.restarts == 0
    await worker.stop()  # nothing left to stop: returns at once


async def test_a_child_that_ignores_sigterm_is_killed_after_the_timeout() -> None:
    con, out = console()
    worker = child("worker", con, IGNORE_TERM="1")
    await worker.start()
    await until(lambda: "second line" in out.getvalue())
    started = time.monotonic()
    await worker.stop()
    took = time.monotonic() - started
    assert worker.proc is not None and worker.proc.returncode == -signal.SIGKILL
    assert "worker did not stop within 1s; killing it" in out.getvalue()
    assert 0.9 < took < 5


async def test_force_skips_the_grace_period() -> None:
    con, out = console()
    worker = child("worker", con, IGNORE_TERM="1")
    worker.stop_timeout = 30
    await worker.start()
    await until(lambda: "second line" in out.getvalue())
    stopping = asyncio.create_task(worker.stop())
    await asyncio.sleep(0.2)
    worker.force()
    await asyncio.wait_for(stopping, 5)
    assert worker.proc is not None and worker.proc.returncode == -signal.SIGKILL


@pytest.mark.parametrize("code", [-9, 0, 3])
def test_describe_exit(code: int) -> None:
    assert supervisor.describe_exit(code) == ("signal SIGKILL" if code == -9 else f"code {code}")
