"""Child processes kept running: started, watched, restarted with backoff, reaped, signalled
and stopped within a deadline.

The one process supervisor of Postroom: ``postroom up`` runs nats-server and every service
with it, smtp-ingress runs its SMTP worker processes (``SMTP_WORKERS``) with it.

- A child that exits on its own is restarted after a delay that doubles from
  ``restart_delay`` up to ``max_restart_delay``, and starts again from ``restart_delay`` once
  a run lasted ``stable_after`` seconds. It is not restarted when ``restart`` is off, or when
  it exited with ``config_error_exit`` (``postroom_runtime.run`` exits 2 on a configuration
  error: restarting will not help). A restart that cannot spawn the process is retried.
- Stop: SIGTERM, then SIGKILL when the child is still there after ``stop_timeout`` seconds
  (or at once after :meth:`Supervised.force`). :meth:`Supervised.request_stop` sends the
  SIGTERM without waiting, so that several children drain in parallel.
- Each child runs in its own session (process group) unless told otherwise: a Ctrl-C in the
  terminal reaches only the supervisor, which then stops its children in order, and a signal
  for a child reaches whatever the child started too.
- The child does not outlive its supervisor: on Linux it gets ``PR_SET_PDEATHSIG`` (SIGKILL
  by default); with ``stdin_lifeline`` its stdin is a pipe the supervisor holds, which the
  child sees closing when the supervisor is gone (:func:`wait_supervisor_gone`) and can stop
  gracefully.
- Liveness: ``running``; with a ``ready_line`` also ``ready``, from the moment the child
  prints that line on stdout (:func:`announce_ready`) until it exits.

What happens is reported through ``report`` (a :class:`Report` per event; by default a log
line); every line the child writes to stdout (and stderr, unless ``merge_stderr`` is off)
goes to ``output``.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import logging
import os
import signal
import sys
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

log = logging.getLogger("postroom_runtime.supervisor")

RESTART_DELAY_INITIAL = 0.5
RESTART_DELAY_MAX = 30.0
STABLE_AFTER = 30.0  # a child that ran this long restarts with the initial delay again
CONFIG_ERROR_EXIT = 2  # postroom_runtime.run on a ConfigError: restarting will not help

Kind = Literal["ready", "restarting", "config_error", "ended", "stopped", "killing",
               "restarted", "restart_failed"]
EXITS: frozenset[Kind] = frozenset({"restarting", "config_error", "ended", "stopped"})


@dataclass(frozen=True)
class Report:
    """Something that happened to a child.

    ``kind``: ``ready`` (it printed its ready line), an exit (``restarting``: it will be
    restarted after ``delay``; ``config_error``: it exited with the configuration-error code
    and is not restarted; ``ended``: it exited and ``restart`` is off; ``stopped``: it exited
    after a stop), ``killing`` (a stop's deadline passed: SIGKILL), ``restarted``, or
    ``restart_failed`` (it could not be spawned again: retried after ``delay``).
    """

    kind: Kind
    name: str
    message: str  # one line for a person, e.g. "x exited with code 1 after 0.3s; restarting ..."
    pid: int | None
    returncode: int | None = None
    delay: float | None = None

    @property
    def exited(self) -> bool:
        return self.kind in EXITS


def describe_exit(returncode: int) -> str:
    if returncode < 0:
        with contextlib.suppress(ValueError):
            return f"signal {signal.Signals(-returncode).name}"
    return f"code {returncode}"


def log_report(report: Report) -> None:
    """The default ``report``: one log line (errors for exits on their own and failures)."""
    quiet = report.kind in ("ready", "restarted", "stopped")
    log.log(logging.INFO if quiet else logging.ERROR, report.message, extra={
        "child": report.name, "pid": report.pid, "exit_code": report.returncode})


_PR_SET_PDEATHSIG = 1


def _parent_death_signal(sig: int) -> Callable[[], None]:
    def preexec() -> None:  # in the child, between fork and exec
        libc_name = ctypes.util.find_library("c")
        if libc_name:
            ctypes.CDLL(libc_name, use_errno=True).prctl(_PR_SET_PDEATHSIG, sig, 0, 0, 0)

    return preexec


class Supervised:
    """One child process kept running (see the module docstring)."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        *,
        env: Mapping[str, str],
        cwd: str | None = None,
        output: Callable[[str], None] | None = None,
        report: Callable[[Report], None] = log_report,
        merge_stderr: bool = True,
        ready_line: str | None = None,
        stdin_lifeline: bool = False,
        new_session: bool = True,
        parent_death_signal: int | None = signal.SIGKILL,
        stop_timeout: float = 10.0,
        restart: bool = True,
        restart_delay: float = RESTART_DELAY_INITIAL,
        max_restart_delay: float = RESTART_DELAY_MAX,
        stable_after: float = STABLE_AFTER,
        config_error_exit: int | None = CONFIG_ERROR_EXIT,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.env = dict(env)
        self.cwd = cwd
        self.output = output
        self.report = report
        self.merge_stderr = merge_stderr
        self.ready_line = ready_line
        self.stdin_lifeline = stdin_lifeline
        self.new_session = new_session
        self.parent_death_signal = parent_death_signal
        self.stop_timeout = stop_timeout
        self.restart = restart
        self.restart_delay = restart_delay
        self.max_restart_delay = max_restart_delay
        self.stable_after = stable_after
        self.config_error_exit = config_error_exit
        self.proc: asyncio.subprocess.Process | None = None
        self.started_at = 0.0
        self.starts = 0
        self.restarts = 0
        self.finished: str | None = None  # why it is no longer supervised (None: still is)
        self.recent: deque[str] = deque(maxlen=40)  # last output lines, for error messages
        self._ready = False
        self._pump: asyncio.Task[None] | None = None
        self._task: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()
        self._force = asyncio.Event()
        self._term_sent = False

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    @property
    def ready(self) -> bool:
        """Running, and (with a ``ready_line``) has said so since it was last started."""
        return self.running and (self.ready_line is None or self._ready)

    async def start(self) -> None:
        """Spawn the child (OSError if it cannot be executed) and start watching it."""
        await self._spawn()
        self._task = asyncio.create_task(self._supervise(), name=f"supervise-{self.name}")

    def request_stop(self) -> None:
        """Begin a stop without waiting for it: no more restarts, SIGTERM now."""
        self._stop.set()
        if self.running and not self._term_sent:
            self._term_sent = True
            self.send_signal(signal.SIGTERM)

    async def stop(self, timeout: float | None = None) -> None:  # noqa: ASYNC109 - the deadline is the point
        """SIGTERM, wait ``timeout`` (default ``stop_timeout``), then SIGKILL; returns once
        the child is gone."""
        if timeout is not None:
            self.stop_timeout = timeout
        self._stop.set()
        if self._task is not None:
            await self._task
        elif self.running:
            await self._terminate()

    def force(self) -> None:
        """Skip the grace period of a stop in progress (e.g. a second Ctrl-C)."""
        self._force.set()

    def send_signal(self, sig: int) -> None:
        """Send ``sig`` to the child (with ``new_session``: to its whole process group)."""
        if self.proc is None or self.proc.returncode is not None:
            return
        if self.new_session:
            try:
                os.killpg(self.proc.pid, sig)  # the child and anything it started
                return
            except (ProcessLookupError, PermissionError):
                pass
        with contextlib.suppress(ProcessLookupError):
            self.proc.send_signal(sig)

    # -- internals -----------------------------------------------------------------------------

    def _say(self, kind: Kind, message: str, *, returncode: int | None = None,
             delay: float | None = None) -> None:
        try:
            self.report(Report(kind, self.name, message, self.pid, returncode, delay))
        except Exception:  # a broken report must not end the supervision
            log.exception("supervisor report failed", extra={"child": self.name})

    async def _spawn(self) -> None:
        preexec = None
        if self.parent_death_signal is not None and sys.platform.startswith("linux"):
            preexec = _parent_death_signal(self.parent_death_signal)
        self._ready = False
        self._term_sent = False
        self.proc = await asyncio.create_subprocess_exec(
            *self.argv,
            stdin=asyncio.subprocess.PIPE if self.stdin_lifeline else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT if self.merge_stderr else None,
            env=self.env,
            cwd=self.cwd,
            start_new_session=self.new_session,
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
            if self.ready_line is not None and not self._ready and text == self.ready_line:
                self._ready = True
                self._say("ready", f"{self.name} ready (pid {self.pid})")
                continue
            self.recent.append(text)
            if self.output is not None:
                self.output(text)

    async def _drain_output(self) -> None:
        if self._pump is not None:
            # a grandchild may still hold the pipe open: do not wait for it forever
            with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(self._pump, 2.0)

    def _close_stdin(self) -> None:
        if self.proc is not None and self.proc.stdin is not None:
            with contextlib.suppress(Exception):
                self.proc.stdin.close()

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
            if not self._term_sent:
                self._term_sent = True
                self.send_signal(signal.SIGTERM)
            if not await self._wait_exit(self.stop_timeout, or_force=True):
                if not self._force.is_set():
                    self._say("killing", f"{self.name} did not stop within "
                                         f"{self.stop_timeout:g}s; killing it")
                self.send_signal(signal.SIGKILL)
                await self._wait_exit(None, or_force=False)
        await self._drain_output()
        self._close_stdin()

    async def _supervise(self) -> None:
        delay = self.restart_delay
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
                code = self.proc.returncode
                self._say("stopped", f"{self.name} stopped ({describe_exit(code or 0)})",
                          returncode=code)
                return
            await self._drain_output()
            self._close_stdin()
            code = self.proc.returncode
            assert code is not None
            ran = time.monotonic() - self.started_at
            if ran >= self.stable_after:
                delay = self.restart_delay
            exited = f"{self.name} exited with {describe_exit(code)} after {ran:.1f}s"
            if not self.restart:
                self.finished = exited
                self._say("ended", exited, returncode=code)
                return
            if code == self.config_error_exit:
                self.finished = exited
                self._say("config_error",
                          f"{exited}: a configuration error, so it is not restarted",
                          returncode=code)
                return
            self.restarts += 1
            self._say("restarting",
                      f"{exited}; restarting in {delay:g}s (restart #{self.restarts})",
                      returncode=code, delay=delay)
            while True:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), delay)
                if self._stop.is_set():
                    self.finished = "stopped"
                    return
                delay = min(delay * 2, self.max_restart_delay)
                try:
                    await self._spawn()
                    break
                except OSError as exc:  # e.g. out of processes or memory for a moment
                    self._say("restart_failed", f"{self.name} could not be restarted: {exc}; "
                                                f"retrying in {delay:g}s", delay=delay)
            self._say("restarted", f"{self.name} restarted (pid {self.pid})")


# --- in the child ---------------------------------------------------------------------------


def announce_ready(line: str) -> None:
    """Tell the supervisor (which started us with this ``ready_line``) that we serve now."""
    os.write(sys.stdout.fileno(), line.encode() + b"\n")


async def wait_supervisor_gone() -> bool:
    """Return True once the supervisor is gone (it started us with ``stdin_lifeline``, and
    our stdin has closed); False at once when stdin cannot be watched."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    try:
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    except Exception as exc:
        log.warning("cannot watch the supervisor process", extra={"error": str(exc)})
        return False
    while await reader.read(4096):
        pass
    return True


__all__ = [
    "CONFIG_ERROR_EXIT", "RESTART_DELAY_INITIAL", "RESTART_DELAY_MAX", "STABLE_AFTER",
    "Report", "Supervised", "announce_ready", "describe_exit", "log_report",
    "wait_supervisor_gone",
]
