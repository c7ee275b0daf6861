"""Mail authentication end to end: mails sent over SMTP to the running service, verdicts read
as ``mail.authenticated`` events from the real nats-server, DNS from a dnslib server in this
process (the zones are listed in test_authentication.py). Also: the SMTP 250 does not wait for
DNS, and a DNS server that never answers gives ``temperror``, never a stuck consumer."""

from __future__ import annotations

import asyncio
import smtplib
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import nats
import pytest
from nats.js.errors import NotFoundError

from postroom_contracts import EVENTS_STREAM, MailAuthenticated, MailReceived

sys.path.insert(0, str(Path(__file__).parent))

from dns_testkit import (  # noqa: F401 - fixtures
    Keys,
    TestDns,
    dkim_sign,
    dns_fixture,
    header_b,
    keys_fixture,
    mail,
)
from smtp_ingress_testkit import DOMAIN, Ingress, wait_for

StartIngress = Callable[..., Awaitable[Ingress]]
AUTHSERV_ID = "mx.postroom.test"
DURABLE = "smtp-ingress-mail-authentication"
TO = f"orders+acme@{DOMAIN}"


async def start(start_ingress: StartIngress, dns: TestDns, **overrides: Any) -> Ingress:
    settings: dict[str, Any] = {
        "auth_verify": True, "auth_dns_servers": dns.address, "auth_dns_timeout_seconds": 10.0,
        "smtp_hostname": AUTHSERV_ID,
    }
    settings.update(overrides)
    return await start_ingress(**settings)


def send(port: int, message: bytes, mail_from: str, helo: str = "mail.pass.example") -> int:
    """One SMTP transaction from 127.0.0.1; the reply code to the end of DATA."""
    with smtplib.SMTP("127.0.0.1", port, local_hostname=helo, timeout=30) as client:
        client.ehlo()
        code, _ = client.mail(mail_from)
        assert code == 250
        code, _ = client.rcpt(TO)
        assert code == 250
        code, _ = client.data(message)
        return code


async def events(nats_url: str, event_type: str) -> list[dict[str, Any]]:
    """Every event of one type in the stream (read with nats-py, as another team would)."""
    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream()
        info = await js.stream_info(EVENTS_STREAM)
        out: list[dict[str, Any]] = []
        if not info.state.messages:
            return out
        for seq in range(info.state.first_seq, info.state.last_seq + 1):
            msg = await js.get_msg(EVENTS_STREAM, seq)
            if msg.subject and msg.subject.startswith(f"postroom.{event_type}."):
                out.append({"subject": msg.subject, "data": msg.data or b""})
        return out
    finally:
        await nc.close()


async def received(nats_url: str, message_id: str) -> MailReceived:
    for item in await events(nats_url, "mail.received"):
        event = MailReceived.model_validate_json(item["data"])
        if event.message_id == message_id:
            return event
    raise AssertionError(f"no mail.received for {message_id}")


async def authenticated(nats_url: str, mail_key: str) -> MailAuthenticated | None:
    for item in await events(nats_url, "mail.authenticated"):
        event = MailAuthenticated.model_validate_json(item["data"])
        if event.mail_key == mail_key:
            assert item["subject"] == f"postroom.mail.authenticated.{event.tenant}"
            return event
    return None


async def wait_authenticated(nats_url: str, mail_key: str,
                             within: float = 60) -> MailAuthenticated:
    async with asyncio.timeout(within):
        while True:
            event = await authenticated(nats_url, mail_key)
            if event is not None:
                return event
            await asyncio.sleep(0.1)


async def test_verdicts_and_header_of_a_signed_mail_over_smtp(
        start_ingress: StartIngress, dns: TestDns, keys: Keys) -> None:
    ingress = await start(start_ingress, dns)
    message = dkim_sign(mail(to=TO, message_id="<signed@pass.example>"), keys.pass_,
                        "pass.example")
    code = await asyncio.to_thread(send, ingress.port, message, "buyer@pass.example")
    assert code == 250
    cause = await received(ingress.nats_url, "<signed@pass.example>")
    event = await wait_authenticated(ingress.nats_url, cause.mail_key)

    assert event.causation_id == cause.event_id and event.tenant == "acme"
    assert event.message_id == "<signed@pass.example>"
    assert event.authserv_id == AUTHSERV_ID
    assert event.spf is not None and event.iprev is not None
    assert (event.spf.result, event.spf.identity, event.spf.smtp_mailfrom,
            event.spf.smtp_helo) == ("pass", "mailfrom", "pass.example", "mail.pass.example")
    [signature] = event.dkim
    assert (signature.result, signature.domain, signature.selector) == (
        "pass", "pass.example", "sel")
    assert (event.dmarc.result, event.dmarc.policy, event.dmarc.header_from) == (
        "pass", "reject", "pass.example")
    assert event.dmarc.spf_aligned and event.dmarc.dkim_aligned
    assert event.arc is None
    assert (event.iprev.result, event.iprev.hostname) == ("pass", "mail.pass.example")
    assert event.authentication_results == (
        f"{AUTHSERV_ID};\r\n"
        "\tiprev=pass policy.iprev=127.0.0.1 (mail.pass.example);\r\n"
        "\tspf=pass smtp.mailfrom=pass.example;\r\n"
        f"\tdkim=pass header.d=pass.example header.s=sel header.b={header_b(message)};\r\n"
        "\tdmarc=pass (p=reject) header.from=pass.example"
    )
    # one trace per mail: the verification is part of the trace that began at DATA
    ingress.runtime.tracer_provider.force_flush()
    spans = {s.name: s for s in ingress.spans.get_finished_spans()}
    verification, data = spans["mail authentication"], spans["smtp DATA"]
    assert verification.context.trace_id == data.context.trace_id
    assert verification.attributes is not None
    assert verification.attributes["auth.dmarc"] == "pass"
    assert await has_consumer(ingress.nats_url, DURABLE)


