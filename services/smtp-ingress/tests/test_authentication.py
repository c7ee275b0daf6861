"""The verification core (authentication.py and its auth_* modules) against a real DNS server
in this process.

The test zones (dns_testkit.standard_zone):

| domain            | SPF                       | DMARC                     | DKIM keys  |
|-------------------|---------------------------|---------------------------|------------|
| pass.example      | ip4:127.0.0.0/8 -all      | p=reject; sp=quarantine   | sel, other |
| fail.example      | ip4:192.0.2.0/24 -all     | p=quarantine              |            |
| softfail.example  | ip4:192.0.2.0/24 ~all     | p=none                    |            |
| none.example      | (none: the name has an A) | (none)                    |            |
| strict.example    | ip4:127.0.0.0/8 -all      | p=reject; aspf=s; adkim=s | sel        |
| temperror.example | SERVFAIL for the whole subtree                                     |
| silent.example    | never answered                                                     |
| gated.example     | answered once the test opens the gate                              |

iprev: 127.0.0.1 <-> mail.pass.example; 192.0.2.7 -> liar.example -> 192.0.2.99.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import authres
import pytest

from postroom_smtp_ingress.auth_dmarc import organizational_domain
from postroom_smtp_ingress.authentication import Authenticator, SmtpFacts, Verdicts
from postroom_smtp_ingress.dns_lookups import Resolver, parse_servers

sys.path.insert(0, str(Path(__file__).parent))

from dns_testkit import (  # noqa: F401 - fixtures
    Keys,
    TestDns,
    arc_seal,
    dkim_sign,
    dns_fixture,
    header_b,
    keys_fixture,
    mail,
)

CLIENT = "127.0.0.1"
HELO = "mail.pass.example"
BUDGET = 3.0  # seconds of DNS per check; only the silent-server cases wait for it


@pytest.fixture
async def authenticator(dns: TestDns) -> AsyncIterator[Authenticator]:
    auth = Authenticator(Resolver(parse_servers(dns.address)), "mx.postroom.test", BUDGET)
    yield auth
    auth.close()


async def verify(auth: Authenticator, raw: bytes, mail_from: str = "buyer@pass.example",
                 ip: str = CLIENT, helo: str = HELO, auth_user: str | None = None) -> Verdicts:
    async with asyncio.timeout(60):  # a stuck check would be a defect: fail, do not hang
        return await auth.authenticate(raw, SmtpFacts(ip, helo, mail_from, auth_user))


def parsed(verdicts: Verdicts) -> list[tuple[str, str]]:
    """(method, result) of each clause, read back by authres's RFC 8601 parser."""
    unfolded = verdicts.authentication_results.replace("\r\n\t", " ")
    header = authres.AuthenticationResultsHeader.parse(f"Authentication-Results: {unfolded}")
    assert header.authserv_id == verdicts.authserv_id
    return [(r.method, r.result) for r in header.results]


# --- SPF -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("mail_from", "expected"), [
    ("buyer@pass.example", "pass"),
    ("buyer@fail.example", "fail"),
    ("buyer@softfail.example", "softfail"),
    ("buyer@none.example", "none"),
    ("buyer@nxdomain.example", "none"),
    ("buyer@temperror.example", "temperror"),
])
async def test_spf_result_per_zone(authenticator: Authenticator, mail_from: str,
                                   expected: str) -> None:
    verdicts = await verify(authenticator, mail(), mail_from=mail_from)
    spf = verdicts.spf
    assert spf is not None
    assert (spf.result, spf.identity) == (expected, "mailfrom")
    assert spf.domain == spf.smtp_mailfrom == mail_from.split("@")[1]
    assert ("spf", expected) in parsed(verdicts)
    assert f"spf={expected} smtp.mailfrom={spf.domain}" in verdicts.authentication_results


async def test_spf_fail_for_an_address_outside_the_record(authenticator: Authenticator) -> None:
    verdicts = await verify(authenticator, mail(), ip="192.0.2.200")
    assert verdicts.spf is not None and verdicts.spf.result == "fail"


