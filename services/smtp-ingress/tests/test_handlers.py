"""Pure logic: recipient parsing and routing, headers, synthetic Message-IDs, line endings."""

from __future__ import annotations

import email.utils
import hashlib
from datetime import UTC, datetime, timedelta, timezone
from email import policy
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from postroom_contracts import (
    BlobRef,
    SmtpSession,
    Tenant,
    derive_event_id,
    mail_key,
    synthetic_message_id,
)
from postroom_smtp_ingress import handlers as h

ACME = Tenant.model_validate(
    {
        "slug": "acme",
        "domains": ["Intake.Example.com"],
        "mailboxes": {"orders": {"actions": ["extract"]},
                      "support": {"actions": ["extract", "classify", "reply"]}},
    }
)
GLOBEX = Tenant.model_validate(
    {"slug": "globex", "domains": ["globex.example", "bücher.example"],
     "mailboxes": {"*": {"actions": ["classify"]}}}
)
OFF = Tenant.model_validate({"slug": "off", "domains": ["intake.example.com"], "enabled": False})
TENANTS = {t.slug: t for t in (ACME, GLOBEX, OFF)}
DOMAINS = {h.normalise_domain(d) for t in TENANTS.values() if t.enabled for d in t.domains}


def route(address: str, shared: tuple[str, ...] = ()) -> h.Recipient | str:
    return h.route_recipient(
        address,
        tenant=lambda slug: TENANTS[slug] if slug in TENANTS and TENANTS[slug].enabled else None,
        domains=DOMAINS,
        shared_domains=shared,
    )


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        ("orders+acme@intake.example.com", h.Address("orders", "acme", "intake.example.com")),
        ("Orders+ACME@INTAKE.Example.COM.", h.Address("orders", "acme", "intake.example.com")),
        ("orders@intake.example.com", h.Address("orders", "", "intake.example.com")),
        ("a+b+c@x.example", h.Address("a", "b+c", "x.example")),
        ('"odd@local"+acme@x.example', h.Address('"odd@local"', "acme", "x.example")),
        ("jürgen+globex@bücher.example", h.Address("jürgen", "globex", "xn--bcher-kva.example")),
        ("postmaster", None),
        ("@intake.example.com", None),
        ("orders+acme@", None),
    ],
)
def test_parse_address(address: str, expected: h.Address | None) -> None:
    assert h.parse_address(address) == expected


def test_routed_recipient_carries_tenant_mailbox_and_actions() -> None:
    assert route("support+acme@intake.example.com") == h.Recipient(
        address="support+acme@intake.example.com", tenant="acme", mailbox="support",
        actions=("extract", "classify", "reply"),
    )


def test_domain_is_compared_case_insensitively() -> None:
    result = route("ORDERS+Acme@INTAKE.EXAMPLE.COM")
    assert isinstance(result, h.Recipient)
    assert (result.tenant, result.mailbox) == ("acme", "orders")


def test_internationalised_domain_matches_in_either_form() -> None:
    for address in ("info+globex@bücher.example", "info+globex@xn--bcher-kva.example"):
        result = route(address)
        assert isinstance(result, h.Recipient), address
        assert result.tenant == "globex"


@pytest.mark.parametrize(
    "address",
    [
        "orders+acme@elsewhere.example",
        "orders+acme@example.com",
        "orders+acme@intake.example.com.evil",
        "postmaster",
    ],
)
def test_foreign_domain_is_relaying(address: str) -> None:
    expected = h.UNKNOWN_RECIPIENT if "@" not in address else h.RELAY_DENIED
    assert route(address) == expected


@pytest.mark.parametrize(
    "address",
    [
        "orders@intake.example.com",  # no tenant
        "orders+@intake.example.com",  # empty tenant
        "orders+nobody@intake.example.com",  # unknown tenant
        "orders+off@intake.example.com",  # disabled tenant
        "invoices+acme@intake.example.com",  # no route for that mailbox
        "orders+acme@globex.example",  # our domain, but not acme's
        "orders+a.b@intake.example.com",  # not a slug (would be a NATS subject token)
        "+acme@intake.example.com",  # no mailbox
    ],
)
def test_unknown_recipients(address: str) -> None:
    assert route(address) == h.UNKNOWN_RECIPIENT


