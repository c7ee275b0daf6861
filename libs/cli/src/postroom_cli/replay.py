"""``postroom replay console``: rebuild the console's projection from the stream.

The console drops its read model (not its API keys or corrections) and reads POSTROOM_EVENTS
again from the first message; this command asks for it with the admin key and waits until the
projection has caught up with the stream's last sequence at the time of the request.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Annotated

import httpx
import typer

from .common import CliError, fail, run_async
from .stack import CONSOLE_KEY_FILE, DEFAULT_DATA_DIR

app = typer.Typer(help="Rebuild a read model from the event stream.", no_args_is_help=True)

DEFAULT_CONSOLE_URL = "http://127.0.0.1:8030"


def admin_key(key: str | None, data_dir: Path) -> str:
    """--key / CONSOLE_ADMIN_KEY, else the key `postroom up` keeps in the data dir."""
    if key:
        return key
    path = data_dir / CONSOLE_KEY_FILE
    try:
        found = path.read_text().strip()
    except OSError:
        found = ""
    if not found:
        raise CliError(f"no admin key: pass --key or set CONSOLE_ADMIN_KEY (no {path} either)")
    return found


async def rebuild(url: str, key: str, within: float, echo: bool = True) -> dict[str, object]:
    headers = {"Authorization": f"Bearer {key}"}
    async with httpx.AsyncClient(base_url=url.rstrip("/"), headers=headers, timeout=30,
                                 trust_env=False) as http:
        try:
            response = await http.post("/api/v1/admin/rebuild")
        except httpx.HTTPError as exc:
            raise CliError(f"cannot reach the console at {url}: {exc}") from None
        if response.status_code in (401, 403):
            raise CliError(f"the console refused the key ({response.status_code}): an admin "
                           "key is needed")
        if response.status_code != 202:
            raise CliError(f"rebuild failed: {response.status_code} {response.text[:300]}")
        target = int(response.json()["stream_last"])
        if echo:
            typer.echo(f"rebuilding the console's projection: {target} events to read")
        started = time.monotonic()
        last_print = 0.0
        while True:
            state = (await http.get("/api/v1/admin/projection")).json()
            position = int(state["position"])
            now = time.monotonic()
            if position >= target:
                if echo:
                    typer.echo(f"caught up: position {position} in {now - started:.1f}s"
                               + (f", {len(state['failures'])} event(s) not applied (see "
                                  "/api/v1/admin/projection)" if state.get("failures") else ""))
                return dict(state)
            if now - started > within:
                raise CliError(f"not caught up after {within:g}s (position {position} of "
                               f"{target})")
            if echo and now - last_print > 2:
                typer.echo(f"  position {position} of {target}")
                last_print = now
            await asyncio.sleep(0.2)


@app.command(help="Drop the console's read model and build it again from the stream; waits "
             "until it has caught up.")
def console(
    url: Annotated[str, typer.Option("--url", envvar="CONSOLE_URL", show_envvar=True,
                                     help="The console's address.")] = DEFAULT_CONSOLE_URL,
    key: Annotated[str | None, typer.Option(
        "--key", envvar="CONSOLE_ADMIN_KEY", show_envvar=True,
        help="An admin key; default: the one `postroom up` keeps in the data dir.")] = None,
    data_dir: Annotated[Path, typer.Option("--data-dir", file_okay=False,
                                           help="`postroom up`'s data dir (its admin key).")] = (
        DEFAULT_DATA_DIR),
    timeout: Annotated[float, typer.Option("--timeout", help="Seconds to wait.")] = 3600.0,
) -> None:
    try:
        found = admin_key(key, data_dir)
    except CliError as exc:
        fail(str(exc), exc.exit_code)
    run_async(rebuild(url, found, timeout))
