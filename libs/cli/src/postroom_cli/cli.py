"""The ``postroom`` command line: the embedded stack, test mail, events, documents, DLQ, tenants,
captured outgoing mail."""

from __future__ import annotations

import asyncio
import os
import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from . import classify as classify_cli
from . import dlq, outbox, replay, tenants
from . import mailboxes as mailboxes_cli
from .common import DEFAULT_NATS_URL, Globals, fail, globals_of
from .documents import documents
from .send import send
from .services import BY_NAME, SERVICES
from .stack import (
    DEFAULT_DATA_DIR,
    DEFAULT_MONITOR_PORT,
    DEFAULT_SMTP_PORT,
    Stack,
    StackConfig,
    StackError,
    default_tenants_file,
    read_env_file,
)
from .tail import tail
from .transcribe import transcribe

app = typer.Typer(
    name="postroom",
    help="Postroom: business mail in, typed events out. Start with `postroom up`.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


@app.callback()
def root(
    ctx: typer.Context,
    nats_url: Annotated[
        str,
        typer.Option("--nats-url", envvar="NATS_URL", show_envvar=True,
                     help="NATS server of the commands that talk to NATS (`postroom up` "
                          "starts its own at this default)."),
    ] = DEFAULT_NATS_URL,
) -> None:
    ctx.obj = Globals(nats_url=nats_url)


ServiceName = StrEnum("ServiceName", {s.name: s.name for s in SERVICES})  # type: ignore[misc]
LogLevel = StrEnum("LogLevel", {v: v for v in ("DEBUG", "INFO", "WARNING", "ERROR")})  # type: ignore[misc]


@app.command(
    help="Run the embedded stack: nats-server and every service, on this machine, in one "
    "command.\n\n"
    "Each service gets NATS_URL, DATABASE_URL (SQLite in the data dir), HTTP_HOST, HTTP_PORT, "
    "BLOB_BACKEND=nats, LOG_LEVEL and SMTP_HOST/SMTP_PORT. Other variables of your environment "
    "and of --env-file are passed on and win over those defaults, except the stack's wiring "
    "(NATS_URL, HTTP_PORT, DATABASE_URL, OTEL_SERVICE_NAME).\n\n"
    "A crashed service is restarted with backoff. Ctrl-C stops the services, then nats-server.",
)
def up(
    data_dir: Annotated[
        Path, typer.Option("--data-dir", help="JetStream store, SQLite stores, logs.",
                           file_okay=False)
    ] = DEFAULT_DATA_DIR,
    nats_port: Annotated[int, typer.Option("--nats-port", min=1, max=65535,
                                           help="NATS client port.")] = 14222,
    nats_monitor_port: Annotated[
        int, typer.Option("--nats-monitor-port", min=1, max=65535,
                          help="NATS HTTP monitoring port (/healthz, /varz).")
    ] = DEFAULT_MONITOR_PORT,
    http_port_base: Annotated[
        int, typer.Option("--http-port-base", min=1, max=65000,
                          help="HTTP port of the first service; the others follow "
                               "(smtp-ingress 8025, attachment-extractor 8026, ...).")
    ] = 8025,
    smtp_host: Annotated[str, typer.Option("--smtp-host", envvar="SMTP_HOST",
                                           help="Address the SMTP server binds to.")] = (
        "127.0.0.1"
    ),
    smtp_port: Annotated[int, typer.Option("--smtp-port", envvar="SMTP_PORT", min=1,
                                           max=65535, help="SMTP port.")] = DEFAULT_SMTP_PORT,
    tenants_file: Annotated[
        Path | None,
        typer.Option("--tenants", dir_okay=False,
                     help="Seed file; tenants not registered yet are added. "
                          "Default: deploy/tenants.yaml of the repository."),
    ] = None,
    log_level: Annotated[LogLevel, typer.Option("--log-level", envvar="LOG_LEVEL",
                                                case_sensitive=False)] = LogLevel.INFO,
    env_file: Annotated[
        Path | None,
        typer.Option("--env-file", dir_okay=False,
                     help="KEY=VALUE file passed to every service (wins over the environment)."),
    ] = None,
    skip: Annotated[
        list[ServiceName] | None,
        typer.Option("--skip", help="Do not start this service (repeatable), e.g. to run it "
                                    "yourself with `postroom run`."),
    ] = None,
    stop_timeout: Annotated[float, typer.Option(
        "--stop-timeout", min=0.1, help="Seconds a process gets to stop before SIGKILL.")] = 10.0,
    ready_timeout: Annotated[float, typer.Option(
        "--ready-timeout", min=1, help="Warn when a service is not ready after this long.")] = 60.0,
) -> None:
    try:
        extra_env = read_env_file(env_file) if env_file else {}
    except StackError as exc:
        fail(str(exc))
    cfg = StackConfig(
        data_dir=data_dir,
        nats_port=nats_port,
        nats_monitor_port=nats_monitor_port,
        http_port_base=http_port_base,
        smtp_host=smtp_host,
        smtp_port=smtp_port,
        log_level=log_level.value.upper(),
        tenants_file=(tenants_file.resolve() if tenants_file else default_tenants_file()),
        tenants_required=tenants_file is not None,
        stop_timeout=stop_timeout,
        ready_timeout=ready_timeout,
        skip=tuple(s.value for s in skip or ()),
        extra_env=extra_env,
    )
    code = asyncio.run(Stack(cfg).run())
    raise typer.Exit(code)


@app.command(
    help="Run one service in the foreground, e.g. next to `postroom up --skip <service>`.\n\n"
    "It gets the defaults `postroom up` would give it (HTTP port, SQLite store in the data dir, "
    "the --nats-url); any variable set in the environment wins, except NATS_URL.",
)
def run(
    ctx: typer.Context,
    service: Annotated[ServiceName, typer.Argument(help="The service to run.")],
    data_dir: Annotated[Path, typer.Option("--data-dir", file_okay=False,
                                           help="Where its SQLite store goes by default.")] = (
        DEFAULT_DATA_DIR
    ),
) -> None:
    svc = BY_NAME[service.value]
    missing = svc.entry_point_missing()
    if missing:
        fail(f"cannot run {svc.name}: {missing}")
    env = dict(os.environ)
    env["NATS_URL"] = globals_of(ctx).nats_url
    env.setdefault("OTEL_SERVICE_NAME", svc.name)
    env.setdefault("HTTP_HOST", "127.0.0.1")
    env.setdefault("HTTP_PORT", str(svc.http_port))
    env.setdefault("BLOB_BACKEND", "nats")
    if "DATABASE_URL" not in env:
        data_dir.mkdir(parents=True, exist_ok=True)
        env["DATABASE_URL"] = f"sqlite+aiosqlite:///{data_dir.resolve() / f'{svc.store_name}.db'}"
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, "-m", svc.module], env)


app.command()(send)
app.command()(tail)
app.command()(documents)
app.command()(transcribe)
app.command()(classify_cli.classify)
app.add_typer(classify_cli.app, name="classifier")
app.add_typer(dlq.app, name="dlq")
app.add_typer(outbox.app, name="outbox")
app.add_typer(replay.app, name="replay")
app.add_typer(tenants.app, name="tenants")
app.add_typer(mailboxes_cli.app, name="mailboxes")