async def test_null_sender_checks_the_helo_identity(authenticator: Authenticator) -> None:
    verdicts = await verify(authenticator, mail(), mail_from="", helo="mail.pass.example")
    spf = verdicts.spf
    assert spf is not None
    assert (spf.result, spf.identity, spf.domain) == ("pass", "helo", "mail.pass.example")
    assert spf.smtp_mailfrom is None
    assert "spf=pass smtp.helo=mail.pass.example" in verdicts.authentication_results


async def test_without_a_client_ip_there_is_no_spf_or_iprev(
        authenticator: Authenticator) -> None:
    verdicts = await authenticator.authenticate(mail(), SmtpFacts(None, None, "a@pass.example"))
    assert verdicts.spf is None and verdicts.iprev is None
    assert [m for m, _ in parsed(verdicts)] == ["dkim", "dmarc"]


# --- DKIM ----------------------------------------------------------------------------------


async def test_signed_mail_passes_dkim_and_dmarc(authenticator: Authenticator,
                                                 keys: Keys) -> None:
    signed = dkim_sign(mail(), keys.pass_, "pass.example")
    verdicts = await verify(authenticator, signed, mail_from="bounce@fail.example")
    [sig] = verdicts.dkim
    assert (sig.result, sig.domain, sig.selector, sig.algorithm) == (
        "pass", "pass.example", "sel", "rsa-sha256")
    prefix = signed.split(b" b=", 1)[1][:8].decode()
    assert sig.signature_prefix == prefix
    assert verdicts.spf is not None and verdicts.spf.result == "fail"
    dmarc = verdicts.dmarc
    assert (dmarc.result, dmarc.policy, dmarc.header_from) == ("pass", "reject", "pass.example")
    assert (dmarc.dkim_aligned, dmarc.spf_aligned) == (True, False)
    assert f"dkim=pass header.d=pass.example header.s=sel header.b={header_b(signed)}" \
        in verdicts.authentication_results
    assert "dmarc=pass (p=reject) header.from=pass.example" in verdicts.authentication_results


async def test_mail_altered_after_signing_fails(authenticator: Authenticator,
                                                keys: Keys) -> None:
    signed = dkim_sign(mail(), keys.pass_, "pass.example")
    altered = signed.replace(b"Please find", b"Please ignore")
    verdicts = await verify(authenticator, altered, mail_from="bounce@fail.example")
    [sig] = verdicts.dkim
    assert sig.result == "fail"
    assert "body hash" in (sig.reason or "")
    assert verdicts.dmarc.result == "fail"  # nothing aligned passed
    assert verdicts.dmarc.policy == "reject"
    assert ("dkim", "fail") in parsed(verdicts) and ("dmarc", "fail") in parsed(verdicts)


async def test_altered_signed_header_fails(authenticator: Authenticator, keys: Keys) -> None:
    signed = dkim_sign(mail(), keys.pass_, "pass.example")
    altered = signed.replace(b"Subject: Purchase order 4711", b"Subject: Purchase order 9999")
    [sig] = (await verify(authenticator, altered)).dkim
    assert sig.result == "fail"


async def test_each_signature_has_its_verdict(authenticator: Authenticator, keys: Keys) -> None:
    once = dkim_sign(mail(), keys.pass_, "pass.example", selector="sel")
    # the second signer uses a key whose selector publishes another key: it cannot verify
    twice = dkim_sign(once, keys.pass_, "pass.example", selector="other")
    verdicts = await verify(authenticator, twice)
    assert [(v.selector, v.result) for v in verdicts.dkim] == [("other", "fail"),
                                                               ("sel", "pass")]
    assert verdicts.dkim[0].signature_prefix != verdicts.dkim[1].signature_prefix
    assert [r for m, r in parsed(verdicts) if m == "dkim"] == ["fail", "pass"]


async def test_no_key_is_permerror_and_servfail_is_temperror(authenticator: Authenticator,
                                                             keys: Keys) -> None:
    missing = dkim_sign(mail(), keys.pass_, "pass.example", selector="gone")
    [sig] = (await verify(authenticator, missing)).dkim
    assert (sig.result, sig.reason) == ("permerror", "no key for signature")
    broken = dkim_sign(mail(from_="a@temperror.example"), keys.pass_, "temperror.example")
    verdicts = await verify(authenticator, broken, mail_from="a@temperror.example")
    assert [v.result for v in verdicts.dkim] == ["temperror"]
    assert verdicts.dmarc.result == "temperror"


