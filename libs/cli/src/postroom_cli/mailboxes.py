"""``postroom mailboxes add|list|update|remove``: the mailboxes mailbox-sync reads (IMAP
accounts, provider accounts), through its HTTP API (``/api/v1/accounts``). Credentials go to
the service, which seals them in its store; they are never printed.

The token is ``--token`` / ``MAILBOX_SYNC_API_TOKEN``, else the file ``postroom up`` keeps in
its data dir (``<data dir>/mailbox-sync/api-token``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer

from .common import echo_json, fail, table
from .stack import DEFAULT_DATA_DIR

app = typer.Typer(help="Mailboxes mailbox-sync reads (IMAP accounts, provider push).",
                  no_args_is_help=True)

UrlOption = Annotated[str, typer.Option(
    "--url", envvar="MAILBOX_SYNC_URL", show_envvar=True,
    help="mailbox-sync's HTTP address.")]
TokenOption = Annotated[str | None, typer.Option(
    "--token", envvar="MAILBOX_SYNC_API_TOKEN", show_envvar=True,
    help="API token; default: the one `postroom up` keeps in --data-dir.")]
DataDirOption = Annotated[Path, typer.Option("--data-dir", file_okay=False,
                                             help="`postroom up`'s data dir (for the token).")]
DEFAULT_URL = "http://127.0.0.1:8031"


def _token(token: str | None, data_dir: Path) -> str:
    if token:
        return token
    path = data_dir / "mailbox-sync" / "api-token"
    try:
        return path.read_text().strip()
    except OSError:
        fail(f"no API token: pass --token or MAILBOX_SYNC_API_TOKEN ({path} not readable)")


def _call(method: str, url: str, token: str, path: str, **kwargs: Any) -> httpx.Response:
    try:
        response = httpx.request(method, url.rstrip("/") + path, timeout=15, trust_env=False,
                                 headers={"Authorization": f"Bearer {token}"}, **kwargs)
    except httpx.HTTPError as exc:
        fail(f"mailbox-sync at {url} is not reachable: {exc}")
    if response.status_code >= 400:
        try:
            body = response.json()
            detail = body.get("detail") or body.get("title") or response.text
        except ValueError:
            detail = response.text
        fail(f"mailbox-sync answered {response.status_code}: {detail}")
    return response


@app.command("add")
def add(
    tenant: Annotated[str, typer.Option("--tenant", help="Tenant slug, e.g. acme.")],
    host: Annotated[str, typer.Option("--host", help="IMAP server (provider: the API URL).")],
    username: Annotated[str, typer.Option("--user", help="Login name.")],
    mailbox: Annotated[str, typer.Option(
        "--mailbox", help="The tenant's mailbox its mail is for, e.g. support.")] = "support",
    password: Annotated[str | None, typer.Option(
        "--password", envvar="MAILBOX_PASSWORD",
        help="Password (or MAILBOX_PASSWORD); prompted when neither it nor --oauth-token "
             "is given.")] = None,
    oauth_token: Annotated[str | None, typer.Option(
        "--oauth-token", help="XOAUTH2 access token instead of a password.")] = None,
    port: Annotated[int | None, typer.Option("--port", help="Default 993 (ssl) / 143.")] = None,
    security: Annotated[str, typer.Option(
        "--security", help="ssl, starttls or none.")] = "ssl",
    address: Annotated[str | None, typer.Option(
        "--address", help="The mailbox's address; default: the user name.")] = None,
    folder: Annotated[list[str] | None, typer.Option(
        "--folder", help="Folder to watch (repeatable); default INBOX.")] = None,
    mode: Annotated[str, typer.Option("--mode", help="auto, idle or poll.")] = "auto",
    mark_seen: Annotated[bool, typer.Option("--mark-seen", help="Set \\Seen after ingest.")] = (
        False),
    flag: Annotated[str | None, typer.Option("--flag", help="Flag set after ingest.")] = None,
    move_to: Annotated[str | None, typer.Option(
        "--move-to", help="Folder mail is moved to after ingest.")] = None,
    since: Annotated[str | None, typer.Option(
        "--since", help="First-sync horizon, e.g. 2026-11-01.")] = None,
    account_id: Annotated[str | None, typer.Option("--id", help="Account id.")] = None,
    kind: Annotated[str, typer.Option(
        "--kind", help="imap, or provider (push + history API: --host is its URL, "
                       "--oauth-token its bearer token).")] = "imap",
    webhook_secret: Annotated[str | None, typer.Option(
        "--webhook-secret", help="provider: the key its push notifications are signed "
                                 "with.")] = None,
    no_verify: Annotated[bool, typer.Option(
        "--no-verify", help="Do not verify the server's certificate.")] = False,
    url: UrlOption = DEFAULT_URL,
    token: TokenOption = None,
    data_dir: DataDirOption = DEFAULT_DATA_DIR,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Add an IMAP (or provider) account: mailbox-sync starts watching it at once."""
    if password is None and oauth_token is None and kind == "imap":
        password = typer.prompt("password", hide_input=True)
    body = {"tenant": tenant, "mailbox": mailbox, "host": host, "port": port,
            "security": security, "username": username, "password": password,
            "oauth_token": oauth_token, "address": address, "folders": folder or ["INBOX"],
            "mode": mode, "mark_seen": mark_seen, "flag": flag, "move_to": move_to,
            "since": since, "tls_verify": not no_verify, "id": account_id, "kind": kind,
            "webhook_secret": webhook_secret}
    body = {k: v for k, v in body.items() if v is not None}
    created = _call("POST", url, _token(token, data_dir), "/api/v1/accounts", json=body).json()
    if as_json:
        echo_json(created)
        return
    typer.echo(f"added {created['id']}: {created['username']} at {created['host']}:"
               f"{created['port']} for {created['tenant']}/{created['mailbox']} "
               f"(folders {', '.join(created['folders'])})")


