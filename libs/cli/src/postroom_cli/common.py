"""What every command shares: one-line errors, running a coroutine, NATS connections, tables."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import sys
from collections.abc import AsyncIterator, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any, NoReturn, TypeVar

import nats
import typer
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from pydantic import ValidationError

DEFAULT_NATS_PORT = 14222
DEFAULT_NATS_URL = f"nats://127.0.0.1:{DEFAULT_NATS_PORT}"

T = TypeVar("T")


class CliError(Exception):
    """A failure the user can act on: printed as one line ``error: ...``, exit code 1."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


@dataclass
class Globals:
    nats_url: str


def globals_of(ctx: typer.Context) -> Globals:
    obj = ctx.find_root().obj
    if isinstance(obj, Globals):
        return obj
    return Globals(nats_url=DEFAULT_NATS_URL)


def fail(message: str, exit_code: int = 1) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(exit_code)


def run_async(coro: Coroutine[Any, Any, T]) -> T:
    """Run a command's coroutine; a CliError becomes one line on stderr and exit code 1."""
    try:
        return asyncio.run(coro)
    except CliError as exc:
        fail(str(exc), exc.exit_code)


def describe(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror  # "Connection refused", not "[Errno 111] Connection refused"
    text = str(exc).strip()
    if isinstance(exc, TimeoutError | asyncio.TimeoutError) and not text:
        return "timed out"
    text = re.sub(r"^\[Errno -?\d+\] ", "", text.removeprefix("nats: "))
    return text or type(exc).__name__


def validation_message(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "value"
        parts.append(f"{loc}: {err['msg']}")
    return "; ".join(parts)


# --- NATS --------------------------------------------------------------------------------------


async def _quiet(*_: Any) -> None:
    """nats-py reports connection problems through callbacks; the CLI reports them once."""


async def connect_nats(url: str, *, connect_timeout: float = 3.0) -> NATS:
    """Connect once, without reconnecting; a CliError names the URL and the reason."""
    errors: list[BaseException] = []

    async def remember(exc: BaseException) -> None:
        errors.append(exc)

    try:
        return await nats.connect(
            url,
            connect_timeout=connect_timeout,
            allow_reconnect=False,
            # nats-py treats 0 as "no limit" when the first connect fails; 1 gives up after a
            # second attempt
            max_reconnect_attempts=1,
            reconnect_time_wait=0.1,
            error_cb=remember,
            disconnected_cb=_quiet,
            closed_cb=_quiet,
            name="postroom-cli",
        )
    except Exception as exc:
        reason = describe(errors[-1] if errors else exc)
        raise CliError(
            f"cannot reach NATS at {url}: {reason} "
            "(is `postroom up` running? set --nats-url or NATS_URL)"
        ) from None


@contextlib.asynccontextmanager
async def nats_connection(url: str, *, connect_timeout: float = 3.0) -> AsyncIterator[NATS]:
    nc = await connect_nats(url, connect_timeout=connect_timeout)
    try:
        yield nc
    finally:
        with contextlib.suppress(Exception):
            await nc.drain()
        with contextlib.suppress(Exception):
            await nc.close()


@contextlib.asynccontextmanager
async def jetstream(url: str) -> AsyncIterator[JetStreamContext]:
    """A JetStream context on ``url``, or a CliError saying why there is none."""
    async with nats_connection(url) as nc:
        js = nc.jetstream(timeout=5.0)
        try:
            await js.account_info()
        except Exception as exc:
            raise CliError(
                f"NATS at {url} answers but JetStream is not available: {describe(exc)}"
            ) from None
        yield js


# --- output ------------------------------------------------------------------------------------


def cell(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list | tuple):
        return ", ".join(cell(v) for v in value)
    return " ".join(str(value).split())  # one line per row, whatever the value holds


def table(headers: Sequence[str], rows: Sequence[Sequence[object]], max_width: int = 60) -> str:
    """A plain, fixed-column text table (no wrapping: grep- and copy-friendly)."""
    text_rows = [[cell(v) for v in row] for row in rows]
    for row in text_rows:
        for i, value in enumerate(row):
            if len(value) > max_width:
                row[i] = value[: max_width - 1] + "…"
    widths = [len(h) for h in headers]
    for row in text_rows:
        widths = [max(w, len(v)) for w, v in zip(widths, row, strict=True)]
    lines = ["  ".join(h.upper().ljust(w) for h, w in zip(headers, widths, strict=True))]
    for row in text_rows:
        lines.append("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)))
    return "\n".join(line.rstrip() for line in lines)


def echo_json(value: object) -> None:
    typer.echo(json.dumps(value, indent=2, ensure_ascii=False, default=str))


def echo_line(text: str) -> None:
    """Print and flush (``tail`` output is read line by line by other programs)."""
    try:
        sys.stdout.write(text + "\n")
        sys.stdout.flush()
    except BrokenPipeError:  # `postroom tail | head`
        raise typer.Exit(0) from None
