"""`postroom up`'s console: each child's output under its name, and what the supervisor does
to a child said on a `postroom` line. (The supervisor itself: libs/runtime's
test_supervisor.py.)"""

from __future__ import annotations

import io
import os
import signal
import sys

from postroom_cli.supervisor import Console, Supervised
from postroom_testing.procs import until

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


async def test_output_is_prefixed_and_a_restart_is_said() -> None:
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
    await worker.stop()
    assert worker.finished == "stopped"
    assert out.getvalue().count("postroom |") == 2  # a stop on request is not news


async def test_a_configuration_error_says_what_to_do() -> None:
    con, out = console()
    worker = child("worker", con, EXIT_AT_ONCE="2")
    await worker.start()
    await until(lambda: worker.finished is not None)
    assert "postroom | worker exited with code 2 after" in out.getvalue()
    assert ": a configuration error, so it is not restarted; fix the setting it names and run " \
        "`postroom up` again" in out.getvalue()


async def test_a_kill_after_the_timeout_is_said() -> None:
    con, out = console()
    worker = child("worker", con, IGNORE_TERM="1")
    await worker.start()
    await until(lambda: "second line" in out.getvalue())
    await worker.stop()
    assert worker.proc is not None and worker.proc.returncode == -signal.SIGKILL
    assert "postroom | worker did not stop within 1s; killing it" in out.getvalue()
