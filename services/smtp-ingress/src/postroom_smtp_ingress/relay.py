"""Pure logic of the PBX relay: who may send to a tenant's own user domains, and where the
voicemail mail goes (the ``route`` of ``mail.received``).

Decided at ``RCPT``, one recipient at a time, in this order:

1. a domain where tenants receive intake mail (a tenant's ``domains`` or ``SMTP_DOMAINS``):
   plus-addressed intake, from any client, as before (:func:`handlers.route_recipient`); the
   tenant's voicemail mailbox (``voicemail+<slug>@...``) when it has a ``voicemail`` entry
   also gets a route to the addresses listed there;
2. a user domain of exactly one enabled tenant (``acme.example``): accepted only from a PBX
   that tenant lists (connecting from a listed network, or authenticated over TLS as the
   PBX's ``auth_user``); anyone else gets ``550 5.7.1``;
3. any other domain: ``550 5.7.1``, whoever asks. Never an open relay.

Nothing here does I/O or knows aiosmtpd.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass, replace

from postroom_contracts import Action, RouteDecision, Tenant

from .handlers import (
    RELAY_DENIED,
    UNKNOWN_RECIPIENT,
    Recipient,
    parse_address,
    route_recipient,
)

# RCPT for a tenant that already has recipients of another kind in this transaction (intake,
# PBX relay, voicemail address): one event per tenant copy carries one route, so the client
# sends this recipient again in a transaction of its own (RFC 5321 4.5.3.1.10)
SEPARATE_TRANSACTION = "452 4.5.3 Send this recipient in a separate transaction"
VOICEMAIL_FROM_PBX_ONLY = "550 5.7.1 Only the tenant's PBX may send to this address"
MAIL_LOOP = "554 5.4.6 Mail loop detected"

# Why a recipient was refused as relaying (the label of postroom_smtp_relay_denied_total)
DENIED_NOT_OURS = "not_our_domain"
DENIED_NOT_PBX = "not_tenant_pbx"
DENIED_AMBIGUOUS = "domain_not_routable"
DENIED_VOICEMAIL = "voicemail_not_from_pbx"


@dataclass(frozen=True)
class Client:
    """The SMTP client as the relay decision sees it. ``auth_user`` is the SMTP AUTH identity
    of an encrypted session, None otherwise (an identity never counts without TLS)."""

    ip: str
    auth_user: str | None = None


@dataclass(frozen=True)
class Denied:
    """A refused recipient: the reply and, for a relay refusal, why (for the metric)."""

    reply: str
    reason: str | None = None


def decide_recipient(
    address: str,
    client: Client,
    *,
    tenant: Callable[[str], Tenant | None],
    domains: Collection[str],
    shared_domains: Collection[str] = (),
    user_domain_owner: Callable[[str], Tenant | None],
) -> Recipient | Denied:
    """Decide one ``RCPT TO`` (see the module's docstring). ``domains`` are all tenants'
    intake domains, ``user_domain_owner`` the registry's lookup of a user domain."""
    parsed = parse_address(address)
    if parsed is None:
        return Denied(UNKNOWN_RECIPIENT)
    if parsed.domain in domains or parsed.domain in shared_domains:
        routed = route_recipient(address, tenant=tenant, domains=domains,
                                 shared_domains=shared_domains, parsed=parsed)
        if isinstance(routed, str):
            return Denied(routed)
        return _voicemail(routed, tenant(routed.tenant), client)
    owner = user_domain_owner(parsed.domain)
    if owner is None:
        return Denied(RELAY_DENIED, DENIED_NOT_OURS)
    found = owner.pbx_for(client.ip, client.auth_user)
    if found is None:
        return Denied(RELAY_DENIED, DENIED_NOT_PBX)
    pbx, matched_by = found
    target = pbx.forward_address(address)
    if target is None:  # a 'map' PBX whose map does not know this recipient
        return Denied(UNKNOWN_RECIPIENT)
    actions = [Action.TRANSCRIBE, Action.FORWARD] if pbx.transcribe else [Action.FORWARD]
    return Recipient(
        address=address,
        tenant=owner.slug,
        mailbox=parsed.mailbox,
        actions=tuple(str(a) for a in actions),
        route=RouteDecision(
            kind="pbx", pbx=pbx.name, matched_by=matched_by, transcribe=pbx.transcribe,
            language=pbx.language, forward_to=[target], forward_mode=pbx.forward,
        ),
    )


def _voicemail(rcpt: Recipient, tenant: Tenant | None, client: Client) -> Recipient | Denied:
    """An intake recipient; with a route when it is the tenant's voicemail address."""
    voicemail = tenant.voicemail if tenant is not None else None
    if tenant is None or voicemail is None or rcpt.mailbox != voicemail.mailbox:
        return rcpt
    found = tenant.pbx_for(client.ip, client.auth_user)
    if found is None and voicemail.senders == "pbx":
        return Denied(VOICEMAIL_FROM_PBX_ONLY, DENIED_VOICEMAIL)
    pbx, matched_by = found if found is not None else (None, None)
    return replace(rcpt, route=RouteDecision(
        kind="voicemail-address", pbx=pbx.name if pbx is not None else None,
        matched_by=matched_by, transcribe=str(Action.TRANSCRIBE) in rcpt.actions,
        language=voicemail.language, forward_to=list(voicemail.forward_to),
        forward_mode="list",
    ))


def _route_class(route: RouteDecision | None) -> RouteDecision | None:
    """What must be the same for all recipients of one tenant copy: the route without its
    recipients."""
    return None if route is None else route.model_copy(update={"forward_to": []})


def fits_transaction(accepted: Iterable[Recipient], rcpt: Recipient) -> bool:
    """True when ``rcpt`` can share this transaction's event for its tenant: each tenant copy
    has one route, so all its recipients are intake, or all relayed by the same PBX, or all
    its voicemail address."""
    wanted = _route_class(rcpt.route)
    return all(_route_class(other.route) == wanted
               for other in accepted if other.tenant == rcpt.tenant)


def is_loop(header_section: bytes, hostname: str) -> bool:
    """True when the mail already passed through this server (our own ``Received:`` header,
    ``by <hostname> (Postroom)``): relayed mail that comes back, e.g. through an outbound
    relay pointed at us, is refused instead of forwarded again."""
    return f"by {hostname} (Postroom)".encode().lower() in header_section.lower()