async def test_unsigned_mail_is_dkim_none(authenticator: Authenticator) -> None:
    verdicts = await verify(authenticator, mail())
    assert verdicts.dkim == []
    assert ("dkim", "none") in parsed(verdicts)
    # SPF alone aligns: pass.example is both the MAIL FROM and the From domain
    assert (verdicts.dmarc.result, verdicts.dmarc.spf_aligned) == ("pass", True)


async def test_malformed_signature_is_permerror(authenticator: Authenticator) -> None:
    raw = b"DKIM-Signature: v=1; a=rsa-sha256; d=pass.example\r\n" + mail()
    [sig] = (await verify(authenticator, raw)).dkim
    assert (sig.result, sig.domain) == ("permerror", "pass.example")


# --- DMARC ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("from_", "mail_from", "result", "policy"), [
    ("a@fail.example", "a@fail.example", "fail", "quarantine"),
    ("a@softfail.example", "a@softfail.example", "fail", "none"),
    ("a@none.example", "a@none.example", "none", None),
    ("a@temperror.example", "a@pass.example", "temperror", None),
    # a subdomain without its own record: the organizational domain's sp= applies, and the
    # MAIL FROM's pass.example aligns in relaxed mode
    ("a@news.pass.example", "a@pass.example", "pass", "quarantine"),
    # strict SPF alignment: sub.strict.example is not strict.example
    ("a@strict.example", "a@sub.strict.example", "fail", "reject"),
    ("a@strict.example", "a@strict.example", "pass", "reject"),
])
async def test_dmarc(authenticator: Authenticator, from_: str, mail_from: str, result: str,
                     policy: str | None) -> None:
    verdicts = await verify(authenticator, mail(from_=from_), mail_from=mail_from)
    dmarc = verdicts.dmarc
    assert (dmarc.result, dmarc.policy) == (result, policy)
    assert dmarc.header_from == from_.split("@")[1]
    assert ("dmarc", result) in parsed(verdicts)


async def test_dmarc_subdomain_uses_the_organizational_record(
        authenticator: Authenticator) -> None:
    verdicts = await verify(authenticator, mail(from_="a@news.pass.example"),
                            mail_from="a@pass.example")
    assert verdicts.dmarc.policy_domain == "pass.example"
    assert verdicts.dmarc.spf_alignment == "relaxed" and verdicts.dmarc.spf_aligned


async def test_strict_dkim_alignment(authenticator: Authenticator, keys: Keys) -> None:
    # signed by strict.example, From a subdomain of it: relaxed would align, strict does not
    signed = dkim_sign(mail(from_="a@sub.strict.example"), keys.pass_, "strict.example")
    verdicts = await verify(authenticator, signed, mail_from="a@fail.example")
    assert [v.result for v in verdicts.dkim] == ["pass"]
    assert verdicts.dmarc.result == "fail"
    assert (verdicts.dmarc.dkim_alignment, verdicts.dmarc.dkim_aligned) == ("strict", False)


@pytest.mark.parametrize("header", [
    b"From: a@pass.example\r\nFrom: b@fail.example\r\n",
    b"From: a@pass.example, b@fail.example\r\n",
    b"From: undisclosed\r\n",
])
async def test_dmarc_permerror_without_one_from_domain(authenticator: Authenticator,
                                                       header: bytes) -> None:
    raw = mail().replace(b"From: Buyer <buyer@pass.example>\r\n", header)
    verdicts = await verify(authenticator, raw)
    assert verdicts.dmarc.result == "permerror"


def test_organizational_domain_follows_the_public_suffix_list() -> None:
    assert organizational_domain("a.b.example.co.uk") == "example.co.uk"
    assert organizational_domain("mail.example.com") == "example.com"
    assert organizational_domain("news.pass.example") == "pass.example"  # implicit * rule
    assert organizational_domain("pass.example") == "pass.example"