def test_shared_domain_reaches_every_tenant() -> None:
    assert route("orders+acme@shared.example") == h.RELAY_DENIED
    result = route("orders+acme@Shared.Example", shared=("shared.example",))
    assert isinstance(result, h.Recipient)
    assert result.tenant == "acme"
    assert route("x+nobody@shared.example", shared=("shared.example",)) == h.UNKNOWN_RECIPIENT


def test_group_by_tenant_unions_actions_and_keeps_order() -> None:
    recipients = [
        h.Recipient("orders+acme@d", "acme", "orders", ("extract",)),
        h.Recipient("x+globex@d", "globex", "x", ("classify",)),
        h.Recipient("support+acme@d", "acme", "support", ("extract", "classify", "reply")),
        h.Recipient("orders+acme@d", "acme", "orders", ("extract",)),
    ]
    groups = h.group_by_tenant(recipients)
    assert [(g.tenant, g.mailbox, g.actions, g.recipients) for g in groups] == [
        ("acme", "orders", ["extract", "classify", "reply"], ["orders+acme@d", "support+acme@d"]),
        ("globex", "x", ["classify"], ["x+globex@d"]),
    ]


@pytest.mark.parametrize(
    ("data", "bare"),
    [
        (b"a\r\nb\r\n", False),
        (b"", False),
        (b"a\nb\r\n", True),
        (b"a\rb\r\n", True),
        (b"a\r\n.\nb\r\n", True),
        (b"a\n.\r\nb\r\n", True),
        (b"a\r\r\n", True),
        (b"a\r\n\n", True),
    ],
)
def test_bare_line_endings(data: bytes, bare: bool) -> None:
    assert h.has_bare_line_ending(data) is bare


RAW = (
    b"From: Supplier <buyer@supplier.example>\r\n"
    b"To: orders+acme@intake.example.com\r\n"
    b"Subject: =?utf-8?q?Bestellung_f=C3=BCr_M=C3=A4rz?=\r\n"
    b"Date: Sat, 21 Nov 2026 10:00:00 +0000\r\n"
    b"Message-ID:  <po-1@supplier.example> \r\n"
    b"\r\n"
    b"Message-ID: <in-the-body@x>\r\n"
)


def test_read_headers() -> None:
    headers = h.read_headers(RAW)
    assert headers == h.MailHeaders(
        message_id="<po-1@supplier.example>",
        message_id_synthetic=False,
        header_from="Supplier <buyer@supplier.example>",
        subject="Bestellung für März",
        date="Sat, 21 Nov 2026 10:00:00 +0000",
    )


def test_raw_utf8_headers_are_decoded() -> None:
    raw = "Subject: Grüße aus Köln\r\nMessage-ID: <ü@x>\r\n\r\nbody\r\n".encode()
    headers = h.read_headers(raw)
    assert headers.subject == "Grüße aus Köln"
    assert headers.message_id == "<ü@x>"


def test_missing_message_id_gets_the_contract_synthetic_id() -> None:
    raw = RAW.replace(b"Message-ID:  <po-1@supplier.example> \r\n", b"")
    headers = h.read_headers(raw)
    body = raw.partition(b"\r\n\r\n")[2]
    expected = synthetic_message_id(
        "Supplier <buyer@supplier.example>", "orders+acme@intake.example.com",
        "Bestellung für März", "Sat, 21 Nov 2026 10:00:00 +0000",
        hashlib.sha256(body).hexdigest(),
    )
    assert headers.message_id == expected
    assert headers.message_id.startswith("<synthetic-")
    assert headers.message_id_synthetic is True
    # same mail again: same id (so the retry is a duplicate); another subject: another id
    assert h.read_headers(raw).message_id == expected
    assert h.read_headers(raw.replace(b"M=C3=A4rz", b"April")).message_id != expected
    # same headers, another body: another mail, another id
    assert h.read_headers(raw.replace(b"in-the-body", b"other-body")).message_id != expected


