"""SMTP worker processes (``SMTP_WORKERS`` > 1): more cores for the DATA pipeline.

One smtp-ingress process runs the whole DATA pipeline on one event loop, and the GIL keeps it to
one core. With ``SMTP_WORKERS=N`` the process started by the entry point (the *primary*) runs as
before (migrations, tenant seed, HTTP health/metrics, an SMTP listener) and starts ``N - 1``
*workers*: the same service without HTTP, migrations or seeding, listening on the same SMTP
port(s). Every listener sets ``SO_REUSEPORT``, so the kernel spreads new connections over the
processes. Each process has its own NATS connection, store connections and tenant registry view;
the ``received_mails`` unique keys and JetStream's ``Nats-Msg-Id`` already make concurrent
copies safe across processes, as across replicas.

- Metrics: every process writes its samples to ``PROMETHEUS_MULTIPROC_DIR`` (set up by the
  entry point before ``prometheus_client`` is imported); the primary's ``/metrics`` serves the
  sum over all processes (``MultiProcessCollector``).
- Readiness: the primary's ``/health/ready`` has a ``workers`` check, failing while a worker is
  not running or has not reported that it is serving.
- A worker that exits on its own is restarted (with a growing delay); a worker whose primary
  is gone (its stdin pipe closes) stops.
- Stop: the primary asks every worker to stop (SIGTERM) when it stops itself; each lets the
  mails already in DATA finish, as the primary does, and is killed only after the grace time.
- ``SMTP_MAX_CONNECTIONS_PER_IP`` is counted by each process on its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING

from pydantic import SecretStr

if TYPE_CHECKING:  # (the entry point imports this module before prometheus_client)
    from .config import IngressSettings

log = logging.getLogger("postroom_smtp_ingress.workers")

WORKER_ENV = "POSTROOM_SMTP_WORKER"  # the worker's number (1..N-1), set by the primary
READY_LINE = b"postroom-smtp-worker ready\n"  # a worker's stdout, once it serves SMTP
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


def worker_number() -> int:
    """This process's worker number: 0 for the primary (or the only process)."""
    try:
        return int(os.environ.get(WORKER_ENV, "0"))
    except ValueError:
        return 0


def settings_env(settings: IngressSettings) -> dict[str, str | None]:
    """The settings as environment variables (None: to be unset), so that a worker runs with
    exactly the primary's configuration however the primary got it."""
    env: dict[str, str | None] = {}
    for name in type(settings).model_fields:
        value = getattr(settings, name)
        if isinstance(value, SecretStr):
            value = value.get_secret_value()
        if value is None:
            env[name.upper()] = None
        elif isinstance(value, bool):
            env[name.upper()] = "true" if value else "false"
        else:
            env[name.upper()] = str(value)
    return env


def with_settings(base: dict[str, str], settings: IngressSettings) -> dict[str, str]:
    """``base`` (an environment) with the settings' variables set or removed."""
    env = dict(base)
    for name, value in settings_env(settings).items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
    return env


class WorkerFilter(logging.Filter):
    """Adds ``worker`` (0 = primary) to every log record of a multi-process service."""

    def __init__(self, number: int) -> None:
        super().__init__()
        self.number = number

    def filter(self, record: logging.LogRecord) -> bool:
        record.worker = self.number
        return True


class Worker:
    def __init__(self, number: int) -> None:
        self.number = number
        self.process: asyncio.subprocess.Process | None = None
        self.ready = False
        self.starts = 0


class WorkerPool:
    """Starts, watches, restarts and stops the worker processes of a primary."""

    def __init__(self, settings: IngressSettings, count: int,
                 restart_delay: float = 1.0, max_restart_delay: float = 30.0) -> None:
        self.settings = settings
        self.workers = [Worker(n) for n in range(1, count + 1)]
        self.restart_delay = restart_delay
        self.max_restart_delay = max_restart_delay
        self._env: dict[str, str] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = False

    def start(self, smtp_port: int, tls_port: int | None) -> None:
        env = with_settings(dict(os.environ), self.settings)
        env.update({
            "SMTP_PORT": str(smtp_port),  # the bound port, also when SMTP_PORT was 0
            "SMTP_TLS_PORT": str(tls_port or 0),
            "TENANTS_SEED_FILE": "",  # the primary seeds
            "HTTP_PORT": "0",  # not served by a worker
        })
        self._env = env
        self._tasks = [asyncio.create_task(self._run(w), name=f"smtp-worker-{w.number}")
                       for w in self.workers]

    async def _spawn(self, worker: Worker) -> asyncio.subprocess.Process:
        env = dict(self._env)
        env[WORKER_ENV] = str(worker.number)
        return await asyncio.create_subprocess_exec(
            sys.executable, "-m", "postroom_smtp_ingress",
            env=env, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        )

    async def _run(self, worker: Worker) -> None:
        delay = self.restart_delay
        while not self._stopping:
            worker.ready = False
            try:
                proc = worker.process = await self._spawn(worker)
            except OSError:
                log.exception("SMTP worker could not be started",
                              extra={"smtp_worker": worker.number})
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.max_restart_delay)
                continue
            worker.starts += 1
            assert proc.stdout is not None
            line = await proc.stdout.readline()
            if line == READY_LINE:
                worker.ready = True
                delay = self.restart_delay
                log.info("SMTP worker serving", extra={"smtp_worker": worker.number,
                                                       "pid": proc.pid})
                await proc.stdout.read()  # until it exits (nothing else is written there)
            code = await proc.wait()
            worker.ready = False
            _mark_dead(proc.pid)
            if self._stopping:
                return
            log.error("SMTP worker exited, restarting it", extra={
                "smtp_worker": worker.number, "pid": proc.pid, "exit_code": code,
                "restart_in_s": delay})
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.max_restart_delay)

    async def check(self) -> None:
        """Readiness: every worker runs and serves SMTP."""
        down = [w.number for w in self.workers
                if not w.ready or w.process is None or w.process.returncode is not None]
        if down:
            raise RuntimeError(f"SMTP workers not serving: {down}")

    def signal_stop(self) -> None:
        """Ask every worker to stop (SIGTERM): each finishes the mails already in DATA."""
        self._stopping = True
        for w in self.workers:
            if w.process is not None and w.process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    w.process.send_signal(signal.SIGTERM)

    async def stop(self, grace: float) -> None:
        """Stop the workers; one still running after ``grace`` seconds is killed."""
        self.signal_stop()
        for w in self.workers:
            proc = w.process
            if proc is None or proc.returncode is not None:
                continue
            try:
                await asyncio.wait_for(proc.wait(), grace)
            except TimeoutError:
                log.error("SMTP worker did not stop in time, killing it",
                          extra={"smtp_worker": w.number, "pid": proc.pid})
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for w in self.workers:
            if w.process is not None:
                _mark_dead(w.process.pid)


def _mark_dead(pid: int) -> None:
    """Drop a finished process's live gauges (its counters stay in the sums)."""
    if os.environ.get(MULTIPROC_ENV):
        from prometheus_client import multiprocess

        with contextlib.suppress(Exception):
            multiprocess.mark_process_dead(pid)


async def watch_primary(stop: Callable[[], None]) -> None:
    """In a worker: call ``stop`` when the primary is gone (its end of our stdin closes)."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    try:
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    except Exception as exc:
        log.warning("cannot watch the primary process", extra={"error": str(exc)})
        return
    while await reader.read(4096):
        pass
    log.warning("primary process gone, stopping")
    stop()


def signal_ready() -> None:
    """In a worker: tell the primary that this process serves SMTP now."""
    os.write(sys.stdout.fileno(), READY_LINE)
