"""The tenant registry: who receives mail at which address, and what happens to it.

Kept in the NATS KV bucket ``postroom-tenants`` (one key per tenant slug, JSON value), so every
service sees a change as soon as it is written. The embedded stack seeds it from a YAML file.

Two kinds of address reach a tenant:

- intake addresses ``<mailbox>+<slug>@<domain>`` at the tenant's ``domains`` (shared intake
  domains such as ``intake.example.com``), from any sender;
- its users' own addresses (``alice@acme.example``) at its ``user_domains``, only from a client
  the tenant lists as one of its ``pbxs`` (by network, or by SMTP AUTH identity over TLS): the
  PBX relays its voicemail notifications through Postroom, which forwards them, enhanced.

``voicemail`` (optional) makes the intake address ``voicemail+<slug>@<domain>`` forward to a
fixed list of addresses.
"""

from __future__ import annotations

import ipaddress
import re
from enum import StrEnum
from typing import Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    field_validator,
    model_validator,
)

from .ids import TENANT_SLUG_PATTERN

WILDCARD_MAILBOX = "*"
VOICEMAIL_MAILBOX = "voicemail"
# BCP-47 as PBXs and speech engines use it: a language, optionally script and region
LANGUAGE_PATTERN = r"^[A-Za-z]{2,3}(?:-[A-Za-z]{4})?(?:-(?:[A-Za-z]{2}|[0-9]{3}))?$"
PBX_NAME_PATTERN = r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$"
# The shortest prefix a PBX network may have: a PBX is one host or a site, never the Internet
MIN_PREFIX = {4: 8, 6: 32}
_ADDRESS = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_DOMAIN = re.compile(r"^(?=.{1,253}$)[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
                     r"(?:\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)+$")

IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def normalise_domain(domain: str) -> str:
    """Lower-case, without surrounding blanks or a trailing dot."""
    return domain.strip().lower().rstrip(".")


def _address(value: str, what: str) -> str:
    value = value.strip()
    if not _ADDRESS.match(value):
        raise ValueError(f"{what} {value!r} is not an address (local@domain)")
    local, _, domain = value.rpartition("@")
    return f"{local}@{normalise_domain(domain)}"


class Action(StrEnum):
    """What should happen to a mail that arrives at a mailbox."""

    EXTRACT = "extract"  # store attachments as documents
    TRANSCRIBE = "transcribe"  # voicemail audio to text
    CLASSIFY = "classify"
    REPLY = "reply"  # draft an AI reply
    FORWARD = "forward"


class MailboxRoute(BaseModel):
    model_config = ConfigDict(extra="forbid")

    actions: list[Action] = Field(default_factory=lambda: [Action.EXTRACT])
    forward_to: list[str] = Field(default_factory=list)
    description: str = ""