# --- ARC -----------------------------------------------------------------------------------


async def test_arc_chain_vouches_for_a_forwarded_mail(authenticator: Authenticator,
                                                      keys: Keys) -> None:
    signed = dkim_sign(mail(), keys.pass_, "pass.example")
    # the forwarder verified the original, then a list footer broke the body hash
    footer = signed + b"-- \r\nYou are subscribed to the purchasing list.\r\n"
    forwarded = arc_seal(footer, keys.forwarder, "forwarder.example", "forwarder.example",
                         "dkim=pass header.d=pass.example")
    verdicts = await verify(authenticator, forwarded, mail_from="list@forwarder.example")
    assert verdicts.arc is not None
    assert (verdicts.arc.result, verdicts.arc.chain_length) == ("pass", 1)
    assert [v.result for v in verdicts.dkim] == ["fail"]
    assert verdicts.dmarc.result == "fail"  # ARC is evidence for local policy, not DMARC
    assert ("arc", "pass") in parsed(verdicts)


async def test_tampered_arc_chain_fails(authenticator: Authenticator, keys: Keys) -> None:
    forwarded = arc_seal(mail(), keys.forwarder, "forwarder.example", "forwarder.example",
                         "spf=pass smtp.mailfrom=pass.example")
    tampered = forwarded.replace(b"Subject: Purchase order 4711", b"Subject: Pay now")
    verdicts = await verify(authenticator, tampered)
    assert verdicts.arc is not None
    assert (verdicts.arc.result, verdicts.arc.chain_length) == ("fail", 1)
    assert ("arc", "fail") in parsed(verdicts)


async def test_no_arc_headers_no_arc_verdict(authenticator: Authenticator) -> None:
    verdicts = await verify(authenticator, mail())
    assert verdicts.arc is None
    assert "arc" not in [method for method, _ in parsed(verdicts)]


# --- iprev ---------------------------------------------------------------------------------


async def test_iprev(authenticator: Authenticator, dns: TestDns) -> None:
    iprev = (await verify(authenticator, mail())).iprev
    assert iprev is not None
    assert (iprev.result, iprev.ip, iprev.hostname) == ("pass", CLIENT, "mail.pass.example")
    iprev = (await verify(authenticator, mail(), ip="192.0.2.7")).iprev
    assert iprev is not None and iprev.result == "fail"  # liar.example is not 192.0.2.7
    iprev = (await verify(authenticator, mail(), ip="192.0.2.8")).iprev
    assert iprev is not None and (iprev.result, iprev.reason) == ("fail", "no PTR record")
    dns.servfail.add("9.2.0.192.in-addr.arpa")
    iprev = (await verify(authenticator, mail(), ip="192.0.2.9")).iprev
    assert iprev is not None and iprev.result == "temperror"
    iprev = (await verify(authenticator, mail(), ip="::ffff:127.0.0.1")).iprev
    assert iprev is not None and (iprev.result, iprev.ip) == ("pass", CLIENT)


# --- the header ----------------------------------------------------------------------------


async def test_header_is_rfc8601_and_folded(authenticator: Authenticator, keys: Keys) -> None:
    signed = dkim_sign(mail(), keys.pass_, "pass.example")
    verdicts = await verify(authenticator, signed, auth_user="supplier")
    assert parsed(verdicts) == [("auth", "pass"), ("iprev", "pass"), ("spf", "pass"),
                                ("dkim", "pass"), ("dmarc", "pass")]
    lines = verdicts.header.split(b"\r\n")
    assert lines[0] == b"Authentication-Results: mx.postroom.test;"
    assert all(line.startswith(b"\t") for line in lines[1:-1]) and lines[-1] == b""
    assert all(len(line) <= 78 for line in lines)


async def test_sender_controlled_values_cannot_break_the_header(
        authenticator: Authenticator) -> None:
    verdicts = await verify(authenticator, mail(), helo='evil"; dkim=pass (', mail_from="",
                            auth_user="a@b; dmarc=pass")
    methods = parsed(verdicts)
    assert methods.count(("dkim", "pass")) == 0 and ("dmarc", "pass") not in methods
    assert verdicts.spf is not None and verdicts.spf.result == "none"


