"""`postroom tenants ...` against a real nats-server."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import yaml

from postroom_contracts import Tenant
from postroom_runtime.tenants import list_tenants

SEED = """
tenants:
  - slug: acme
    name: ACME GmbH
    domains: [intake.example.com]
    mailboxes:
      orders: {actions: [extract]}
  - slug: globex
    domains: [mail.globex.example]
"""


def test_add_list_show_remove(cli, nats_url, with_js) -> None:
    result = cli("tenants", "list", nats_url=nats_url)
    assert result.exit_code == 0
    assert "no tenants" in result.output

    result = cli("tenants", "add", "acme", "--domain", "Intake.Example.com", "--name", "ACME GmbH",
                 "--mailbox", "orders=extract", "--mailbox", "support=extract,classify,reply",
                 nats_url=nats_url)
    assert result.exit_code == 0, result.output
    assert "added tenant acme" in result.output

    # what the services see: the registry in NATS KV
    stored = with_js(list_tenants)
    assert [t.slug for t in stored] == ["acme"]
    assert stored[0].domains == ["intake.example.com"]
    assert [a.value for a in stored[0].mailboxes["support"].actions] == [
        "extract", "classify", "reply"]

    result = cli("tenants", "list", nats_url=nats_url)
    assert result.exit_code == 0
    header, row = result.output.strip().splitlines()
    assert header.split() == ["SLUG", "NAME", "DOMAINS", "MAILBOXES", "USER_DOMAINS", "PBXS",
                              "ENABLED"]
    assert row.startswith("acme")
    assert "intake.example.com" in row
    assert "orders=extract; support=extract,classify,reply" in row

    result = cli("tenants", "show", "acme", nats_url=nats_url)
    assert result.exit_code == 0
    shown = yaml.safe_load(result.output)
    assert Tenant.model_validate(shown) == stored[0]

    result = cli("tenants", "list", "--json", nats_url=nats_url)
    assert [t["slug"] for t in json.loads(result.output)] == ["acme"]

    result = cli("tenants", "remove", "acme", nats_url=nats_url)
    assert result.exit_code == 0
    assert "removed tenant acme" in result.output
    assert with_js(list_tenants) == []

    result = cli("tenants", "remove", "acme", nats_url=nats_url)
    assert result.exit_code == 1
    assert "no tenant 'acme'" in result.output


def test_add_defaults_to_extract_for_every_mailbox(cli, nats_url, with_js) -> None:
    result = cli("tenants", "add", "globex", "-d", "mail.globex.example", nats_url=nats_url)
    assert result.exit_code == 0, result.output
    [tenant] = with_js(list_tenants)
    assert tenant.route("anything") is not None
    assert [a.value for a in tenant.route("anything").actions] == ["extract"]


def test_add_a_tenant_with_its_pbx_user_domains_and_voicemail(cli, nats_url, with_js) -> None:
    result = cli("tenants", "add", "acme", "-d", "intake.example.com", "-u", "ACME.example",
                 "--pbx", "office,network=192.0.2.10/32,network=2001:db8::10/128,language=de-DE",
                 "--pbx", "cloud,auth-user=acme-pbx,transcribe=no",
                 "--voicemail-to", "frontdesk@acme.example", nats_url=nats_url)
    assert result.exit_code == 0, result.output
    assert "user domains acme.example from PBX office, cloud" in result.output
    [acme] = with_js(list_tenants)
    assert acme.user_domains == ["acme.example"]
    office, cloud = acme.pbxs
    assert (office.networks, office.language, office.transcribe) \
        == (["192.0.2.10/32", "2001:db8::10/128"], "de-DE", True)
    assert (cloud.auth_user, cloud.transcribe, cloud.forward) == ("acme-pbx", False, "original")
    assert acme.voicemail is not None and acme.voicemail.forward_to == ["frontdesk@acme.example"]

    [row] = cli("tenants", "list", nats_url=nats_url).output.strip().splitlines()[1:]
    assert "acme.example" in row
    assert "office=192.0.2.10/32,2001:db8::10/128; cloud=auth:acme-pbx" in row
    shown = yaml.safe_load(cli("tenants", "show", "acme", nats_url=nats_url).output)
    assert Tenant.model_validate(shown) == acme

    # another tenant cannot claim acme's user domain, nor make it an intake domain
    for args in (["-d", "intake.example.com", "-u", "acme.example"], ["-d", "acme.example"]):
        result = cli("tenants", "add", "evil", *args, nats_url=nats_url)
        assert result.exit_code == 1 and "acme.example" in result.output, result.output
    assert [t.slug for t in with_js(list_tenants)] == ["acme"]

    for spec, message in [("p", "list its networks or its auth_user"),
                          ("p,network=0.0.0.0/0", "too wide for a PBX"),
                          ("p,auth-user=x,forward=map", "postroom tenants import"),
                          ("p,port=25", "expected NAME,key=value")]:
        result = cli("tenants", "add", "globex", "-d", "g.example", "--pbx", spec,
                     nats_url=nats_url)
        assert result.exit_code == 1 and message in result.output, (spec, result.output)


def test_add_refuses_to_overwrite_unless_replace(cli, nats_url, with_js) -> None:
    assert cli("tenants", "add", "acme", "-d", "a.example", nats_url=nats_url).exit_code == 0
    result = cli("tenants", "add", "acme", "-d", "b.example", nats_url=nats_url)
    assert result.exit_code == 1
    assert "tenant 'acme' exists (use --replace" in result.output
    assert with_js(list_tenants)[0].domains == ["a.example"]

    result = cli("tenants", "add", "acme", "-d", "b.example", "--replace", nats_url=nats_url)
    assert result.exit_code == 0
    assert with_js(list_tenants)[0].domains == ["b.example"]


def test_add_rejects_bad_input_with_a_clear_message(cli, nats_url, with_js) -> None:
    result = cli("tenants", "add", "acme", "-d", "a.example", "-m", "orders=extract,shred",
                 nats_url=nats_url)
    assert result.exit_code == 1
    assert "unknown action 'shred'" in result.output
    assert "extract, transcribe, classify, reply, forward" in result.output

    result = cli("tenants", "add", "acme", "-d", "a.example", "-m", "orders", nats_url=nats_url)
    assert result.exit_code == 1
    assert "expected NAME=action1,action2" in result.output

    result = cli("tenants", "add", "Not A Slug", "-d", "a.example", nats_url=nats_url)
    assert result.exit_code == 1
    assert "invalid tenant: slug" in result.output
    assert with_js(list_tenants) == []


def test_import_keeps_existing_tenants_unless_overwrite(cli, nats_url, with_js,
                                                        tmp_path: Path) -> None:
    seed = tmp_path / "tenants.yaml"
    seed.write_text(SEED)
    assert cli("tenants", "add", "acme", "-d", "own.example", nats_url=nats_url).exit_code == 0

    result = cli("tenants", "import", str(seed), nats_url=nats_url)
    assert result.exit_code == 0, result.output
    assert "imported 1 of 2 tenants" in result.output
    assert "1 kept as they were" in result.output
    by_slug = {t.slug: t for t in with_js(list_tenants)}
    assert by_slug["acme"].domains == ["own.example"]  # not overwritten
    assert by_slug["globex"].domains == ["mail.globex.example"]

    result = cli("tenants", "import", str(seed), "--overwrite", nats_url=nats_url)
    assert result.exit_code == 0
    assert "imported 2 of 2 tenants" in result.output
    assert {t.slug: t for t in with_js(list_tenants)}["acme"].domains == ["intake.example.com"]


def test_import_of_a_bad_file_names_the_file(cli, nats_url, tmp_path: Path) -> None:
    seed = tmp_path / "bad.yaml"
    seed.write_text("tenants:\n  - slug: acme\n")  # no domains
    result = cli("tenants", "import", str(seed), nats_url=nats_url)
    assert result.exit_code == 1
    assert f"tenant seed file {seed}" in result.output
    assert "domains" in result.output


def test_unreachable_nats_is_one_clear_line(cli) -> None:
    # a bound socket that never listens: the port is refused and nobody else can take it
    with socket.socket() as reserved:
        reserved.bind(("127.0.0.1", 0))
        url = f"nats://127.0.0.1:{reserved.getsockname()[1]}"
        result = cli("tenants", "list", nats_url=url)
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith(f"error: cannot reach NATS at {url}")
