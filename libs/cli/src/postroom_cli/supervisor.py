"""Child processes of ``postroom up``: started, watched, restarted with backoff, stopped in order.

Every child runs in its own session (process group): Ctrl-C in the terminal reaches only
``postroom up``, which then stops the services first and nats-server last, instead of everything
dying at once. On Linux a child also gets ``PR_SET_PDEATHSIG=SIGKILL``, so nothing outlives a
``postroom up`` that is itself killed with SIGKILL.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import os
import signal
import sys
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from typing import IO

Sink = Callable[[str], None]

RESTART_DELAY_INITIAL = 0.5
RESTART_DELAY_MAX = 30.0
STABLE_AFTER = 30.0  # a child that ran this long restarts with the initial delay again
CONFIG_ERROR_EXIT = 2  # postroom_runtime.settings.ConfigError: restarting will not help

_COLORS = ("cyan", "green", "magenta", "blue", "yellow", "bright_cyan", "bright_green")


class Console:
    """Prefixes each line with its source (``smtp-ingress | ...``) and flushes at once."""

    def __init__(self, stream: IO[str] | None = None, color: bool | None = None) -> None:
        self.stream = stream or sys.stdout
        self.color = self.stream.isatty() if color is None else color
        self.width = len("postroom")
        self._colors: dict[str, str] = {}

    def register(self, name: str) -> None:
        self.width = max(self.width, len(name))
        self._colors.setdefault(name, _COLORS[len(self._colors) % len(_COLORS)])

    def line(self, source: str, text: str) -> None:
        prefix = f"{source:<{self.width}} |"
        if self.color:
            import typer

            prefix = typer.style(prefix, fg=self._colors.get(source, "white"),
                                 bold=source == "postroom")
        try:
            self.stream.write(f"{prefix} {text}\n" if text else f"{prefix}\n")
            self.stream.flush()
        except (BrokenPipeError, ValueError):
            pass

    def say(self, text: str) -> None:
        self.line("postroom", text)


def describe_exit(returncode: int) -> str:
    if returncode < 0:
        with contextlib.suppress(ValueError):
            return f"signal {signal.Signals(-returncode).name}"
    return f"code {returncode}"


_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:  # in the child, between fork and exec
    libc_name = ctypes.util.find_library("c")
    if libc_name:
        ctypes.CDLL(libc_name, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


class Supervised:
    """One child process kept running: restarted with exponential backoff when it exits,
    unless it is being stopped, ``restart`` is off, or it failed on its configuration."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        *,
        env: Mapping[str, str],
        console: Console,
        output: Sink | None = None,
        stop_timeout: float = 10.0,
        restart: bool = True,
        config_error_exit: int | None = CONFIG_ERROR_EXIT,
        cwd: str | None = None,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.env = dict(env)
        self.console = console
        self.output = output or (lambda text: console.line(name, text))
        self.stop_timeout = stop_timeout
        self.restart = restart
        self.config_error_exit = config_error_exit
        self.cwd = cwd
        self.proc: asyncio.subprocess.Process | None = None
        self.started_at = 0.0
        self.starts = 0
        self.restarts = 0
        self.finished: str | None = None  # why it is no longer supervised (None: still is)
        self.recent: deque[str] = deque(maxlen=40)  # last output lines, for error messages
        self._pump: asyncio.Task[None] | None = None
        self._task: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()
        self._force = asyncio.Event()

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    async def start(self) -> None:
        """Spawn the child (OSError if it cannot be executed) and start watching it."""
        await self._spawn()
        self._task = asyncio.create_task(self._supervise(), name=f"supervise-{self.name}")

    async def stop(self) -> None:
        """SIGTERM, wait ``stop_timeout``, then SIGKILL; returns once the child is gone."""
        self._stop.set()
        if self._task is not None:
            await self._task
        elif self.running:
            await self._terminate()

    def force(self) -> None:
        """Skip the grace period of a stop in progress (second Ctrl-C)."""
        self._force.set()

    # -- internals -----------------------------------------------------------------------------

    async def _spawn(self) -> None:
        preexec = _die_with_parent if sys.platform.startswith("linux") else None
        self.proc = await asyncio.create_subprocess_exec(
            *self.argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            env=self.env,
            cwd=self.cwd,
            start_new_session=True,
            preexec_fn=preexec,
            limit=1 << 20,
        )
        self.started_at = time.monotonic()
        self.starts += 1
        assert self.proc.stdout is not None
        self._pump = asyncio.create_task(self._read(self.proc.stdout), name=f"log-{self.name}")

    async def _read(self, stream: asyncio.StreamReader) -> None:
        while True:
            try:
                raw = await stream.readline()
            except ValueError:  # a line longer than the limit: its start was dropped
                continue
            if not raw:
                return
            text = raw.decode(errors="replace").rstrip("\r\n")
            self.recent.append(text)
            self.output(text)

    async def _drain_output(self) -> None:
        if self._pump is not None:
            # a grandchild may still hold the pipe open: do not wait for it forever
            with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(self._pump, 2.0)

    def _signal(self, sig: int) -> None:
        if self.proc is None or self.proc.returncode is not None:
            return
        try:
            os.killpg(self.proc.pid, sig)  # its own session: the child and anything it started
        except (ProcessLookupError, PermissionError):
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(sig)

    async def _wait_exit(self, limit: float | None, *, or_force: bool) -> bool:
        assert self.proc is not None
        waiters = [asyncio.ensure_future(self.proc.wait())]
        if or_force:
            waiters.append(asyncio.ensure_future(self._force.wait()))
        _, pending = await asyncio.wait(waiters, timeout=limit,
                                        return_when=asyncio.FIRST_COMPLETED)
        for task in pending:
            task.cancel()
        return self.proc.returncode is not None

    async def _terminate(self) -> None:
        if self.running:
            self._signal(signal.SIGTERM)
            if not await self._wait_exit(self.stop_timeout, or_force=True):
                if not self._force.is_set():
                    self.console.say(
                        f"{self.name} did not stop within {self.stop_timeout:g}s; killing it"
                    )
                self._signal(signal.SIGKILL)
                await self._wait_exit(None, or_force=False)
        await self._drain_output()

    async def _supervise(self) -> None:
        delay = RESTART_DELAY_INITIAL
        while True:
            assert self.proc is not None
            exit_task = asyncio.ensure_future(self.proc.wait())
            stop_task = asyncio.ensure_future(self._stop.wait())
            await asyncio.wait({exit_task, stop_task}, return_when=asyncio.FIRST_COMPLETED)
            exit_task.cancel()
            stop_task.cancel()
            if self._stop.is_set():
                await self._terminate()
                self.finished = "stopped"
                return
            await self._drain_output()
            code = self.proc.returncode
            assert code is not None
            ran = time.monotonic() - self.started_at
            if ran >= STABLE_AFTER:
                delay = RESTART_DELAY_INITIAL
            exited = f"{self.name} exited with {describe_exit(code)} after {ran:.1f}s"
            if not self.restart:
                self.finished = exited
                return
            if code == self.config_error_exit:
                self.finished = exited
                self.console.say(f"{exited}: a configuration error, so it is not restarted; "
                                 "fix the setting it names and run `postroom up` again")
                return
            self.restarts += 1
            self.console.say(f"{exited}; restarting in {delay:g}s (restart #{self.restarts})")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), delay)
            if self._stop.is_set():
                self.finished = "stopped"
                return
            try:
                await self._spawn()
            except OSError as exc:
                self.finished = f"{self.name} could not be restarted: {exc}"
                self.console.say(self.finished)
                return
            self.console.say(f"{self.name} restarted (pid {self.pid})")
            delay = min(delay * 2, RESTART_DELAY_MAX)
