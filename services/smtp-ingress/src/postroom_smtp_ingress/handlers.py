"""Pure logic of smtp-ingress: recipients, routing, headers, Message-IDs, the event.

Nothing here does I/O or knows aiosmtpd: the SMTP protocol glue lives in ``app.py``.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from email._header_value_parser import get_addr_spec, get_angle_addr
from email.errors import HeaderParseError
from email.utils import format_datetime

from postroom_contracts import (
    BlobRef,
    MailReceived,
    RouteDecision,
    SmtpSession,
    Tenant,
    is_tenant_slug,
)

# the headers and the event are shared with mailbox-sync (postroom_runtime.mail)
from postroom_runtime.mail import (  # noqa: F401 - re-exported for the SMTP pipeline
    MAX_MESSAGE_ID_LENGTH,
    MailHeaders,
    header_section,
    read_headers,
    received_event,
    reverse_path,
)
from postroom_runtime.mail import text as _text

# --- SMTP replies -----------------------------------------------------------------------------

ACCEPTED = "250 2.0.0 Message accepted"
ACCEPTED_DUPLICATE = "250 2.0.0 Message accepted (duplicate)"
RECIPIENT_OK = "250 2.1.5 Recipient OK"
RELAY_DENIED = "550 5.7.1 Relaying denied"
UNKNOWN_RECIPIENT = "550 5.1.1 Unknown recipient"
TOO_MANY_RECIPIENTS = "452 4.5.3 Too many recipients"
TEMPORARY_FAILURE = "451 4.3.0 Temporary server error, try again later"
BARE_LINE_ENDING = "550 5.5.2 Bare CR or LF not allowed in message data, use CRLF"
TLS_REQUIRED = "530 5.7.0 Must issue a STARTTLS command first"
TOO_MANY_CONNECTIONS = "421 4.7.0 Too many connections"

# --- recipients -------------------------------------------------------------------------------


_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_DOT_ATOM = rf"{_ATEXT}(?:\.{_ATEXT})*"
_PLAIN_ANGLE_ADDR = re.compile(rf"<({_DOT_ATOM}@{_DOT_ATOM})>")


def smtp_address(arg: str, local_part_limit: int = 0) -> tuple[str | None, str | None]:
    """The address and the rest (parameters) of a MAIL FROM / RCPT TO argument, exactly as
    aiosmtpd's ``SMTP._getaddr`` returns them: ``('', '')`` for nothing, ``(None, None)`` for
    a malformed address or a local part over ``local_part_limit``.

    aiosmtpd defines a class on every call and runs the RFC 5322 parser; the plain form
    ``<local@domain>`` (ASCII dot-atoms, the form nearly every client sends) is matched here
    directly, anything else still goes through the parser.
    """
    if not arg:
        return "", ""
    match = _PLAIN_ANGLE_ADDR.match(arg)
    rest: str | None = None
    if match is not None:
        addr, after = match.group(1), arg[match.end():]
        # the parser drops leading whitespace (and comments) after '>': only the simple cases
        if not after or after[0] not in " \t(":
            rest = after
        elif after[0] in " \t" and not after.lstrip().startswith("("):
            rest = after.lstrip()
    if rest is None:
        try:
            if arg.lstrip().startswith("<"):
                address, rest = get_angle_addr(arg)
            else:
                address, rest = get_addr_spec(arg)
        except HeaderParseError:
            return None, None
        addr = address.addr_spec
    if local_part_limit and len(addr.rpartition("@")[0]) > local_part_limit:
        return None, None
    return addr, rest


@dataclass(frozen=True)
class Address:
    """``<mailbox>+<tag>@<domain>``; ``tag`` is empty when the local part has no ``+``."""

    mailbox: str
    tag: str
    domain: str


def normalise_domain(domain: str) -> str:
    """Lower-case, without a trailing dot; an internationalised domain becomes its A-label."""
    domain = domain.strip().rstrip(".").lower()
    if not domain.isascii():
        try:
            domain = domain.encode("idna").decode("ascii")
        except UnicodeError:
            pass
    return domain


def parse_address(address: str) -> Address | None:
    """Split an envelope address; None when it has no domain or no local part."""
    local, sep, domain = address.rpartition("@")
    if not sep or not local or not domain:
        return None
    mailbox, _, tag = local.partition("+")
    return Address(mailbox=mailbox.lower(), tag=tag.lower(), domain=normalise_domain(domain))


@dataclass(frozen=True)
class Recipient:
    address: str
    tenant: str
    mailbox: str
    actions: tuple[str, ...]
    route: RouteDecision | None = None  # relayed by a PBX or a voicemail address: relay.py


def route_recipient(
    address: str,
    *,
    tenant: Callable[[str], Tenant | None],
    domains: Collection[str],
    shared_domains: Collection[str] = (),
    parsed: Address | None = None,
) -> Recipient | str:
    """Decide one ``RCPT TO``: the routed recipient, or the SMTP reply refusing it.

    ``tenant`` looks an enabled tenant up by slug; ``domains`` are all tenants' domains
    (normalised with :func:`normalise_domain`);
    ``shared_domains`` are extra domains at which every tenant can be addressed. A tenant is
    otherwise reachable only at its own domains. A domain that is not ours is refused as
    relaying: this server is never an open relay. ``parsed``: ``address`` already parsed.
    """
    if parsed is None:
        parsed = parse_address(address)
    if parsed is None:
        return UNKNOWN_RECIPIENT
    shared = parsed.domain in shared_domains
    if not shared and parsed.domain not in domains:
        return RELAY_DENIED
    if not parsed.mailbox or not is_tenant_slug(parsed.tag):
        return UNKNOWN_RECIPIENT
    found = tenant(parsed.tag)
    if found is None or not found.enabled:
        return UNKNOWN_RECIPIENT
    if not shared and parsed.domain not in {normalise_domain(d) for d in found.domains}:
        return UNKNOWN_RECIPIENT
    route = found.route(parsed.mailbox)
    if route is None:
        return UNKNOWN_RECIPIENT
    return Recipient(
        address=address,
        tenant=found.slug,
        mailbox=parsed.mailbox,
        actions=tuple(str(a) for a in route.actions),
    )


@dataclass
class TenantDelivery:
    """The part of one mail that goes to one tenant: one ``mail.received`` event."""

    tenant: str
    mailbox: str  # of the first recipient of this tenant
    actions: list[str] = field(default_factory=list)  # union, in order of first appearance
    recipients: list[str] = field(default_factory=list)
    route: RouteDecision | None = None  # one per copy (relay.fits_transaction); merged targets


def group_by_tenant(recipients: Iterable[Recipient]) -> list[TenantDelivery]:
    """One delivery per tenant, in the order the tenants first appear. The recipients of one
    tenant share one route class (checked at RCPT); their final recipients are merged."""
    out: dict[str, TenantDelivery] = {}
    for rcpt in recipients:
        delivery = out.get(rcpt.tenant)
        if delivery is None:
            delivery = out[rcpt.tenant] = TenantDelivery(tenant=rcpt.tenant, mailbox=rcpt.mailbox)
        for action in rcpt.actions:
            if action not in delivery.actions:
                delivery.actions.append(action)
        if rcpt.address not in delivery.recipients:
            delivery.recipients.append(rcpt.address)
        if rcpt.route is not None:
            route = delivery.route
            if route is None:
                delivery.route = rcpt.route
            else:
                more = [a for a in rcpt.route.forward_to if a not in route.forward_to]
                if more:
                    delivery.route = route.model_copy(
                        update={"forward_to": [*route.forward_to, *more]})
    return list(out.values())


# --- message data -----------------------------------------------------------------------------


def has_bare_line_ending(data: bytes) -> bool:
    """True when ``data`` holds a CR or LF that is not part of a CRLF pair.

    Such line endings are how SMTP smuggling hides a second message inside the first (a
    downstream MTA may end DATA at ``<LF>.<LF>``), so they are refused outright.
    """
    crlf = data.count(b"\r\n")
    return data.count(b"\n") != crlf or data.count(b"\r") != crlf


# --- the SMTP session: facts, trace header ------------------------------------------------------


def client_address(peer: object) -> tuple[str, int | None]:
    """IP and port of a peer as ``transport.get_extra_info('peername')`` gives it. An
    IPv4-mapped IPv6 address (a dual-stack listener) is written as the IPv4 address it is."""
    if not isinstance(peer, tuple) or not peer:
        return "unknown", None
    host = str(peer[0])
    port = peer[1] if len(peer) > 1 and isinstance(peer[1], int) else None
    if ":" not in host:  # IPv4 as the socket gives it (parsing costs ~10 us per mail)
        return host, port
    try:
        ip = ipaddress.ip_address(host.partition("%")[0])
    except ValueError:
        return host, port
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped), port
    return host, port


def session_facts(
    *,
    peer: object,
    helo: str | None,
    esmtp: bool,
    tls: tuple[str | None, str | None, int | None] | None,
    auth_user: str | None,
    auth_mechanism: str | None,
) -> SmtpSession:
    """What the event says about the session. ``tls`` is ``(version, cipher, bits)`` of the
    encrypted connection, None for a plain one; ``auth_user`` None when not authenticated."""
    ip, port = client_address(peer)
    version, cipher, bits = tls if tls is not None else (None, None, None)
    return SmtpSession(
        client_ip=ip,
        client_port=port,
        helo=_text(helo) if helo is not None else None,
        esmtp=esmtp,
        tls_version=version,
        tls_cipher=cipher,
        tls_bits=bits,
        auth_user=_text(auth_user) if auth_user is not None else None,
        auth_mechanism=auth_mechanism if auth_user is not None else None,
    )


def protocol_name(session: SmtpSession, smtputf8: bool = False) -> str:
    """The ``with`` keyword of the Received header: SMTP, ESMTP(S)(A) (RFC 3848), or the
    UTF8SMTP(S)(A) forms of RFC 6531 for an SMTPUTF8 transaction."""
    if not session.esmtp:
        return "SMTP"  # HELO: no extensions, so neither STARTTLS nor AUTH were negotiated
    suffix = ("S" if session.tls_version else "") + ("A" if session.auth_user else "")
    return ("UTF8SMTP" if smtputf8 else "ESMTP") + suffix


# A token of a trace header: what a domain, an address literal or a cipher name is made of.
# Anything else (space, parentheses, ';', control or non-ASCII characters) becomes '?', as
# Postfix does, so a hostile HELO can neither break the header nor forge a clause in it.
_UNSAFE_TOKEN = re.compile(r"[^A-Za-z0-9.\-_:\[\]]")
# A recipient written in "for <...>" as is; a stranger one (quoted local part) is left out
_SAFE_RECIPIENT = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~.@\-\[\]:]+")
MAX_TRACE_TOKEN = 255


def trace_token(value: str | None, limit: int = MAX_TRACE_TOKEN) -> str:
    """``value`` made safe to write into a Received header (see ``_UNSAFE_TOKEN``)."""
    if not value:
        return "?"
    return _UNSAFE_TOKEN.sub("?", value[:limit])


def _address_literal(ip: str) -> str:
    """``[192.0.2.1]`` or ``[IPv6:2001:db8::1]`` (RFC 5321 4.1.3)."""
    if ":" in ip:
        try:
            return f"[IPv6:{ipaddress.IPv6Address(ip.partition('%')[0])}]"
        except ValueError:
            pass
    return f"[{trace_token(ip, 64)}]"


_last_date: tuple[datetime, str] | None = None


def rfc5322_date(now: datetime) -> str:
    """``now`` (timezone-aware) as an RFC 5322 date, formatted once per second (email.utils
    takes ~20 us, and every mail of that second needs the same text)."""
    global _last_date
    second = now.replace(microsecond=0)
    cached = _last_date
    if cached is not None and cached[0] == second and cached[0].utcoffset() == now.utcoffset():
        return cached[1]
    text = format_datetime(second)
    _last_date = (second, text)
    return text


def received_header(
    session: SmtpSession,
    *,
    by: str,
    queue_id: str,
    recipients: list[str],
    now: datetime,
    smtputf8: bool = False,
) -> bytes:
    """The ``Received:`` trace header prepended to every accepted mail (RFC 5321 4.4), in
    the form Postfix writes::

        Received: from <helo> (unknown [<ip>])
        \t(using TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits))
        \tby <our host> (Postroom) with ESMTPS id <queue id>
        \tfor <recipient>; <RFC 5322 date>

    The client's name is "unknown": it would need a reverse DNS lookup, and the time to the
    250 must not depend on DNS. The TLS line only for an encrypted session; ``for`` only when
    the transaction has one recipient (as Postfix). ``now`` must be timezone-aware.
    """
    lines = [f"Received: from {trace_token(session.helo)} "
             f"(unknown {_address_literal(session.client_ip)})"]
    if session.tls_version:
        bits = session.tls_bits if session.tls_bits is not None else 0
        lines.append(f"\t(using {trace_token(session.tls_version, 32)} with cipher "
                     f"{trace_token(session.tls_cipher, 64)} ({bits}/{bits} bits))")
    lines.append(f"\tby {trace_token(by)} (Postroom) with {protocol_name(session, smtputf8)} "
                 f"id {trace_token(queue_id, 32)}")
    date = rfc5322_date(now)
    recipient = recipients[0] if len(recipients) == 1 else None
    if recipient is not None and len(recipient) <= 320 and (
        _SAFE_RECIPIENT.fullmatch(recipient)
        or (smtputf8 and recipient.isprintable() and not any(c in recipient for c in ' <>;()"\\'))
    ):
        lines.append(f"\tfor <{recipient}>; {date}")
    else:
        lines[-1] += f"; {date}"
    return ("\r\n".join(lines) + "\r\n").encode("utf-8", "replace")


# --- the event --------------------------------------------------------------------------------


def build_event(
    delivery: TenantDelivery,
    headers: MailHeaders,
    *,
    content_sha256: str,
    envelope_from: str,
    raw: BlobRef,
    session: SmtpSession | None = None,
    message_id_reused: bool = False,
) -> MailReceived:
    """The ``mail.received`` event of one tenant's copy. Its key is derived from tenant,
    Message-ID and ``content_sha256`` (the message as the client sent it), its id from the
    key: a retried transaction publishes the same ``Nats-Msg-Id``, a mail that reuses a
    Message-ID with other content gets its own key and id."""
    return received_event(
        tenant=delivery.tenant,
        mailbox=delivery.mailbox,
        actions=delivery.actions,
        recipients=delivery.recipients,
        headers=headers,
        content_sha256=content_sha256,
        envelope_from=envelope_from,
        raw=raw,
        source="smtp",
        session=session,
        route=delivery.route,
        message_id_reused=message_id_reused,
    )