def test_synthetic_ids_do_not_collide_when_header_text_moves_between_fields() -> None:
    def mail(sender: str, subject: str) -> bytes:
        return (f"From: {sender}\r\nSubject: {subject}\r\nDate: Sat, 21 Nov 2026\r\n\r\n"
                "body\r\n").encode()

    # from + subject concatenated are the same text in both mails
    a = h.read_headers(mail("a@x.example", "POorder"))
    b = h.read_headers(mail("a@x.examplePO", "order"))
    assert a.message_id_synthetic and b.message_id_synthetic
    assert a.message_id != b.message_id


def test_unusable_message_ids_are_replaced() -> None:
    empty = RAW.replace(b"<po-1@supplier.example>", b"")
    long = RAW.replace(b"<po-1@supplier.example>", b"<" + b"x" * 600 + b"@y>")
    for raw in (empty, long):
        headers = h.read_headers(raw)
        assert headers.message_id_synthetic
        assert headers.message_id.startswith("<synthetic-")


def test_headers_only_message_and_empty_header_section() -> None:
    assert h.read_headers(b"Message-ID: <a@b>\r\n").message_id == "<a@b>"
    headers = h.read_headers(b"\r\nMessage-ID: <body@b>\r\n")
    assert headers.message_id_synthetic and headers.subject is None


SESSION = SmtpSession(client_ip="192.0.2.7", client_port=40000, helo="mx.supplier.example",
                      esmtp=True, tls_version="TLSv1.3", tls_cipher="TLS_AES_256_GCM_SHA384",
                      tls_bits=256)


def test_build_event_derives_ids_from_the_mail_key() -> None:
    delivery = h.TenantDelivery("acme", "orders", ["extract"], ["orders+acme@intake.example.com"])
    headers = h.read_headers(RAW)
    content = hashlib.sha256(RAW).hexdigest()
    ref = BlobRef(bucket="b", key="sha256/" + "0" * 64, size=len(RAW) + 10, sha256="0" * 64)
    event = h.build_event(delivery, headers, content_sha256=content,
                          envelope_from="buyer@supplier.example", raw=ref, session=SESSION)
    key = mail_key("acme", "<po-1@supplier.example>", content)
    assert event.mail_key == key
    assert event.event_id == derive_event_id(key, "mail.received")
    assert event.nats_subject == "postroom.mail.received.acme"
    assert (event.mailbox, event.actions, event.size) == ("orders", ["extract"], len(RAW) + 10)
    assert (event.tls, event.authenticated, event.smtp) == (True, False, SESSION)
    assert event.message_id_reused is False
    again = h.build_event(delivery, headers, content_sha256=content, envelope_from="other@x",
                          raw=ref)
    assert again.event_id == event.event_id  # a retry publishes the same Nats-Msg-Id
    other = h.build_event(delivery, headers, content_sha256="f" * 64, envelope_from="other@x",
                          raw=ref, message_id_reused=True)
    assert other.mail_key != key and other.event_id != event.event_id  # another mail
    assert other.message_id_reused is True


@pytest.mark.parametrize(("mail_from", "recorded"), [
    ("<>", ""), ("", ""), (None, ""), ("a@b.example", "a@b.example"),
])
def test_null_reverse_path_is_recorded_empty(mail_from: str | None, recorded: str) -> None:
    assert h.reverse_path(mail_from) == recorded


@pytest.mark.parametrize(("peer", "expected"), [
    (("192.0.2.1", 25), ("192.0.2.1", 25)),
    (("::1", 25, 0, 0), ("::1", 25)),
    (("::ffff:192.0.2.1", 25, 0, 0), ("192.0.2.1", 25)),  # a dual-stack listener
    (("fe80::1%eth0", 25, 0, 2), ("fe80::1%eth0", 25)),
    (None, ("unknown", None)),
])
def test_client_address(peer: Any, expected: tuple[str, int | None]) -> None:
    assert h.client_address(peer) == expected


# --- the Received header ---------------------------------------------------------------------

NOW = datetime(2026, 11, 21, 10, 0, 5, tzinfo=UTC)


