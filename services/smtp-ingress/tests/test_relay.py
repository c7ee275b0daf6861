"""The PBX relay over real SMTP: who may send to a tenant's own user domains, the route on
``mail.received``, voicemail addresses, and what is refused (never an open relay).

Every client connects over loopback; the tests tell clients apart by their source address:
127.0.0.1 is acme's PBX, 127.0.0.2 is nobody's (Linux routes all of 127.0.0.0/8 to lo).
"""

from __future__ import annotations

import asyncio
import logging
import smtplib
import ssl
from pathlib import Path
from typing import Any

import pytest
from smtp_ingress_testkit import DOMAIN, Ingress, make_mail, wait_for

from postroom_contracts import RouteDecision
from postroom_runtime.tenants import put_tenant

PBX_IP = "127.0.0.1"  # acme's PBX
OTHER_IP = "127.0.0.2"  # a client no tenant lists
SENDER = "voicemail@pbx.acme.example"

TENANTS = f"""\
tenants:
  - slug: acme
    domains: [{DOMAIN}]
    mailboxes:
      orders: {{actions: [extract]}}
    user_domains: [acme.example, acme-group.example]
    pbxs:
      - name: office-pbx
        networks: [{PBX_IP}/32]
        language: en-US
    voicemail:
      forward_to: [frontdesk@acme.example, ops@acme.example]
  - slug: initech
    domains: [{DOMAIN}]
    user_domains: [initech.example, initech-labs.example]
    pbxs:
      - name: cloud-pbx
        auth_user: initech-pbx
        transcribe: false
        language: de-DE
        forward: map
        address_map:
          "@initech.example": "@mail.initech.example"
          "boss@initech.example": "lumbergh@initech.example"
    voicemail:
      forward_to: [reception@initech.example]
      senders: pbx
"""

AUTH_USERS = "initech-pbx:pbx-secret,clerk:clerk-secret"


@pytest.fixture
async def relay(start_ingress: Any, tmp_path: Path, server_cert: Any) -> Ingress:
    seed = tmp_path / "relay-tenants.yaml"
    seed.write_text(TENANTS)
    cert, key = server_cert
    return await start_ingress(tenants_seed_file=seed, smtp_tls_cert=cert, smtp_tls_key=key,
                               smtp_auth_users=AUTH_USERS)


def session(
    ingress: Ingress,
    recipients: list[str],
    raw: bytes | None = None,
    *,
    source: str = PBX_IP,
    login: tuple[str, str] | None = None,
    tls: ssl.SSLContext | None = None,
) -> tuple[list[tuple[int, bytes]], tuple[int, bytes] | None]:
    """One transaction from ``source``: STARTTLS and AUTH when asked, every RCPT reply, and
    the DATA reply when a recipient was accepted (None otherwise)."""
    with smtplib.SMTP("127.0.0.1", ingress.port, timeout=30,
                      source_address=(source, 0)) as client:
        client.ehlo("pbx.example")
        if tls is not None:
            assert client.starttls(context=tls)[0] == 220
            client.ehlo("pbx.example")
        if login is not None:
            assert client.login(*login)[0] == 235
        assert client.mail(SENDER)[0] == 250
        replies = [client.rcpt(r) for r in recipients]
        if not any(code == 250 for code, _ in replies):
            client.rset()
            return replies, None
        return replies, client.data(raw if raw is not None else voicemail_mail())


def voicemail_mail(to: str = "alice@acme.example", message_id: str = "<vm-1@pbx.example>",
                   extra_headers: str = "") -> bytes:
    return make_mail(message_id=message_id, subject="Voicemail from 5551234 (0:21)",
                     body="You have a new voicemail.", to=to, extra_headers=extra_headers)


async def run(ingress: Ingress, recipients: list[str], raw: bytes | None = None,
              **kwargs: Any) -> tuple[list[tuple[int, bytes]], tuple[int, bytes] | None]:
    return await asyncio.to_thread(session, ingress, recipients, raw, **kwargs)


OK = (250, b"2.1.5 Recipient OK")
RELAY_DENIED = (550, b"5.7.1 Relaying denied")
ACCEPTED = (250, b"2.0.0 Message accepted")


# --- a listed PBX relays to its tenant's user domains ----------------------------------------