class Pbx(BaseModel):
    """A phone system of the tenant that relays its voicemail mail through Postroom."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=PBX_NAME_PATTERN, description="Unique within the tenant")
    networks: list[str] = Field(
        default_factory=list,
        description="Client networks (CIDRs) of the PBX; a client connecting from one is it",
    )
    auth_user: str | None = Field(
        default=None,
        description="SMTP AUTH identity (a user of smtp-ingress's SMTP_AUTH_USERS, which holds "
        "the password); a client authenticated over TLS as this user is the PBX",
    )
    transcribe: bool = True
    language: str = Field(default="en-US", pattern=LANGUAGE_PATTERN, description="BCP-47")
    forward: Literal["original", "map"] = Field(
        default="original",
        description="'original': to the recipients the PBX gave (through the outbound relay); "
        "'map': to the recipients rewritten through address_map",
    )
    address_map: dict[str, str] = Field(
        default_factory=dict,
        description="'alice@acme.example': 'alice@mail.acme.example' rewrites one address; "
        "'@acme.example': '@mail.acme.example' rewrites a domain. Unmapped recipients of a "
        "'map' PBX are refused (550 5.1.1)",
    )
    _networks: tuple[IpNetwork, ...] = PrivateAttr(default=())

    @field_validator("networks")
    @classmethod
    def _networks_valid(cls, value: list[str]) -> list[str]:
        out = []
        for entry in value:
            try:
                network = ipaddress.ip_network(entry.strip(), strict=False)
            except ValueError:
                raise ValueError(f"{entry!r} is not a network (CIDR such as 192.0.2.10/32)") \
                    from None
            if network.prefixlen < MIN_PREFIX[network.version]:
                raise ValueError(
                    f"network {entry!r} is too wide for a PBX (at least "
                    f"/{MIN_PREFIX[network.version]} for IPv{network.version})")
            out.append(str(network))
        return out

    @field_validator("auth_user")
    @classmethod
    def _auth_user(cls, value: str | None) -> str | None:
        if value is not None and (not value or value != value.strip() or ":" in value
                                  or "," in value):
            raise ValueError("auth_user must be a user name of SMTP_AUTH_USERS")
        return value

    @field_validator("address_map")
    @classmethod
    def _address_map(cls, value: dict[str, str]) -> dict[str, str]:
        out: dict[str, str] = {}
        for source, target in value.items():
            if source.startswith("@"):
                domain, to = normalise_domain(source[1:]), normalise_domain(target[1:])
                if not target.startswith("@") or not _DOMAIN.match(domain) \
                        or not _DOMAIN.match(to):
                    raise ValueError(f"address_map {source!r}: a domain maps to a domain "
                                     "('@acme.example': '@mail.acme.example')")
                out["@" + domain] = "@" + to
            else:
                out[_address(source, "address_map key").lower()] = _address(
                    target, "address_map target")
        return out

    @model_validator(mode="after")
    def _complete(self) -> Pbx:
        if not self.networks and self.auth_user is None:
            raise ValueError(f"PBX {self.name!r}: list its networks or its auth_user (or both)")
        if self.forward == "map" and not self.address_map:
            raise ValueError(f"PBX {self.name!r}: forward 'map' needs an address_map")
        self._networks = tuple(ipaddress.ip_network(n) for n in self.networks)
        return self

    def match(self, ip: str, auth_user: str | None) -> Literal["network", "auth"] | None:
        """How a client is this PBX: ``auth`` (authenticated over TLS as its ``auth_user``:
        the caller passes ``auth_user`` only for an encrypted, authenticated session),
        ``network`` (its address is in a listed network), or None (it is not)."""
        if auth_user is not None and self.auth_user is not None and auth_user == self.auth_user:
            return "auth"
        if self._networks:
            try:
                address = ipaddress.ip_address(ip.partition("%")[0])
            except ValueError:
                return None
            if any(address in n for n in self._networks if n.version == address.version):
                return "network"
        return None

    def forward_address(self, recipient: str) -> str | None:
        """Where a recipient the PBX gave is forwarded: itself ('original'), its mapped
        address ('map'), None when the map has no entry for it."""
        if self.forward == "original":
            return recipient
        local, _, domain = recipient.rpartition("@")
        domain = normalise_domain(domain)
        mapped = self.address_map.get(f"{local}@{domain}".lower())
        if mapped is not None:
            return mapped
        to_domain = self.address_map.get("@" + domain)
        return f"{local}@{to_domain[1:]}" if to_domain is not None else None


class VoicemailForward(BaseModel):
    """``voicemail+<slug>@<intake domain>``: forward what arrives there to fixed addresses."""

    model_config = ConfigDict(extra="forbid")

    mailbox: str = Field(default=VOICEMAIL_MAILBOX, pattern=r"^[a-z0-9][a-z0-9._-]{0,63}$")
    forward_to: list[str] = Field(min_length=1)
    language: str = Field(default="en-US", pattern=LANGUAGE_PATTERN, description="BCP-47")
    senders: Literal["any", "pbx"] = Field(
        default="any",
        description="'any': every sender, as any intake address; 'pbx': only the tenant's PBXs",
    )

    @field_validator("forward_to")
    @classmethod
    def _forward_to(cls, value: list[str]) -> list[str]:
        return [_address(a, "voicemail forward_to") for a in value]


class Tenant(BaseModel):
    model_config = ConfigDict(extra="forbid")

    slug: str = Field(pattern=TENANT_SLUG_PATTERN)
    name: str = ""
    domains: list[str] = Field(min_length=1)
    mailboxes: dict[str, MailboxRoute] = Field(
        default_factory=lambda: {WILDCARD_MAILBOX: MailboxRoute()}
    )
    enabled: bool = True
    user_domains: list[str] = Field(
        default_factory=list,
        description="The tenant's own mail domains (acme.example): its PBXs relay to them",
    )
    pbxs: list[Pbx] = Field(default_factory=list)
    voicemail: VoicemailForward | None = None

    @field_validator("domains")
    @classmethod
    def _lower_domains(cls, value: list[str]) -> list[str]:
        return [normalise_domain(d) for d in value]

    @field_validator("mailboxes")
    @classmethod
    def _lower_mailboxes(cls, value: dict[str, MailboxRoute]) -> dict[str, MailboxRoute]:
        return {k.strip().lower(): v for k, v in value.items()}

    @field_validator("user_domains")
    @classmethod
    def _user_domains(cls, value: list[str]) -> list[str]:
        out = [normalise_domain(d) for d in value]
        for domain in out:
            if not _DOMAIN.match(domain):
                raise ValueError(f"user domain {domain!r} is not a domain name")
        return out

    @model_validator(mode="after")
    def _consistent(self) -> Tenant:
        both = sorted(set(self.domains) & set(self.user_domains))
        if both:
            raise ValueError(f"{', '.join(both)}: a domain is an intake domain (domains) or a "
                             "user domain (user_domains), not both")
        names = [p.name for p in self.pbxs]
        if len(set(names)) != len(names):
            raise ValueError("PBX names must be unique within a tenant")
        return self

    def route(self, mailbox: str) -> MailboxRoute | None:
        """The route for a mailbox (local part before ``+``), or None when it has none. The
        voicemail mailbox, when ``voicemail`` is set, is routed even if not listed (actions
        transcribe and forward)."""
        mailbox = mailbox.lower()
        found = self.mailboxes.get(mailbox)
        if found is None and self.voicemail is not None and mailbox == self.voicemail.mailbox:
            return MailboxRoute(actions=[Action.TRANSCRIBE, Action.FORWARD])
        return found or self.mailboxes.get(WILDCARD_MAILBOX)

    def pbx_for(self, ip: str, auth_user: str | None
                ) -> tuple[Pbx, Literal["network", "auth"]] | None:
        """The PBX of this tenant the client is, and how it was recognised: an authenticated
        identity wins over a network, then the PBXs' order."""
        matches = [(p, m) for p in self.pbxs if (m := p.match(ip, auth_user)) is not None]
        matches.sort(key=lambda pm: pm[1] != "auth")
        return matches[0] if matches else None

    def registry_json(self) -> bytes:
        """The KV value. The PBX fields are left out while unused, so a tenant that does not
        use them reads as before in services that do not know them yet (they refuse unknown
        fields)."""
        unused = {f for f in ("user_domains", "pbxs", "voicemail") if not getattr(self, f)}
        return self.model_dump_json(exclude=unused).encode()


class TenantSeed(BaseModel):
    """The seed file: ``tenants: [...]``."""

    model_config = ConfigDict(extra="forbid")

    tenants: list[Tenant]

    @model_validator(mode="after")
    def _user_domains_owned_once(self) -> TenantSeed:
        """A user domain belongs to one tenant and is nobody's intake domain (services refuse
        relaying to a domain claimed twice, whatever the seed says)."""
        owner: dict[str, str] = {}
        intake = {d for t in self.tenants for d in t.domains}
        for tenant in self.tenants:
            for domain in tenant.user_domains:
                if domain in owner and owner[domain] != tenant.slug:
                    raise ValueError(f"user domain {domain!r} is claimed by tenants "
                                     f"{owner[domain]!r} and {tenant.slug!r}")
                if domain in intake:
                    raise ValueError(f"user domain {domain!r} of tenant {tenant.slug!r} is "
                                     "also an intake domain")
                owner[domain] = tenant.slug
        return self