def test_received_header_in_the_postfix_form() -> None:
    header = h.received_header(SESSION, by="mx.postroom.test", queue_id="4F3A9C2B1D0E",
                               recipients=["orders+acme@intake.example.com"], now=NOW)
    assert header == (
        b"Received: from mx.supplier.example (unknown [192.0.2.7])\r\n"
        b"\t(using TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits))\r\n"
        b"\tby mx.postroom.test (Postroom) with ESMTPS id 4F3A9C2B1D0E\r\n"
        b"\tfor <orders+acme@intake.example.com>; Sat, 21 Nov 2026 10:00:05 +0000\r\n"
    )
    # what a mail reader sees: one header, unfolded, with a date it can parse
    msg = email.message_from_bytes(header + b"Subject: x\r\n\r\nbody\r\n",
                                   policy=policy.default)
    [received] = msg.get_all("Received")
    assert received.replace("\t", " ").startswith(
        "from mx.supplier.example (unknown [192.0.2.7]) (using TLSv1.3")  # unfolded
    assert email.utils.parsedate_to_datetime(str(received).rpartition(";")[2]) == NOW
    assert msg["Subject"] == "x"


def test_received_date_is_formatted_by_email_utils_for_every_second_and_zone() -> None:
    utc = NOW
    later = NOW.replace(microsecond=999_999)  # same second: same text
    plus_one = NOW.astimezone(timezone(timedelta(hours=1)))  # same instant, another zone
    next_second = NOW + timedelta(seconds=1)
    for now in (utc, later, plus_one, plus_one, next_second, utc):
        assert h.rfc5322_date(now) == email.utils.format_datetime(now.replace(microsecond=0))
    assert h.rfc5322_date(plus_one).endswith("11:00:05 +0100")


@pytest.mark.parametrize(("session", "smtputf8", "protocol"), [
    (SmtpSession(client_ip="192.0.2.7", helo="a", esmtp=False), False, "SMTP"),
    (SmtpSession(client_ip="192.0.2.7", helo="a", esmtp=True), False, "ESMTP"),
    (SESSION, False, "ESMTPS"),
    (SmtpSession(client_ip="192.0.2.7", helo="a", esmtp=True, auth_user="u"), False, "ESMTPA"),
    (SESSION.model_copy(update={"auth_user": "u"}), False, "ESMTPSA"),
    (SESSION.model_copy(update={"auth_user": "u"}), True, "UTF8SMTPSA"),
    (SmtpSession(client_ip="192.0.2.7", helo="a", esmtp=True), True, "UTF8SMTP"),
])
def test_received_protocol_per_rfc_3848(session: SmtpSession, smtputf8: bool,
                                        protocol: str) -> None:
    header = h.received_header(session, by="mx", queue_id="Q", recipients=[], now=NOW,
                               smtputf8=smtputf8)
    assert f" (Postroom) with {protocol} id Q;".encode() in header


def test_received_header_without_tls_ipv6_and_several_recipients() -> None:
    session = SmtpSession(client_ip="2001:db8::25", helo="[IPv6:2001:db8::25]", esmtp=True)
    header = h.received_header(session, by="mx", queue_id="Q", recipients=["a@x", "b@x"],
                               now=datetime(2026, 11, 21, 11, 0,
                                            tzinfo=timezone(timedelta(hours=1))))
    assert header == (b"Received: from [IPv6:2001:db8::25] (unknown [IPv6:2001:db8::25])\r\n"
                      b"\tby mx (Postroom) with ESMTP id Q; Sat, 21 Nov 2026 11:00:00 +0100\r\n")


