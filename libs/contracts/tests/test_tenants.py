"""The tenant registry model: PBXs, user domains, voicemail forwarding, and records written
before them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from postroom_contracts import Pbx, Tenant, TenantSeed

ROOT = Path(__file__).resolve().parents[3]


def tenant(**fields: object) -> Tenant:
    return Tenant.model_validate({"slug": "acme", "domains": ["intake.example.com"], **fields})


def test_a_record_written_before_pbxs_existed_reads_as_before() -> None:
    # the JSON value of a KV entry as services stored it before user domains and PBXs
    old = ('{"slug":"acme","name":"ACME","domains":["intake.example.com"],'
           '"mailboxes":{"orders":{"actions":["extract"],"forward_to":[],"description":""}},'
           '"enabled":true}')
    acme = Tenant.model_validate_json(old)
    assert (acme.user_domains, acme.pbxs, acme.voicemail) == ([], [], None)
    assert acme.route("orders") is not None and acme.route("voicemail") is None
    # and is written back byte for byte, so services that predate PBXs still read it
    assert acme.registry_json() == old.encode()
    with_pbx = tenant(user_domains=["acme.example"],
                      pbxs=[{"name": "pbx", "networks": ["10.1.2.3/32"]}])
    assert json.loads(with_pbx.registry_json())["pbxs"][0]["name"] == "pbx"
    assert Tenant.model_validate_json(with_pbx.registry_json()) == with_pbx


def test_a_pbx_is_recognised_by_network_or_by_its_auth_identity() -> None:
    acme = tenant(user_domains=["ACME.Example."], pbxs=[
        {"name": "office", "networks": ["192.0.2.0/28", "2001:db8::/64"]},
        {"name": "cloud", "auth_user": "acme-pbx", "networks": ["192.0.2.5/32"]},
    ])
    assert acme.user_domains == ["acme.example"]
    assert acme.pbxs[0].networks == ["192.0.2.0/28", "2001:db8::/64"]

    def found(ip: str, user: str | None = None) -> tuple[str, str] | None:
        match = acme.pbx_for(ip, user)
        return None if match is None else (match[0].name, match[1])

    assert found("192.0.2.14") == ("office", "network")
    assert found("2001:db8::42") == ("office", "network")
    assert found("192.0.2.16") is None and found("198.51.100.1") is None
    assert found("198.51.100.1", "acme-pbx") == ("cloud", "auth")
    assert found("192.0.2.5", "acme-pbx") == ("cloud", "auth")  # identity before network
    assert found("198.51.100.1", "someone-else") is None
    assert found("not an ip") is None


def test_forwarding_to_the_original_or_through_the_address_map() -> None:
    original = Pbx(name="a", networks=["10.0.0.1/32"])
    assert original.forward_address("Alice@ACME.example") == "Alice@ACME.example"
    mapped = Pbx.model_validate({
        "name": "b", "auth_user": "pbx", "forward": "map",
        "address_map": {"Boss@ACME.example": "ceo@acme.example",
                        "@acme.example": "@Mail.Acme.Example."}})
    assert mapped.address_map == {"boss@acme.example": "ceo@acme.example",
                                  "@acme.example": "@mail.acme.example"}
    assert mapped.forward_address("boss@acme.example") == "ceo@acme.example"
    assert mapped.forward_address("BOSS@Acme.Example") == "ceo@acme.example"
    assert mapped.forward_address("alice@acme.example") == "alice@mail.acme.example"
    assert mapped.forward_address("alice@acme-group.example") is None


@pytest.mark.parametrize(("pbx", "message"), [
    ({"name": "p"}, "list its networks or its auth_user"),
    ({"name": "p", "networks": ["0.0.0.0/0"]}, "too wide for a PBX"),
    ({"name": "p", "networks": ["10.0.0.0/7"]}, "too wide for a PBX"),
    ({"name": "p", "networks": ["::/0"]}, "too wide for a PBX"),
    ({"name": "p", "networks": ["pbx.acme.example"]}, "is not a network"),
    ({"name": "p", "auth_user": "a:b"}, "SMTP_AUTH_USERS"),
    ({"name": "p", "auth_user": "x", "forward": "map"}, "needs an address_map"),
    ({"name": "p", "auth_user": "x", "address_map": {"@a.example": "b@c.example"}},
     "a domain maps to a domain"),
    ({"name": "p", "auth_user": "x", "address_map": {"alice": "b@c.example"}}, "not an address"),
    ({"name": "p", "auth_user": "x", "language": "english"}, "language"),
    ({"name": "P B X", "auth_user": "x"}, "name"),
    ({"name": "p", "auth_user": "x", "relay_anything": True}, "relay_anything"),
])
def test_a_pbx_entry_that_would_be_wrong_or_too_open_is_refused(
    pbx: dict[str, object], message: str
) -> None:
    with pytest.raises(ValidationError, match=message):
        Pbx.model_validate(pbx)


def test_tenant_consistency() -> None:
    with pytest.raises(ValidationError, match="not both"):
        tenant(user_domains=["intake.example.com"])
    with pytest.raises(ValidationError, match="unique"):
        tenant(pbxs=[{"name": "p", "auth_user": "a"}, {"name": "p", "auth_user": "b"}])
    with pytest.raises(ValidationError, match="not a domain name"):
        tenant(user_domains=["acme"])
    with pytest.raises(ValidationError, match="forward_to"):
        tenant(voicemail={"forward_to": []})


def test_the_voicemail_mailbox_is_routed_when_the_tenant_forwards_voicemail() -> None:
    acme = tenant(mailboxes={"orders": {}},
                  voicemail={"forward_to": ["Frontdesk@ACME.example"]})
    assert acme.voicemail is not None
    assert acme.voicemail.forward_to == ["Frontdesk@acme.example"]
    assert (acme.voicemail.mailbox, acme.voicemail.language, acme.voicemail.senders) \
        == ("voicemail", "en-US", "any")
    route = acme.route("Voicemail")
    assert route is not None and [a.value for a in route.actions] == ["transcribe", "forward"]
    # an explicit mailbox entry keeps its own actions
    listed = tenant(mailboxes={"voicemail": {"actions": ["forward"]}},
                    voicemail={"forward_to": ["frontdesk@acme.example"]})
    route = listed.route("voicemail")
    assert route is not None and [a.value for a in route.actions] == ["forward"]


def test_a_user_domain_belongs_to_one_tenant_in_a_seed() -> None:
    def seed(*tenants: dict[str, object]) -> TenantSeed:
        return TenantSeed.model_validate({"tenants": list(tenants)})

    acme = {"slug": "acme", "domains": ["intake.example.com"], "user_domains": ["acme.example"]}
    with pytest.raises(ValidationError, match="claimed by tenants 'acme' and 'evil'"):
        seed(acme, {"slug": "evil", "domains": ["intake.example.com"],
                    "user_domains": ["ACME.example"]})
    with pytest.raises(ValidationError, match="also an intake domain"):
        seed(acme, {"slug": "globex", "domains": ["acme.example"]})
    assert len(seed(acme, {"slug": "globex", "domains": ["intake.example.com"],
                           "user_domains": ["globex.example"]}).tenants) == 2


def test_the_demo_seed_has_acmes_pbx_on_loopback_and_its_voicemail_forwarding() -> None:
    seed = TenantSeed.model_validate(yaml.safe_load((ROOT / "deploy/tenants.yaml").read_text()))
    acme = next(t for t in seed.tenants if t.slug == "acme")
    assert acme.user_domains == ["acme.example"]
    [pbx] = acme.pbxs
    assert (pbx.transcribe, pbx.language, pbx.forward) == (True, "en-US", "original")
    assert acme.pbx_for("127.0.0.1", None) is not None and acme.pbx_for("::1", None) is not None
    assert acme.pbx_for("192.0.2.1", None) is None
    assert acme.voicemail is not None and acme.voicemail.forward_to == ["frontdesk@acme.example"]
    # intake as before
    orders = acme.route("orders")
    assert orders is not None and [a.value for a in orders.actions] == ["extract"]
