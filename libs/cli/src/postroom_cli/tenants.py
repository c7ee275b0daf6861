"""``postroom tenants``: the tenant registry in the NATS KV bucket ``postroom-tenants``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, NoReturn

import typer
import yaml
from pydantic import ValidationError

from postroom_contracts import Action, MailboxRoute, Pbx, Tenant, TenantSeed
from postroom_runtime.tenants import (
    delete_tenant,
    list_tenants,
    load_seed,
    put_tenant,
    seed_tenants,
)

from .common import (
    CliError,
    echo_json,
    fail,
    globals_of,
    jetstream,
    run_async,
    table,
    validation_message,
)

app = typer.Typer(
    help="Manage the tenant registry (who receives mail at which address, and what happens).",
    no_args_is_help=True,
)

JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]


def _mailboxes_cell(tenant: Tenant) -> str:
    return "; ".join(
        f"{name}={','.join(a.value for a in route.actions) or '-'}"
        for name, route in tenant.mailboxes.items()
    )


def _pbxs_cell(tenant: Tenant) -> str:
    return "; ".join(
        p.name + "=" + ",".join([*p.networks, *([f"auth:{p.auth_user}"] if p.auth_user else [])])
        for p in tenant.pbxs
    )


def _tenant_dict(tenant: Tenant) -> dict[str, object]:
    """As stored in the registry (PBX fields only when the tenant uses them)."""
    value: dict[str, object] = json.loads(tenant.registry_json())
    return value


PBX_KEYS = ("network", "auth-user", "transcribe", "language", "forward")


def parse_pbx(spec: str) -> Pbx:
    """``office,network=10.1.2.3/32,auth-user=acme-pbx,transcribe=no,language=de-DE`` -> Pbx.
    (An address map needs the YAML form: `postroom tenants import`.)"""
    name, *pairs = [part.strip() for part in spec.split(",")]
    networks: list[str] = []
    fields: dict[str, object] = {"name": name, "networks": networks}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or key not in PBX_KEYS:
            raise CliError(f"--pbx {spec!r}: expected NAME,key=value,... with keys "
                           f"{', '.join(PBX_KEYS)}")
        if key == "network":
            networks.append(value)
        elif key == "transcribe":
            if value.lower() not in ("yes", "no", "true", "false", "on", "off"):
                raise CliError(f"--pbx {spec!r}: transcribe=yes or transcribe=no")
            fields["transcribe"] = value.lower() in ("yes", "true", "on")
        else:
            fields[key.replace("-", "_")] = value
    if fields.get("forward") == "map":
        raise CliError(f"--pbx {spec!r}: forward=map needs an address_map; write the tenant "
                       "in YAML and use `postroom tenants import`")
    try:
        return Pbx.model_validate(fields)
    except ValidationError as exc:
        raise CliError(f"--pbx {spec!r}: {validation_message(exc)}") from None


def parse_mailbox(spec: str) -> tuple[str, MailboxRoute]:
    """``orders=extract,classify`` -> ("orders", MailboxRoute(actions=[extract, classify]))."""
    name, sep, actions_text = spec.partition("=")
    name = name.strip()
    if not sep or not name:
        raise CliError(f"--mailbox {spec!r}: expected NAME=action1,action2 (e.g. orders=extract)")
    valid = [a.value for a in Action]
    actions = []
    for raw in actions_text.split(","):
        word = raw.strip().lower()
        if not word:
            continue
        if word not in valid:
            raise CliError(
                f"--mailbox {spec!r}: unknown action {word!r} (valid: {', '.join(valid)})"
            )
        actions.append(Action(word))
    return name, MailboxRoute(actions=actions)


def raise_missing(slug: str) -> NoReturn:
    fail(f"no tenant {slug!r} (see `postroom tenants list`)")


@app.command("list")
def list_cmd(ctx: typer.Context, as_json: JsonFlag = False) -> None:
    """List every tenant."""

    async def go() -> list[Tenant]:
        async with jetstream(globals_of(ctx).nats_url) as js:
            return await list_tenants(js)

    tenants = run_async(go())
    if as_json:
        echo_json([_tenant_dict(t) for t in tenants])
        return
    if not tenants:
        typer.echo("no tenants (add one with `postroom tenants add` or `postroom tenants import`)")
        return
    typer.echo(
        table(
            ["slug", "name", "domains", "mailboxes", "user_domains", "pbxs", "enabled"],
            [[t.slug, t.name, t.domains, _mailboxes_cell(t), t.user_domains or "-",
              _pbxs_cell(t) or "-", t.enabled] for t in tenants],
            max_width=80,
        )
    )


@app.command("show")
def show_cmd(
    ctx: typer.Context,
    slug: Annotated[str, typer.Argument(help="Tenant slug, e.g. acme.")],
    as_json: JsonFlag = False,
) -> None:
    """Show one tenant (YAML, in the seed file's format)."""

    async def go() -> Tenant | None:
        async with jetstream(globals_of(ctx).nats_url) as js:
            return next((t for t in await list_tenants(js) if t.slug == slug), None)

    tenant = run_async(go())
    if tenant is None:
        raise_missing(slug)
    if as_json:
        echo_json(_tenant_dict(tenant))
    else:
        typer.echo(yaml.safe_dump(_tenant_dict(tenant), sort_keys=False).rstrip())


@app.command("add")
def add_cmd(
    ctx: typer.Context,
    slug: Annotated[str, typer.Argument(help="Tenant slug (lower case, digits, dashes).")],
    domain: Annotated[
        list[str],
        typer.Option("--domain", "-d", help="Domain that receives mail for it (repeatable)."),
    ],
    mailbox: Annotated[
        list[str] | None,
        typer.Option(
            "--mailbox",
            "-m",
            help="NAME=action1,action2 (repeatable); actions: "
            + ", ".join(a.value for a in Action)
            + ". NAME * matches every mailbox. Default: *=extract.",
        ),
    ] = None,
    user_domain: Annotated[
        list[str] | None,
        typer.Option("--user-domain", "-u",
                     help="The tenant's own mail domain, relayed for its PBXs (repeatable)."),
    ] = None,
    pbx: Annotated[
        list[str] | None,
        typer.Option(
            "--pbx",
            help="NAME,network=CIDR,auth-user=ID,transcribe=yes|no,language=en-US,"
            "forward=original (repeatable; network repeatable; a network or an auth-user "
            "is required).",
        ),
    ] = None,
    voicemail_to: Annotated[
        list[str] | None,
        typer.Option("--voicemail-to",
                     help="Address voicemail+SLUG@DOMAIN forwards to (repeatable)."),
    ] = None,
    name: Annotated[str, typer.Option("--name", help="Display name.")] = "",
    disabled: Annotated[bool, typer.Option("--disabled", help="Add it disabled.")] = False,
    replace: Annotated[
        bool, typer.Option("--replace", help="Overwrite a tenant with this slug.")
    ] = False,
) -> None:
    """Add a tenant."""
    fields: dict[str, object] = {"slug": slug, "name": name, "domains": domain,
                                 "enabled": not disabled}
    if mailbox:
        routes: dict[str, MailboxRoute] = {}
        for spec in mailbox:
            try:
                box, route = parse_mailbox(spec)
            except CliError as exc:
                fail(str(exc))
            routes[box] = route
        fields["mailboxes"] = routes
    if user_domain:
        fields["user_domains"] = user_domain
    if pbx:
        try:
            fields["pbxs"] = [parse_pbx(spec) for spec in pbx]
        except CliError as exc:
            fail(str(exc))
    if voicemail_to:
        fields["voicemail"] = {"forward_to": voicemail_to}
    try:
        tenant = Tenant.model_validate(fields)
    except ValidationError as exc:
        fail(f"invalid tenant: {validation_message(exc)}")

    async def go() -> None:
        async with jetstream(globals_of(ctx).nats_url) as js:
            registered = await list_tenants(js)
            if not replace and any(t.slug == slug for t in registered):
                raise CliError(f"tenant {slug!r} exists (use --replace to overwrite it)")
            # a user domain belongs to one tenant and is nobody's intake domain
            mine = {*tenant.domains, *tenant.user_domains}
            sharing = [t for t in registered if t.slug != slug
                       and mine & {*t.domains, *t.user_domains}]
            try:
                TenantSeed(tenants=[*sharing, tenant])
            except ValidationError as exc:
                raise CliError(f"invalid tenant: {validation_message(exc)}") from None
            await put_tenant(js, tenant)

    run_async(go())
    relay = (f"; user domains {', '.join(tenant.user_domains)} from PBX "
             f"{', '.join(p.name for p in tenant.pbxs) or '(none)'}"
             if tenant.user_domains else "")
    typer.echo(f"added tenant {tenant.slug}: {', '.join(tenant.domains)} "
               f"[{_mailboxes_cell(tenant)}]{relay}")


@app.command("remove")
def remove_cmd(
    ctx: typer.Context,
    slug: Annotated[str, typer.Argument(help="Tenant slug.")],
) -> None:
    """Remove a tenant (its mail is refused from then on)."""

    async def go() -> bool:
        async with jetstream(globals_of(ctx).nats_url) as js:
            return await delete_tenant(js, slug)

    if not run_async(go()):
        raise_missing(slug)
    typer.echo(f"removed tenant {slug}")


@app.command("import")
def import_cmd(
    ctx: typer.Context,
    file: Annotated[Path, typer.Argument(help="YAML seed file (tenants: [...]).")],
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace tenants that exist already.")
    ] = False,
) -> None:
    """Import tenants from a YAML seed file; existing ones are kept unless --overwrite."""
    try:
        tenants = load_seed(file)
    except ValueError as exc:
        fail(str(exc))

    async def go() -> int:
        async with jetstream(globals_of(ctx).nats_url) as js:
            return await seed_tenants(js, tenants, overwrite=overwrite)

    written = run_async(go())
    kept = len(tenants) - written
    message = f"imported {written} of {len(tenants)} tenants from {file}"
    if kept:
        message += f" ({kept} kept as they were; --overwrite replaces them)"
    typer.echo(message)