@pytest.mark.parametrize("helo", [
    "evil\r\nX-Injected: yes",
    "evil\rX-Injected: yes",
    "evil\nX-Injected: yes",
    "a.example (localhost [127.0.0.1]) by trusted.example with ESMTPSA id X; date",
    "für.example\udcff\x00\x1b[31m",
    "x" * 2000,
])
def test_a_hostile_helo_cannot_break_or_forge_the_received_header(helo: str) -> None:
    session = SmtpSession(client_ip="192.0.2.7", helo=helo, esmtp=True)
    header = h.received_header(session, by="mx", queue_id="Q", recipients=["a@x"], now=NOW)
    assert not h.has_bare_line_ending(header)
    lines = header.split(b"\r\n")
    assert lines[-1] == b"" and len(lines) == 4  # "from", "by", "for ...; date", end
    assert all(len(line) <= 998 for line in lines)
    from_clause = lines[0].removeprefix(b"Received: from ").rpartition(b" (unknown ")[0]
    assert set(from_clause) <= set(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
                                   b"0123456789.-_:[]?")
    assert lines[1] == b"\tby mx (Postroom) with ESMTP id Q"
    msg = email.message_from_bytes(header + b"\r\nbody\r\n", policy=policy.default)
    assert list(msg.keys()) == ["Received"]


@pytest.mark.parametrize(("recipient", "smtputf8", "written"), [
    ("orders+acme@intake.example.com", False, True),
    ('"a>b; c"@intake.example.com', False, False),  # valid, but not written into the header
    ("jürgen+globex@globex.example", True, True),
    ("jürgen+globex@globex.example", False, False),
])
def test_received_for_clause(recipient: str, smtputf8: bool, written: bool) -> None:
    session = SmtpSession(client_ip="192.0.2.7", helo="a", esmtp=True)
    header = h.received_header(session, by="mx", queue_id="Q", recipients=[recipient], now=NOW,
                               smtputf8=smtputf8)
    assert (f"for <{recipient}>;".encode() in header) is written
    assert header.endswith(b"; Sat, 21 Nov 2026 10:00:05 +0000\r\n")


# --- MAIL FROM / RCPT TO addresses: the same answers as aiosmtpd's own parser ------------------


class _Limit:
    def __init__(self, limit: int) -> None:
        self.local_part_limit = limit


def _aiosmtpd_getaddr(arg: str, limit: int = 0) -> tuple[str | None, str | None]:
    from aiosmtpd.smtp import SMTP

    return SMTP._getaddr(_Limit(limit), arg)  # type: ignore[arg-type]


@pytest.mark.parametrize("arg", [
    "", "<a@b.c>", "<orders+acme@intake.example.com>", "<a@b.c> SIZE=12 BODY=8BITMIME",
    "<a@b.c>SIZE=1", "<a@b.c>  ", "<a@b.c> (comment) SIZE=1", "<a@b.c>(c)", "<a@b.c> \x0b X",
    "<a.b+c@d-e.f>", "<\"q x\"@b.c>", "<a@[1.2.3.4]>", "<a..b@c>", "<.a@c>", "<a@b.c.>",
    "<@x:a@b.c>", "<a@b..c>", "<A@B.C>", "a@b.c", "a@b.c SIZE=1", "<>", "<a>", "<a@b.c",
    "<ü@b.c>", "<a@bü.c>", "<a@b.c>\tX", "<a@b.c> <d@e.f>", "<" + "x" * 65 + "@b.c>",
])
def test_smtp_address_matches_aiosmtpd(arg: str) -> None:
    for limit in (0, 64):
        assert h.smtp_address(arg, limit) == _aiosmtpd_getaddr(arg, limit), (arg, limit)


_CHARS = st.sampled_from([*'<>@.+-_ab"() \t\x0b[]:;,=\\!#', "ü"])
_ARGS = st.one_of(
    st.text(alphabet=_CHARS, max_size=24),
    # mostly well-formed <local@domain> with odd bits: the fast path and its edges
    st.builds(lambda local, domain, after: f"<{local}@{domain}>{after}",
              st.text(alphabet=_CHARS, max_size=8), st.text(alphabet=_CHARS, max_size=8),
              st.text(alphabet=_CHARS, max_size=8)),
)


@settings(max_examples=1000, deadline=None)
@given(_ARGS)
def test_smtp_address_matches_aiosmtpd_on_any_input(arg: str) -> None:
    def outcome(parse: Any) -> Any:
        try:
            return parse(arg, 3)
        except Exception as exc:  # the stdlib parser has bugs (IndexError on '"'): the same ones
            return type(exc)

    assert outcome(h.smtp_address) == outcome(_aiosmtpd_getaddr)
