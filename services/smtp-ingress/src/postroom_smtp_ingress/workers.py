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
- The workers are children of the runtime's process supervisor
  (``postroom_runtime.supervisor``), the one ``postroom up`` uses: a worker that exits on its
  own is restarted (with a growing delay); a worker whose primary is gone (its stdin pipe,
  the supervisor's lifeline, closes) stops.
- Stop: the primary asks every worker to stop (SIGTERM) when it stops itself; each lets the
  mails already in DATA finish, as the primary does, and is killed only after the grace time.
- ``SMTP_MAX_CONNECTIONS_PER_IP`` is counted by each process on its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING

from pydantic import SecretStr

# The entry point imports this module before prometheus_client may be imported (which the
# runtime package does): the runtime's supervisor is imported where it is used.
if TYPE_CHECKING:
    from postroom_runtime.supervisor import Report, Supervised

    from .config import IngressSettings

log = logging.getLogger("postroom_smtp_ingress.workers")

WORKER_ENV = "POSTROOM_SMTP_WORKER"  # the worker's number (1..N-1), set by the primary
READY_LINE = "postroom-smtp-worker ready"  # a worker's stdout, once it serves SMTP
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


class WorkerPool:
    """The worker processes of a primary, each a supervised child: started once the primary
    listens, restarted when one exits, stopped with the primary."""

    def __init__(self, settings: IngressSettings, count: int) -> None:
        self.settings = settings
        self.count = count
        self.workers: list[Supervised] = []

    async def start(self, smtp_port: int, tls_port: int | None) -> None:
        env = with_settings(dict(os.environ), self.settings)
        env.update({
            "SMTP_PORT": str(smtp_port),  # the bound port, also when SMTP_PORT was 0
            "SMTP_TLS_PORT": str(tls_port or 0),
            "TENANTS_SEED_FILE": "",  # the primary seeds
            "HTTP_PORT": "0",  # not served by a worker
        })
        from postroom_runtime.supervisor import Supervised

        for number in range(1, self.count + 1):
            worker = Supervised(
                f"smtp-worker-{number}", [sys.executable, "-m", "postroom_smtp_ingress"],
                env={**env, WORKER_ENV: str(number)},
                report=lambda report, n=number: self._report(n, report),
                merge_stderr=False,  # its JSON logs go where the primary's go
                ready_line=READY_LINE,
                stdin_lifeline=True,  # it stops gracefully when the primary is gone
                parent_death_signal=None,
            )
            await worker.start()
            self.workers.append(worker)

    def _report(self, number: int, report: Report) -> None:
        where = {"smtp_worker": number, "pid": report.pid}
        if report.kind == "ready":
            log.info("SMTP worker serving", extra=where)
        elif report.kind == "restarting":
            log.error("SMTP worker exited, restarting it", extra={
                **where, "exit_code": report.returncode, "restart_in_s": report.delay})
        elif report.kind == "restart_failed":
            log.error("SMTP worker could not be started", extra={
                **where, "error": report.message, "restart_in_s": report.delay})
        elif report.kind == "killing":
            log.error("SMTP worker did not stop in time, killing it", extra=where)
        elif report.exited:
            if report.kind != "stopped":
                log.error("SMTP worker exited", extra={**where, "exit_code": report.returncode})
        if report.exited and report.pid is not None:
            _mark_dead(report.pid)

    async def check(self) -> None:
        """Readiness: every worker runs and serves SMTP."""
        down = [number for number in range(1, self.count + 1)
                if number > len(self.workers) or not self.workers[number - 1].ready]
        if down:
            raise RuntimeError(f"SMTP workers not serving: {down}")

    def signal_stop(self) -> None:
        """Ask every worker to stop (SIGTERM): each finishes the mails already in DATA."""
        for worker in self.workers:
            worker.request_stop()

    async def stop(self, grace: float) -> None:
        """Stop the workers; one still running after ``grace`` seconds is killed."""
        await asyncio.gather(*(worker.stop(timeout=grace) for worker in self.workers))


def _mark_dead(pid: int) -> None:
    """Drop a finished process's live gauges (its counters stay in the sums)."""
    if os.environ.get(MULTIPROC_ENV):
        from prometheus_client import multiprocess

        with contextlib.suppress(Exception):
            multiprocess.mark_process_dead(pid)


async def watch_primary(stop: Callable[[], None]) -> None:
    """In a worker: call ``stop`` when the primary is gone (its end of our stdin closes)."""
    from postroom_runtime.supervisor import wait_supervisor_gone

    if await wait_supervisor_gone():
        log.warning("primary process gone, stopping")
        stop()


def signal_ready() -> None:
    """In a worker: tell the primary that this process serves SMTP now."""
    from postroom_runtime.supervisor import announce_ready

    announce_ready(READY_LINE)