@pytest.mark.parametrize(("sender", "spf", "dmarc"), [
    ("buyer@fail.example", "fail", "fail"),
    ("buyer@softfail.example", "softfail", "fail"),
    ("buyer@none.example", "none", "none"),
    ("buyer@temperror.example", "temperror", "temperror"),
])
async def test_spf_and_dmarc_verdicts_over_smtp(
        start_ingress: StartIngress, dns: TestDns, sender: str, spf: str, dmarc: str) -> None:
    ingress = await start(start_ingress, dns)
    domain = sender.split("@")[1]
    message_id = f"<po@{domain}>"
    message = mail(from_=sender, to=TO, message_id=message_id)
    assert await asyncio.to_thread(send, ingress.port, message, sender) == 250
    cause = await received(ingress.nats_url, message_id)
    event = await wait_authenticated(ingress.nats_url, cause.mail_key)
    assert event.spf is not None
    assert (event.spf.result, event.spf.domain) == (spf, domain)
    assert (event.dmarc.result, event.dmarc.header_from) == (dmarc, domain)
    assert f"spf={spf} smtp.mailfrom={domain};" in event.authentication_results
    assert f"dmarc={dmarc}" in event.authentication_results
    assert "dkim=none" in event.authentication_results


async def test_null_sender_is_checked_by_its_helo(start_ingress: StartIngress,
                                                  dns: TestDns) -> None:
    ingress = await start(start_ingress, dns)
    message = mail(from_="MAILER-DAEMON@mail.pass.example", to=TO, message_id="<dsn@x>")
    assert await asyncio.to_thread(send, ingress.port, message, "") == 250
    cause = await received(ingress.nats_url, "<dsn@x>")
    event = await wait_authenticated(ingress.nats_url, cause.mail_key)
    assert event.spf is not None
    assert (event.spf.result, event.spf.identity, event.spf.domain) == (
        "pass", "helo", "mail.pass.example")
    assert "spf=pass smtp.helo=mail.pass.example" in event.authentication_results


async def test_the_250_does_not_wait_for_dns(start_ingress: StartIngress,
                                             dns: TestDns) -> None:
    """The DNS server holds every question about gated.example: the mail is accepted while
    its verification is still waiting; once the server answers (SERVFAIL), the verdict is
    temperror."""
    ingress = await start(start_ingress, dns, auth_dns_timeout_seconds=60.0)
    message = mail(from_="buyer@gated.example", to=TO, message_id="<held@gated.example>")
    code = await asyncio.to_thread(send, ingress.port, message, "buyer@gated.example")
    assert code == 250
    cause = await received(ingress.nats_url, "<held@gated.example>")
    # verification has started and is waiting for the server ...
    await wait_for(lambda: bool(dns.asked("gated.example") and dns.asked("_dmarc.gated.example")),
                   within=30)
    # ... which has answered nothing about gated.example: no verdict can exist yet
    assert not [q for q in dns.answered if q[0].endswith("gated.example")]
    assert await authenticated(ingress.nats_url, cause.mail_key) is None
    dns.servfail.add("gated.example")
    dns.gate.set()
    event = await wait_authenticated(ingress.nats_url, cause.mail_key)
    assert event.spf is not None and event.spf.result == "temperror"
    assert event.dmarc.result == "temperror"


async def test_dns_that_never_answers_gives_temperror(start_ingress: StartIngress,
                                                      dns: TestDns, keys: Keys) -> None:
    ingress = await start(start_ingress, dns, auth_dns_timeout_seconds=2.0)
    message = dkim_sign(mail(from_="buyer@silent.example", to=TO,
                             message_id="<lost@silent.example>"), keys.pass_, "silent.example")
    assert await asyncio.to_thread(send, ingress.port, message, "buyer@silent.example") == 250
    cause = await received(ingress.nats_url, "<lost@silent.example>")
    event = await wait_authenticated(ingress.nats_url, cause.mail_key)
    assert event.spf is not None and event.spf.result == "temperror"
    assert [v.result for v in event.dkim] == ["temperror"]
    assert event.dmarc.result == "temperror"
    assert "spf=temperror" in event.authentication_results
    # the server was asked and never answered: the verdict came from our deadline
    assert dns.asked_under("silent.example") >= 3
    assert not [q for q in dns.answered if q[0].endswith("silent.example")]


async def test_auth_verify_false_emits_nothing(start_ingress: StartIngress,
                                               dns: TestDns) -> None:
    ingress = await start(start_ingress, dns, auth_verify=False)
    message = mail(to=TO, message_id="<unverified@pass.example>")
    assert await asyncio.to_thread(send, ingress.port, message, "buyer@pass.example") == 250
    await received(ingress.nats_url, "<unverified@pass.example>")
    assert not await has_consumer(ingress.nats_url, DURABLE)  # nobody verifies
    assert dns.queries == []


async def has_consumer(nats_url: str, durable: str) -> bool:
    nc = await nats.connect(nats_url)
    try:
        await nc.jetstream().consumer_info(EVENTS_STREAM, durable)
        return True
    except NotFoundError:
        return False
    finally:
        await nc.close()
