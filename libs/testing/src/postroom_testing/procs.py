"""Child processes for tests and benchmarks: start, wait until healthy, stop, kill, restart.

Every process started here is registered in a process-wide registry; :func:`kill_all` (called by
the pytest plugin at session end and by ``atexit``) kills whatever is still running, so a failing
or interrupted test run does not leave servers behind.  Processes spawned from the main thread also
get ``PR_SET_PDEATHSIG=SIGKILL`` on Linux, so they die even if the parent is killed with SIGKILL.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import ctypes
import ctypes.util
import inspect
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

__all__ = [
    "ManagedProcess",
    "ProcessExitedError",
    "ServiceProcess",
    "free_port",
    "http_status",
    "http_status_async",
    "kill_all",
    "pid_running",
    "resolve_executable",
    "until",
    "wait_for_tcp",
]

_handed_out_ports: set[int] = set()
_port_lock = threading.Lock()



STARTUP_SECONDS = 180.0
"""Upper bound for a Python process to print its first line or become ready. A cold start (a
fresh clone's first import of every module) on a machine whose cores are busy with other work
has taken over 30 s; a process that is really stuck still fails, only later."""

_PORT_FLOOR = 15000  # below: the well-known and registered ports services and tools use


def _ephemeral_range() -> tuple[int, int]:
    """The ports the kernel hands out by itself (``bind(0)``, a ``connect()``'s local port)."""
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999  # Linux's default


def _bindable(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def free_port(host: str = "127.0.0.1") -> int:
    """Return a TCP port on ``host`` that is free right now, for a server that binds it later.

    The port is outside the kernel's ephemeral range, so nothing else takes it meanwhile: a port
    from ``bind(0)`` is one the kernel goes on handing out, to any socket binding port 0 (another
    server of the test) before ours is up, and measured that way 77 of 200 handed-out ports went
    to other sockets. A port already handed out by this process is never returned twice.
    """
    low, high = _ephemeral_range()
    # below the ephemeral range first: a port there leaves room above it for a run of ports
    # from it (`postroom up --http-port-base` takes at most 65000, and adds offsets)
    spans = [(a, b) for a, b in ((_PORT_FLOOR, low - 1), (high + 1, 64000)) if b - a >= 1000][:1]
    for _ in range(200):
        if spans:
            a, b = random.choice(spans)
            port = random.randint(a, b)
            if not _bindable(host, port):
                continue
        else:  # the ephemeral range covers every port: the kernel's choice, as a last resort
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                sock.bind((host, 0))
                port = int(sock.getsockname()[1])
        with _port_lock:
            if port not in _handed_out_ports:
                _handed_out_ports.add(port)
                return port
    raise RuntimeError("could not find a free TCP port")


def resolve_executable(name: str) -> str:
    """Find a console script/binary: next to ``sys.executable`` first (the venv), then on PATH."""
    if os.sep in name:
        return name
    candidate = Path(sys.executable).parent / name
    if candidate.exists() and os.access(candidate, os.X_OK):
        return str(candidate)
    found = shutil.which(name)
    if found is None:
        raise FileNotFoundError(
            f"executable {name!r} not found next to {sys.executable} nor on PATH"
        )
    return found


# ---------------------------------------------------------------------------------------------
# HTTP / TCP probes (no third-party client: keep the helper light)


def http_status(url: str, timeout: float = 2.0) -> int | None:
    """GET ``url`` and return the status code, or ``None`` if nothing answered."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as err:
        return int(err.code)
    except (OSError, ValueError):
        return None


async def http_status_async(url: str, limit: float = 2.0) -> int | None:
    """Async ``http_status`` for plain ``http://host:port/path`` URLs (HTTP/1.0, no TLS)."""
    parsed = urllib.parse.urlsplit(url)
    if parsed.scheme != "http" or parsed.hostname is None:
        raise ValueError(f"only plain http:// URLs are supported: {url}")
    path = parsed.path or "/"
    if parsed.query:
        path += "?" + parsed.query
    try:
        async with asyncio.timeout(limit):
            reader, writer = await asyncio.open_connection(parsed.hostname, parsed.port or 80)
            try:
                writer.write(
                    f"GET {path} HTTP/1.0\r\nHost: {parsed.netloc}\r\n\r\n".encode("ascii")
                )
                await writer.drain()
                status_line = await reader.readline()
            finally:
                writer.close()
                with contextlib.suppress(OSError):
                    await writer.wait_closed()
    except (OSError, TimeoutError):
        return None
    parts = status_line.split()
    if len(parts) < 2 or not parts[1].isdigit():
        return None
    return int(parts[1])


def wait_for_tcp(host: str, port: int, timeout: float = 10.0) -> None:
    """Block until ``host:port`` accepts a TCP connection."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host, port), timeout=1.0):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"{host}:{port} did not accept connections in {timeout}s"
                ) from None
            time.sleep(0.05)


def pid_running(pid: int) -> bool:
    """Whether process ``pid`` runs (Linux; a zombie not yet reaped by its parent has ended)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


async def until(check: Callable[[], object], within: float = 60.0, *, what: str = "",
                interval: float = 0.02) -> Any:
    """Wait, polling every ``interval`` seconds, until ``check()`` (a plain function or one
    returning an awaitable) gives something true, and return it; AssertionError naming
    ``what`` after ``within`` seconds. ``within`` bounds a hang, it is no speed check: on a
    busy 2-core machine a process start or a few NATS round trips can take many seconds."""
    deadline = time.monotonic() + within
    while True:
        value = check()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(
                f"{what or 'condition'} not reached within {within:g}s")
        await asyncio.sleep(interval)


# ---------------------------------------------------------------------------------------------
# process registry


_live: set[ManagedProcess] = set()
_live_lock = threading.Lock()


def kill_all() -> list[str]:
    """SIGKILL every registered process that is still running; return their names."""
    with _live_lock:
        procs = list(_live)
    killed = []
    for proc in procs:
        if proc.is_running:
            killed.append(proc.name)
        with contextlib.suppress(Exception):
            proc.kill()
    return killed


atexit.register(kill_all)

_PR_SET_PDEATHSIG = 1


def _pdeathsig_preexec() -> None:  # runs in the child between fork and exec
    libc_name = ctypes.util.find_library("c")
    if libc_name is None:
        return
    libc = ctypes.CDLL(libc_name, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


class ProcessExitedError(RuntimeError):
    """The process exited while we were waiting for it to become ready."""


class ManagedProcess:
    """A child process with a log file, a readiness check, stop/kill/restart.

    ``argv[0]`` may be a console-script name; it is resolved next to ``sys.executable`` first.
    ``env`` is added on top of ``os.environ`` (``inherit_env=False`` to start from an empty env).
    Output (stdout and stderr) is appended to ``log_path``; each start writes a marker line.
    """

    def __init__(
        self,
        argv: Sequence[str],
        *,
        name: str | None = None,
        env: Mapping[str, str] | None = None,
        inherit_env: bool = True,
        log_path: Path | str | None = None,
        cwd: Path | str | None = None,
        user: str | int | None = None,
        stop_signal: int = signal.SIGTERM,
    ) -> None:
        if not argv:
            raise ValueError("argv must not be empty")
        self.argv = [resolve_executable(argv[0]), *argv[1:]]
        self.name = name or Path(argv[0]).name
        self.env = dict(env or {})
        self.inherit_env = inherit_env
        if log_path is None:
            import tempfile

            log_dir = Path(tempfile.mkdtemp(prefix=f"{self.name}-"))
            log_path = log_dir / f"{self.name}.log"
        self.log_path = Path(log_path)
        self.cwd = None if cwd is None else str(cwd)
        self.user = user
        self.stop_signal = stop_signal
        self.proc: subprocess.Popen[bytes] | None = None
        self._log_file: IO[bytes] | None = None
        self.starts = 0

    # -- state ------------------------------------------------------------------------------

    @property
    def pid(self) -> int | None:
        return None if self.proc is None else self.proc.pid

    @property
    def returncode(self) -> int | None:
        return None if self.proc is None else self.proc.poll()

    @property
    def is_running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_text(self, tail_lines: int | None = None) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""
        if tail_lines is not None:
            text = "\n".join(text.splitlines()[-tail_lines:])
        return text

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name} pid={self.pid} running={self.is_running}>"

    # -- lifecycle --------------------------------------------------------------------------

    def _spawn(self) -> None:
        if self.is_running:
            raise RuntimeError(f"{self.name} is already running (pid {self.pid})")
        self._close_log()
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log_file = open(self.log_path, "ab")  # kept open while the child runs
        self.starts += 1
        self._log_file.write(
            f"\n===== start #{self.starts} of {self.name} at {time.strftime('%H:%M:%S')}: "
            f"{' '.join(self.argv)}\n".encode()
        )
        self._log_file.flush()
        env = dict(os.environ) if self.inherit_env else {}
        env.update(self.env)
        preexec: Callable[[], None] | None = None
        in_main_thread = threading.current_thread() is threading.main_thread()
        if sys.platform.startswith("linux") and in_main_thread:
            # PDEATHSIG fires when the *thread* that forked exits: only safe from the main thread.
            preexec = _pdeathsig_preexec
        kwargs: dict[str, Any] = {}
        if self.user is not None:
            kwargs["user"] = self.user
        self.proc = subprocess.Popen(
            self.argv,
            stdin=subprocess.DEVNULL,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=self.cwd,
            preexec_fn=preexec,
            start_new_session=True,  # Ctrl-C in the terminal does not hit the child directly
            **kwargs,
        )
        with _live_lock:
            _live.add(self)

    def check_ready(self) -> bool:
        """Override: return True once the process serves.  Default: it is running."""
        return self.is_running

    async def check_ready_async(self) -> bool:
        return await asyncio.to_thread(self.check_ready)

    def _raise_if_exited(self) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            raise ProcessExitedError(
                f"{self.name} exited with code {self.proc.returncode} before it was ready; "
                f"log {self.log_path}:\n{self.log_text(tail_lines=40)}"
            )

    def wait_ready(self, timeout: float = STARTUP_SECONDS) -> None:
        deadline = time.monotonic() + timeout
        while True:
            self._raise_if_exited()
            if self.check_ready():
                return
            if time.monotonic() > deadline:
                self.kill()
                raise TimeoutError(
                    f"{self.name} not ready after {timeout}s; log {self.log_path}:\n"
                    f"{self.log_text(tail_lines=40)}"
                )
            time.sleep(0.05)

    async def wait_ready_async(self, timeout: float = STARTUP_SECONDS) -> None:  # noqa: ASYNC109 - same API as the sync method
        deadline = time.monotonic() + timeout
        while True:
            self._raise_if_exited()
            if await self.check_ready_async():
                return
            if time.monotonic() > deadline:
                self.kill()
                raise TimeoutError(
                    f"{self.name} not ready after {timeout}s; log {self.log_path}:\n"
                    f"{self.log_text(tail_lines=40)}"
                )
            await asyncio.sleep(0.05)

    def start(self, timeout: float = STARTUP_SECONDS) -> ManagedProcess:
        """Start and block until ready (or raise with the log tail)."""
        self._spawn()
        self.wait_ready(timeout)
        return self

    async def astart(self, timeout: float = STARTUP_SECONDS) -> ManagedProcess:  # noqa: ASYNC109 - same API as the sync method
        """Start (the fork happens in the calling thread) and wait for readiness without
        blocking the event loop."""
        self._spawn()
        await self.wait_ready_async(timeout)
        return self

    def stop(self, timeout: float = 15.0) -> int | None:
        """Graceful stop: ``stop_signal`` (SIGTERM), wait ``timeout``, then SIGKILL.
        Returns the exit code (negative signal number if killed by a signal)."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(self.stop_signal)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._finish()
        return self.proc.returncode

    async def astop(self, timeout: float = 15.0) -> int | None:  # noqa: ASYNC109 - same API as the sync method
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(self.stop_signal)
            try:
                await asyncio.to_thread(self.proc.wait, timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                await asyncio.to_thread(self.proc.wait)
        self._finish()
        return self.proc.returncode

    def kill(self) -> int | None:
        """SIGKILL (simulates a crash: no graceful shutdown)."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
            self.proc.wait()
        self._finish()
        return self.proc.returncode

    def restart(self, timeout: float = STARTUP_SECONDS) -> ManagedProcess:
        self.stop()
        return self.start(timeout)

    async def arestart(self, timeout: float = STARTUP_SECONDS) -> ManagedProcess:  # noqa: ASYNC109 - same API as the sync method
        await self.astop()
        return await self.astart(timeout)

    def _finish(self) -> None:
        self._close_log()
        with _live_lock:
            _live.discard(self)

    def _close_log(self) -> None:
        if self._log_file is not None:
            with contextlib.suppress(OSError):
                self._log_file.close()
            self._log_file = None

    def __enter__(self) -> ManagedProcess:
        if not self.is_running:
            self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class ServiceProcess(ManagedProcess):
    """A Postroom service (or any console command) with an HTTP readiness URL.

    >>> svc = ServiceProcess(["postroom-smtp-ingress"], env={...},
    ...                      ready_url="http://127.0.0.1:8025/health/ready", log_path=tmp / "i.log")
    >>> svc.start(); ...; svc.stop(); svc.start()   # restart with the same env
    """

    def __init__(
        self,
        argv: Sequence[str] | str,
        *,
        ready_url: str | None = None,
        **kwargs: Any,
    ) -> None:
        if isinstance(argv, str):
            argv = [argv]
        super().__init__(argv, **kwargs)
        self.ready_url = ready_url

    def check_ready(self) -> bool:
        if self.ready_url is None:
            return self.is_running
        return http_status(self.ready_url, timeout=1.0) == 200

    async def check_ready_async(self) -> bool:
        if self.ready_url is None:
            return self.is_running
        return await http_status_async(self.ready_url, limit=1.0) == 200