async def test_a_pbx_on_a_listed_network_relays_to_its_tenants_user_domains(
    relay: Ingress, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="postroom_smtp_ingress")
    rcpt, data = await run(relay, ["alice@acme.example", "Bob@ACME-group.example"])
    assert rcpt == [OK, OK] and data == ACCEPTED

    [(event, headers)] = await relay.events()
    assert event.tenant == "acme" and headers["Nats-Msg-Id"] == event.event_id
    assert event.recipients == ["alice@acme.example", "Bob@ACME-group.example"]
    assert event.route == RouteDecision(
        kind="pbx", pbx="office-pbx", matched_by="network", transcribe=True, language="en-US",
        forward_to=["alice@acme.example", "Bob@ACME-group.example"], forward_mode="original")
    assert event.actions == ["transcribe", "forward"] and event.mailbox == "alice"
    assert event.smtp is not None and event.smtp.client_ip == PBX_IP
    assert relay.metric("postroom_smtp_routed_total", kind="pbx", matched_by="network") == 1

    # the decision is logged with the mail key, without any address
    [record] = [r for r in caplog.records if r.getMessage() == "mail accepted"]
    [logged] = record.routes  # type: ignore[attr-defined]
    assert logged == {"mail_key": event.mail_key, "tenant": "acme", "kind": "pbx",
                      "pbx": "office-pbx", "matched_by": "network", "transcribe": True,
                      "language": "en-US", "forward_mode": "original", "forward_count": 2}
    assert "alice" not in str(record.__dict__)


async def test_a_pbx_authenticated_over_starttls_relays_through_its_address_map(
    relay: Ingress, client_tls: ssl.SSLContext
) -> None:
    rcpt, data = await run(relay, ["boss@initech.example", "Carol@Initech.example"],
                           voicemail_mail(to="boss@initech.example"), source=OTHER_IP,
                           login=("initech-pbx", "pbx-secret"), tls=client_tls)
    assert rcpt == [OK, OK] and data == ACCEPTED
    [(event, _)] = await relay.events()
    assert event.tenant == "initech"
    assert event.route == RouteDecision(
        kind="pbx", pbx="cloud-pbx", matched_by="auth", transcribe=False, language="de-DE",
        forward_to=["lumbergh@initech.example", "Carol@mail.initech.example"],
        forward_mode="map")
    assert event.actions == ["forward"]  # transcribe off for this PBX
    assert event.authenticated and event.smtp is not None
    assert event.smtp.auth_user == "initech-pbx" and event.smtp.tls_version
    assert relay.metric("postroom_smtp_routed_total", kind="pbx", matched_by="auth") == 1

    # a user domain of the tenant that the map does not cover: unknown recipient
    rcpt, data = await run(relay, ["dave@initech-labs.example"], source=OTHER_IP,
                           login=("initech-pbx", "pbx-secret"), tls=client_tls)
    assert rcpt == [(550, b"5.1.1 Unknown recipient")] and data is None


# --- who cannot relay ------------------------------------------------------------------------


async def test_a_client_that_is_no_tenants_pbx_cannot_relay(
    relay: Ingress, client_tls: ssl.SSLContext
) -> None:
    # from an address no tenant lists, to each user domain and to a foreign domain
    rcpt, data = await run(relay, ["alice@acme.example", "boss@initech.example",
                                   "someone@elsewhere.example"], source=OTHER_IP)
    assert rcpt == [RELAY_DENIED] * 3 and data is None
    # authenticated over TLS, but as an identity no PBX entry names
    rcpt, data = await run(relay, ["alice@acme.example", "boss@initech.example"],
                           source=OTHER_IP, login=("clerk", "clerk-secret"), tls=client_tls)
    assert rcpt == [RELAY_DENIED] * 2 and data is None

    assert await relay.events() == []
    assert relay.metric("postroom_smtp_relay_denied_total", reason="not_tenant_pbx") == 4
    assert relay.metric("postroom_smtp_relay_denied_total", reason="not_our_domain") == 1
    assert relay.metric("postroom_smtp_recipients_rejected_total", code="550") == 5


async def test_a_pbx_cannot_relay_outside_its_tenants_domains(
    relay: Ingress, client_tls: ssl.SSLContext
) -> None:
    # acme's PBX: not to the Internet, not to tenant initech's user domain, not to a domain
    # that only looks like acme's
    rcpt, data = await run(relay, ["someone@gmail.example", "boss@initech.example",
                                   "alice@acme.example.evil.example", "alice@sub.acme.example"])
    assert rcpt == [RELAY_DENIED] * 4 and data is None
    # initech's PBX, authenticated: not to acme's user domain, not to the Internet
    rcpt, data = await run(relay, ["alice@acme.example", "someone@gmail.example"],
                           source=OTHER_IP, login=("initech-pbx", "pbx-secret"), tls=client_tls)
    assert rcpt == [RELAY_DENIED] * 2 and data is None
    assert await relay.events() == []