@app.command("list")
def list_cmd(
    url: UrlOption = DEFAULT_URL,
    token: TokenOption = None,
    data_dir: DataDirOption = DEFAULT_DATA_DIR,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """The accounts with their state, last sync and last error per folder."""
    accounts = _call("GET", url, _token(token, data_dir), "/api/v1/accounts").json()["accounts"]
    if as_json:
        echo_json(accounts)
        return
    if not accounts:
        typer.echo("no mailboxes (add one with `postroom mailboxes add`)")
        return
    rows = []
    for account in accounts:
        for folder in account["status"]["folders"] or [{}]:
            rows.append([account["id"], f"{account.get('tenant', '?')}/"
                         f"{account.get('mailbox', '?')}", account.get("username", ""),
                         folder.get("folder", ""), folder.get("state",
                                                              account["status"]["state"]),
                         folder.get("ingested", ""), folder.get("last_sync_at") or "",
                         folder.get("last_error") or account["status"]["last_error"] or ""])
    typer.echo(table(["id", "tenant/mailbox", "user", "folder", "state", "mails",
                      "last sync", "last error"], rows))


@app.command("update")
def update(
    account_id: Annotated[str, typer.Argument(help="Account id (see `postroom mailboxes list`).")],
    password: Annotated[bool, typer.Option(
        "--password", help="Give a new password (MAILBOX_PASSWORD, else prompted).")] = False,
    oauth_token: Annotated[str | None, typer.Option(
        "--oauth-token", help="A new XOAUTH2 access token (replaces the password).")] = None,
    host: Annotated[str | None, typer.Option("--host", help="Another server.")] = None,
    port: Annotated[int | None, typer.Option("--port")] = None,
    security: Annotated[str | None, typer.Option(
        "--security", help="ssl, starttls or none.")] = None,
    folder: Annotated[list[str] | None, typer.Option(
        "--folder", help="The folders to watch (repeatable): replaces the list.")] = None,
    mode: Annotated[str | None, typer.Option("--mode", help="auto, idle or poll.")] = None,
    enabled: Annotated[bool | None, typer.Option(
        "--enable/--disable", help="Watch the account, or stop without forgetting it.")] = None,
    url: UrlOption = DEFAULT_URL,
    token: TokenOption = None,
    data_dir: DataDirOption = DEFAULT_DATA_DIR,
) -> None:
    """Change an account (credentials, server, folders, mode, enabled); mailbox-sync restarts
    its watching at once, each folder from where it was."""
    body: dict[str, Any] = {"oauth_token": oauth_token, "host": host, "port": port,
                            "security": security, "folders": folder, "mode": mode,
                            "enabled": enabled}
    body = {k: v for k, v in body.items() if v is not None}
    if password:
        body["password"] = os.environ.get("MAILBOX_PASSWORD") or typer.prompt(
            "password", hide_input=True)
    if not body:
        fail("nothing to change: give at least one option (see --help)")
    changed = _call("PATCH", url, _token(token, data_dir), f"/api/v1/accounts/{account_id}",
                    json=body).json()
    state = "enabled" if changed["enabled"] else "disabled"
    typer.echo(f"updated {changed['id']}: {changed['username']} at {changed['host']}:"
               f"{changed['port']} ({state}, folders {', '.join(changed['folders'])})")


@app.command("remove")
def remove(
    account_id: Annotated[str, typer.Argument(help="Account id (see `postroom mailboxes list`).")],
    url: UrlOption = DEFAULT_URL,
    token: TokenOption = None,
    data_dir: DataDirOption = DEFAULT_DATA_DIR,
) -> None:
    """Stop reading an account and forget it (and its credentials)."""
    _call("DELETE", url, _token(token, data_dir), f"/api/v1/accounts/{account_id}")
    typer.echo(f"removed {account_id}")



