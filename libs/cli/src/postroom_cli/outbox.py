"""``postroom outbox``: the mail the mailer captured instead of sending (no MAILER_RELAY_URL),
as Mailpit shows a developer what would have been sent.

It reads the capture directory (``<data dir>/outbox`` under ``postroom up``; the mailer's
``MAILER_CAPTURE_DIR`` elsewhere): one ``<delivery id>.eml`` per delivery, written atomically,
with the envelope in ``X-Postroom-Envelope-*`` fields on top. Reading files needs neither a
running mailer nor the network, works after the stack stopped, and keeps the CLI free of the
service's code; the mailer's HTTP API (``GET /outbox``) lists every delivery, sent or not.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from email import policy
from email.parser import BytesHeaderParser
from pathlib import Path
from typing import Annotated

import typer

from .common import echo_json, fail, table
from .stack import DEFAULT_DATA_DIR

DEFAULT_CAPTURE_DIR = DEFAULT_DATA_DIR / "outbox"

app = typer.Typer(help="Mail the mailer captured instead of sending (no relay configured).",
                  invoke_without_command=True)

DirOption = Annotated[
    Path,
    typer.Option("--dir", "-d", envvar="MAILER_CAPTURE_DIR", show_envvar=True, file_okay=False,
                 help="The capture directory (`postroom up`: <data dir>/outbox)."),
]


def _captured(directory: Path) -> list[dict[str, str]]:
    out = []
    for path in directory.glob("*.eml"):
        with path.open("rb") as f:
            headers = BytesHeaderParser(policy=policy.default).parse(f)
        at = datetime.fromtimestamp(path.stat().st_mtime, UTC)
        out.append({
            "time": at.strftime("%Y-%m-%d %H:%M:%S"),
            "delivery_id": path.stem,
            "to": str(headers.get("X-Postroom-Envelope-To", "")).replace("<", "").replace(
                ">", ""),
            "subject": str(headers.get("Subject", "")),
            "message_id": str(headers.get("Message-ID", "")),
            "file": str(path),
        })
    out.sort(key=lambda m: (m["time"], m["delivery_id"]))
    return out


@app.callback()
def list_cmd(
    ctx: typer.Context,
    directory: DirOption = DEFAULT_CAPTURE_DIR,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """List captured mails: time, recipients, subject, delivery id (oldest first)."""
    ctx.obj = {"dir": directory, **(ctx.obj if isinstance(ctx.obj, dict) else {})}
    if ctx.invoked_subcommand is not None:
        return
    mails = _captured(directory) if directory.is_dir() else []
    if as_json:
        echo_json(mails)
        return
    if not mails:
        typer.echo(f"no captured mail in {directory}")
        return
    typer.echo(table(["time", "to", "subject", "delivery id"],
                     [[m["time"], m["to"], m["subject"], m["delivery_id"]] for m in mails]))


@app.command("show")
def show_cmd(
    ctx: typer.Context,
    delivery_id: Annotated[str, typer.Argument(help="Delivery id (a unique prefix will do).")],
) -> None:
    """Print one captured mail as it would have been sent (envelope fields on top)."""
    directory: Path = ctx.obj["dir"]
    if "/" in delivery_id or delivery_id.startswith("."):
        fail(f"not a delivery id: {delivery_id!r}")
    matches = sorted(directory.glob(f"{delivery_id}*.eml")) if directory.is_dir() else []
    exact = [p for p in matches if p.stem == delivery_id]
    if exact:
        matches = exact
    if not matches:
        fail(f"no captured mail {delivery_id!r} in {directory}")
    if len(matches) > 1:
        fail(f"{delivery_id!r} is ambiguous: {', '.join(p.stem for p in matches[:5])}")
    data = matches[0].read_bytes()
    out = typer.get_binary_stream("stdout")
    out.write(data.replace(b"\r\n", os.linesep.encode()))
    out.flush()
