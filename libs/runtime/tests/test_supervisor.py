"""The process supervisor (``postroom up``'s children, smtp-ingress's workers): output, restart
with backoff, readiness, orderly stop with a deadline, and children that do not outlive it."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from pathlib import Path

import pytest

from postroom_runtime.supervisor import Report, Supervised, describe_exit
from postroom_testing.procs import pid_running as alive
from postroom_testing.procs import until

# A child that says who it is, then waits. IGNORE_TERM=1: deaf to SIGTERM; SAY_TERM=1: says
# "got TERM" on SIGTERM and exits a moment later; EXIT_AT_ONCE=N: exits with N;
# READY_ON_USR1=1: prints the ready line when it gets SIGUSR1.
CHILD = """
import os, signal, sys, time
if os.environ.get("IGNORE_TERM"):
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
if os.environ.get("SAY_TERM"):
    def term(*_):
        print("got TERM", flush=True)
        time.sleep(0.2)
        sys.exit(0)
    signal.signal(signal.SIGTERM, term)
if os.environ.get("READY_ON_USR1"):
    signal.signal(signal.SIGUSR1, lambda *_: print("child ready", flush=True))
print(f"hello from {os.getpid()}", flush=True)
print("second line", flush=True)
sys.exit(int(os.environ.get("EXIT_AT_ONCE", "-1"))) if os.environ.get("EXIT_AT_ONCE") else None
time.sleep(600)
"""


class Seen:
    """What a child printed and what the supervisor reported, as they come."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.reports: list[Report] = []

    @property
    def said(self) -> list[str]:
        return [r.message for r in self.reports]

    def kinds(self) -> list[str]:
        return [r.kind for r in self.reports]


def child(seen: Seen, **options: object) -> Supervised:
    env = {k: str(v) for k, v in options.items() if k.isupper()}
    rest = {k: v for k, v in options.items() if not k.isupper()}
    rest.setdefault("stop_timeout", 1.0)
    return Supervised("worker", [sys.executable, "-c", CHILD], env={**os.environ, **env},
                      output=seen.lines.append, report=seen.reports.append,
                      **rest)  # type: ignore[arg-type]


async def test_output_is_passed_on_and_a_crash_restarts_the_child() -> None:
    seen = Seen()
    worker = child(seen)
    await worker.start()
    first_pid = worker.pid
    assert first_pid is not None
    await until(lambda: "second line" in seen.lines)
    assert seen.lines[:2] == [f"hello from {first_pid}", "second line"]
    assert worker.ready  # no ready line asked for: running is ready

    os.kill(first_pid, signal.SIGKILL)  # a crash
    await until(lambda: "restarted" in seen.kinds())
    assert seen.said[0].startswith("worker exited with signal SIGKILL after")
    assert seen.said[0].endswith("; restarting in 0.5s (restart #1)")
    assert (seen.reports[0].kind, seen.reports[0].pid, seen.reports[0].returncode) == (
        "restarting", first_pid, -signal.SIGKILL)
    assert worker.pid != first_pid and worker.restarts == 1 and worker.starts == 2
    assert seen.said[1] == f"worker restarted (pid {worker.pid})"
    await until(lambda: f"hello from {worker.pid}" in seen.lines)

    second_pid = worker.pid
    await worker.stop()
    assert worker.proc is not None and worker.proc.returncode == -signal.SIGTERM
    assert not alive(second_pid)
    assert worker.finished == "stopped" and not worker.running
    assert seen.reports[-1].kind == "stopped" and seen.reports[-1].exited


async def test_backoff_doubles_between_quick_crashes() -> None:
    seen = Seen()
    worker = child(seen, EXIT_AT_ONCE="3", restart_delay=0.05)
    await worker.start()
    await until(lambda: any("(restart #3)" in text for text in seen.said))
    await worker.stop()
    restarting = [text for text in seen.said if "restarting in" in text]
    assert restarting[0].startswith("worker exited with code 3")
    assert restarting[0].endswith("restarting in 0.05s (restart #1)")
    assert restarting[1].endswith("restarting in 0.1s (restart #2)")
    assert restarting[2].endswith("restarting in 0.2s (restart #3)")