# --- DNS that does not answer -----------------------------------------------------------


async def test_silent_dns_gives_temperror_within_the_budget(authenticator: Authenticator,
                                                            keys: Keys, dns: TestDns) -> None:
    raw = dkim_sign(mail(from_="a@silent.example"), keys.pass_, "silent.example")
    verdicts = await verify(authenticator, raw, mail_from="a@silent.example")
    assert verdicts.spf is not None and verdicts.spf.result == "temperror"
    assert [v.result for v in verdicts.dkim] == ["temperror"]
    assert verdicts.dmarc.result == "temperror"
    assert dns.asked_under("silent.example") >= 3
    assert ("spf", "temperror") in parsed(verdicts)


async def test_a_timed_out_name_is_not_asked_again_at_once(authenticator: Authenticator,
                                                          dns: TestDns) -> None:
    raw = mail(from_="a@silent.example")
    first = await verify(authenticator, raw, mail_from="a@silent.example")
    assert first.spf is not None and "(cached)" not in (first.spf.reason or "")
    assert dns.asked("silent.example") >= 1 and dns.asked("_dmarc.silent.example") >= 1
    # the next mail from there gets its temperror at once, without asking the server
    verdicts = await verify(authenticator, raw, mail_from="a@silent.example")
    assert verdicts.spf is not None and verdicts.spf.result == "temperror"
    assert verdicts.dmarc.result == "temperror"
    assert "(cached)" in (verdicts.spf.reason or "")
    assert "(cached)" in (verdicts.dmarc.reason or "")


async def test_a_slow_domain_does_not_make_the_resolver_down(authenticator: Authenticator,
                                                             keys: Keys) -> None:
    slow = await verify(authenticator, mail(from_="a@silent.example"),
                        mail_from="a@silent.example")
    assert slow.spf is not None and slow.spf.result == "temperror"
    assert not authenticator.resolver.down  # the probe was answered: only the domain is slow
    fine = await verify(authenticator, dkim_sign(mail(), keys.pass_, "pass.example"))
    assert fine.spf is not None and fine.spf.result == "pass"
    assert [v.result for v in fine.dkim] == ["pass"] and fine.dmarc.result == "pass"


async def test_a_resolver_that_answers_nothing_is_not_waited_for_again(
        authenticator: Authenticator, dns: TestDns) -> None:
    dns.all_silent = True
    first = await verify(authenticator, mail(), mail_from="a@pass.example")
    assert first.spf is not None and first.spf.result == "temperror"
    assert authenticator.resolver.down
    # another mail, other domains: temperror at once, the server is not even asked
    other = await verify(authenticator, mail(from_="a@fail.example"), mail_from="a@fail.example",
                         ip="192.0.2.7")
    assert other.spf is not None and other.spf.result == "temperror"
    assert other.dmarc.result == "temperror"
    assert other.iprev is not None and other.iprev.result == "temperror"
    assert "not answering" in (other.spf.reason or "")
    assert dns.asked("fail.example") == 0 and dns.asked("_dmarc.fail.example") == 0


async def test_unreachable_resolver_gives_temperror() -> None:
    # a port nobody listens on: questions go unanswered
    auth = Authenticator(Resolver(parse_servers("127.0.0.1:9")), "mx.postroom.test", 1.0)
    try:
        verdicts = await verify(auth, mail())
    finally:
        auth.close()
    assert verdicts.spf is not None and verdicts.spf.result == "temperror"
    assert verdicts.dmarc.result == "temperror"
    assert verdicts.iprev is not None and verdicts.iprev.result == "temperror"


# --- configuration -------------------------------------------------------------------------


def test_parse_servers() -> None:
    assert parse_servers("") == ()
    assert parse_servers("127.0.0.1:5353, 10.0.0.2") == (("127.0.0.1", 5353), ("10.0.0.2", 53))
    assert parse_servers("[::1]:5353,::1") == (("::1", 5353), ("::1", 53))
    for bad in ("dns.example:53", "127.0.0.1:0", "127.0.0.1:x", "[::1"):
        with pytest.raises(ValueError):
            parse_servers(bad)