async def test_a_pbx_removed_from_the_registry_is_refused_at_once(relay: Ingress) -> None:
    assert (await run(relay, ["alice@acme.example"]))[1] == ACCEPTED
    acme = relay.runtime.smtp.tenant("acme")
    assert acme is not None
    moved = acme.model_copy(update={"pbxs": [acme.pbxs[0].model_validate(
        {**acme.pbxs[0].model_dump(), "networks": ["192.0.2.10/32"]})]})
    await put_tenant(relay.runtime.js, moved)
    await wait_for(lambda: relay.runtime.smtp.tenant("acme") == moved)
    rcpt, data = await run(relay, ["alice@acme.example"],
                           voicemail_mail(message_id="<vm-2@pbx.example>"))
    assert rcpt == [RELAY_DENIED] and data is None
    assert len(await relay.events()) == 1


# --- voicemail+<tenant>@<intake domain> -------------------------------------------------------


async def test_the_voicemail_address_forwards_to_the_addresses_the_tenant_lists(
    relay: Ingress, client_tls: ssl.SSLContext
) -> None:
    to = f"voicemail+acme@{DOMAIN}"
    # from any client (senders: any), as every intake address
    assert (await run(relay, [to], voicemail_mail(to=to), source=OTHER_IP))[1] == ACCEPTED
    # from the tenant's PBX: the route names it
    assert (await run(relay, [to], voicemail_mail(to=to, message_id="<vm-2@pbx.example>")))[1] \
        == ACCEPTED
    first, second = [event for event, _ in await relay.events()]
    listed = ["frontdesk@acme.example", "ops@acme.example"]
    assert first.route == RouteDecision(
        kind="voicemail-address", pbx=None, matched_by=None, transcribe=True,
        language="en-US", forward_to=listed, forward_mode="list")
    assert second.route is not None
    assert (second.route.pbx, second.route.matched_by, second.route.forward_to) \
        == ("office-pbx", "network", listed)
    assert first.recipients == [to] and first.actions == ["transcribe", "forward"]
    assert first.mailbox == "voicemail"
    assert relay.metric("postroom_smtp_routed_total", kind="voicemail-address",
                        matched_by="none") == 1

    # initech takes voicemail from its PBX only
    to = f"voicemail+initech@{DOMAIN}"
    rcpt, data = await run(relay, [to], source=OTHER_IP)
    assert rcpt == [(550, b"5.7.1 Only the tenant's PBX may send to this address")]
    rcpt, data = await run(relay, [to], voicemail_mail(to=to, message_id="<vm-3@pbx.example>"),
                           source=OTHER_IP, login=("initech-pbx", "pbx-secret"), tls=client_tls)
    assert data == ACCEPTED
    event = (await relay.events())[-1][0]
    assert event.route is not None and event.route.forward_to == ["reception@initech.example"]
    assert (event.route.pbx, event.route.matched_by) == ("cloud-pbx", "auth")


# --- intake is as before; one route per tenant copy; loops ------------------------------------


async def test_intake_mail_from_the_pbx_network_has_no_route(relay: Ingress) -> None:
    orders = f"orders+acme@{DOMAIN}"
    assert (await run(relay, [orders], make_mail()))[1] == ACCEPTED
    [(event, _)] = await relay.events()
    assert event.route is None and event.actions == ["extract"]


async def test_recipients_of_one_tenant_with_different_routes_need_separate_transactions(
    relay: Ingress
) -> None:
    orders, initech_orders = f"orders+acme@{DOMAIN}", f"orders+initech@{DOMAIN}"
    rcpt, data = await run(relay, ["alice@acme.example", orders, f"voicemail+acme@{DOMAIN}",
                                   initech_orders, "bob@acme.example"])
    separate = (452, b"4.5.3 Send this recipient in a separate transaction")
    assert rcpt == [OK, separate, separate, OK, OK] and data == ACCEPTED
    events = {event.tenant: event for event, _ in await relay.events()}
    assert events["acme"].recipients == ["alice@acme.example", "bob@acme.example"]
    assert events["acme"].route is not None
    assert events["acme"].route.forward_to == ["alice@acme.example", "bob@acme.example"]
    assert events["initech"].route is None and events["initech"].recipients == [initech_orders]


async def test_relayed_mail_that_comes_back_is_refused_as_a_loop(relay: Ingress) -> None:
    # e.g. the mailer's outbound relay pointed at smtp-ingress itself
    looped = voicemail_mail(extra_headers=(
        "Received: from pbx.example (unknown [127.0.0.1])\r\n"
        "\tby postroom.local (Postroom) with ESMTP id 0A1B2C3D4E5F\r\n"
        "\tfor <alice@acme.example>; Sat, 21 Nov 2026 10:00:05 +0000\r\n"))
    rcpt, data = await run(relay, ["alice@acme.example"], looped)
    assert rcpt == [OK] and data == (554, b"5.4.6 Mail loop detected")
    assert await relay.events() == []
    # the same header on intake mail is no loop: intake mail is never forwarded
    orders = f"orders+acme@{DOMAIN}"
    assert (await run(relay, [orders], looped))[1] == ACCEPTED