async def test_backoff_is_capped() -> None:
    seen = Seen()
    worker = child(seen, EXIT_AT_ONCE="3", restart_delay=0.05, max_restart_delay=0.1)
    await worker.start()
    await until(lambda: any("(restart #4)" in text for text in seen.said))
    await worker.stop()
    delays = [r.delay for r in seen.reports if r.kind == "restarting"]
    assert delays[:4] == [0.05, 0.1, 0.1, 0.1]


async def test_a_configuration_error_is_not_restarted() -> None:
    seen = Seen()
    worker = child(seen, EXIT_AT_ONCE="2")
    await worker.start()
    await until(lambda: worker.finished is not None)
    assert seen.kinds() == ["config_error"]
    assert seen.said[0].endswith(": a configuration error, so it is not restarted")
    assert worker.restarts == 0
    await worker.stop()  # nothing left to stop: returns at once


async def test_without_restart_an_exit_ends_the_supervision() -> None:
    seen = Seen()
    worker = child(seen, EXIT_AT_ONCE="1", restart=False)
    await worker.start()
    await until(lambda: worker.finished is not None)
    assert worker.finished.startswith("worker exited with code 1 after")
    assert seen.kinds() == ["ended"] and seen.reports[0].returncode == 1
    assert worker.restarts == 0


async def test_a_restart_that_cannot_spawn_is_retried(tmp_path: Path) -> None:
    script = tmp_path / "crashes"
    script.write_text("#!/bin/sh\necho started\nexit 3\n")
    script.chmod(0o755)
    seen = Seen()
    worker = Supervised("worker", [str(script)], env=dict(os.environ),
                        output=seen.lines.append, report=seen.reports.append,
                        restart_delay=0.05, max_restart_delay=0.2)
    await worker.start()
    await until(lambda: "restarting" in seen.kinds())
    script.chmod(0o644)  # cannot be executed any more
    await until(lambda: seen.kinds().count("restart_failed") >= 2)
    failed = next(r for r in seen.reports if r.kind == "restart_failed")
    assert failed.message.startswith("worker could not be restarted: ")
    assert worker.finished is None and not worker.running  # still supervised
    failed_so_far = len(seen.reports)
    started_so_far = seen.lines.count("started")
    script.chmod(0o755)
    await until(lambda: "restarted" in seen.kinds()[failed_so_far:])
    await until(lambda: seen.lines.count("started") > started_so_far)
    await worker.stop()


async def test_a_child_that_ignores_sigterm_is_killed_after_the_timeout() -> None:
    seen = Seen()
    worker = child(seen, IGNORE_TERM="1")
    await worker.start()
    await until(lambda: "second line" in seen.lines)
    started = time.monotonic()
    await worker.stop()
    took = time.monotonic() - started
    assert worker.proc is not None and worker.proc.returncode == -signal.SIGKILL
    assert "worker did not stop within 1s; killing it" in seen.said
    assert 0.9 < took < 5


async def test_force_skips_the_grace_period() -> None:
    seen = Seen()
    worker = child(seen, IGNORE_TERM="1", stop_timeout=30)
    await worker.start()
    await until(lambda: "second line" in seen.lines)
    stopping = asyncio.create_task(worker.stop())
    await asyncio.sleep(0.2)
    worker.force()
    await asyncio.wait_for(stopping, 5)
    assert worker.proc is not None and worker.proc.returncode == -signal.SIGKILL
    assert "killing" not in seen.kinds()  # a forced kill is what was asked for


async def test_request_stop_signals_at_once_and_stop_waits() -> None:
    seen_a, seen_b = Seen(), Seen()
    a = child(seen_a, SAY_TERM="1", stop_timeout=30)
    b = child(seen_b, SAY_TERM="1", stop_timeout=30)
    await a.start()
    await b.start()
    await until(lambda: "second line" in seen_a.lines and "second line" in seen_b.lines)
    a.request_stop()
    b.request_stop()  # both drain at the same time, neither waits for the other
    await until(lambda: "got TERM" in seen_a.lines and "got TERM" in seen_b.lines)
    await asyncio.gather(a.stop(), b.stop())
    for worker, seen in ((a, seen_a), (b, seen_b)):
        assert worker.proc is not None and worker.proc.returncode == 0
        assert seen.lines.count("got TERM") == 1  # one SIGTERM, not one per call
        assert seen.kinds() == ["stopped"]


async def test_ready_from_the_ready_line_until_the_child_exits() -> None:
    seen = Seen()
    worker = child(seen, READY_ON_USR1="1", ready_line="child ready", restart_delay=0.05)
    await worker.start()
    await until(lambda: "second line" in seen.lines)
    assert worker.running and not worker.ready
    worker.send_signal(signal.SIGUSR1)
    await until(lambda: worker.ready)
    assert "child ready" not in seen.lines  # the ready line is for the supervisor
    assert seen.reports[-1].kind == "ready" and seen.reports[-1].pid == worker.pid

    first_pid = worker.pid
    assert first_pid is not None
    os.kill(first_pid, signal.SIGKILL)
    await until(lambda: worker.pid != first_pid)
    await until(lambda: f"hello from {worker.pid}" in seen.lines)
    assert not worker.ready  # the new process has not said so yet
    worker.send_signal(signal.SIGUSR1)
    await until(lambda: worker.ready)
    assert seen.kinds().count("ready") == 2
    await worker.stop()
    assert not worker.ready


# A supervisor in its own process, to be killed: it starts one child and prints its pid.
SUPERVISOR = """
import asyncio, os, signal, sys
from postroom_runtime.supervisor import Supervised

async def main():
    child = Supervised("child", [sys.executable, "-c", sys.argv[1], sys.argv[2]],
                       env=dict(os.environ),
                       output=print, stdin_lifeline=sys.argv[2] == "lifeline",
                       parent_death_signal=None if sys.argv[2] == "lifeline" else signal.SIGKILL)
    await child.start()
    print(f"child pid {child.pid}", flush=True)
    await asyncio.sleep(600)

asyncio.run(main())
"""

# The child: with a lifeline it leaves (exit 0) when its stdin closes, else it sleeps.
LIFELINE_CHILD = """
import asyncio, sys
from postroom_runtime.supervisor import wait_supervisor_gone

async def main():
    if sys.argv[1] == "lifeline" and await wait_supervisor_gone():
        sys.exit(0)
    await asyncio.sleep(600)

asyncio.run(main())
"""


@pytest.mark.parametrize("how", ["lifeline", "parent-death-signal"])
async def test_a_child_does_not_outlive_its_supervisor(how: str) -> None:
    supervisor = await asyncio.create_subprocess_exec(
        sys.executable, "-c", SUPERVISOR, LIFELINE_CHILD, how,
        stdout=asyncio.subprocess.PIPE, start_new_session=True)
    child_pid = None
    try:
        assert supervisor.stdout is not None
        line = await asyncio.wait_for(supervisor.stdout.readline(), 30)
        child_pid = int(line.decode().rsplit(" ", 1)[1])
        assert alive(child_pid)
        supervisor.kill()  # SIGKILL: no chance to stop its child itself
        await supervisor.wait()
        await until(lambda: not alive(child_pid), within=15)
    finally:
        if supervisor.returncode is None:
            supervisor.kill()
            await supervisor.wait()
        if child_pid is not None and alive(child_pid):  # the test failed: leave nothing behind
            os.kill(child_pid, signal.SIGKILL)


@pytest.mark.parametrize("code", [-9, 0, 3])
def test_describe_exit(code: int) -> None:
    assert describe_exit(code) == ("signal SIGKILL" if code == -9 else f"code {code}")

