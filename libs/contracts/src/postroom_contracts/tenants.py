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
import json
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


class KnowledgePassage(BaseModel):
    """One passage of a tenant's knowledge base: what a drafted reply may rely on."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._-]+$")
    title: str = ""
    text: str = Field(min_length=1)


class RateLimit(BaseModel):
    """A token bucket: ``burst`` replies at once, refilled at ``per_hour``."""

    model_config = ConfigDict(extra="forbid")

    per_hour: int = Field(ge=0, description="Replies per hour (0: none)")
    burst: int = Field(default=1, ge=1, description="Replies allowed at once")


class ReplyLimits(BaseModel):
    model_config = ConfigDict(extra="forbid")

    sender: RateLimit = Field(default_factory=lambda: RateLimit(per_hour=5, burst=3),
                              description="Per sender address")
    thread: RateLimit = Field(default_factory=lambda: RateLimit(per_hour=3, burst=2),
                              description="Per thread (the first Message-ID of References)")
    tenant: RateLimit = Field(default_factory=lambda: RateLimit(per_hour=200, burst=20),
                              description="For the whole tenant")


REPLY_LANGUAGE_PATTERN = r"^(?:auto|[a-z]{2})$"


class ReplyPolicy(BaseModel):
    """How ai-responder answers a tenant's mail (``Tenant.reply``), overridden per mailbox
    (``MailboxRoute.reply``: the fields it sets replace the tenant's). A mailbox gets replies
    only when its actions list ``reply`` and a policy applies."""

    model_config = ConfigDict(extra="forbid")

    labels: list[str] = Field(
        default_factory=lambda: ["support"],
        description="Classification labels that get a reply (mail.classified)")
    mode: Literal["draft", "auto"] = Field(
        default="draft", description="'draft': a person approves every reply in the console; "
        "'auto': sent at once unless a guardrail holds it")
    language: str = Field(default="auto", pattern=REPLY_LANGUAGE_PATTERN,
                          description="'auto': the sender's language; else 'en', 'fr', 'de'")
    template: str = Field(default="standard", pattern=r"^[a-z0-9][a-z0-9_-]{0,63}$",
                          description="Reply template (ai-responder's templates/<name>)")
    from_address: str | None = Field(
        default=None, description="From of replies; default the address the mail was sent "
        "to (an IMAP account's own), else <mailbox>+<slug>@<first domain>")
    assistant_name: str = Field(default="Support", description="Signature of the reply")
    organisation: str = Field(default="", description="Under the signature; default the "
                              "tenant's name")
    disclaimer: dict[str, str] = Field(
        default_factory=dict, description="Disclaimer under every reply, by language "
        "('en', 'fr', 'de'); missing: the template's own")
    knowledge: list[KnowledgePassage] = Field(default_factory=list)
    knowledge_file: str | None = Field(
        default=None, description="A YAML or JSON file with more passages (a list of "
        "{id, title, text}), read by ai-responder")
    forbidden_topics: list[str] = Field(
        default_factory=list, description="Words or phrases: a mail about one gets no reply, "
        "a draft mentioning one is held")
    redact_pii: bool = Field(
        default=False, description="Replace addresses, phone numbers, IBANs and card numbers "
        "in the prompt by placeholders")
    limits: ReplyLimits = Field(default_factory=ReplyLimits)

    @field_validator("labels")
    @classmethod
    def _labels(cls, value: list[str]) -> list[str]:
        from .events import CLASSIFICATION_LABELS

        unknown = [v for v in value if v not in CLASSIFICATION_LABELS]
        if unknown:
            raise ValueError(f"unknown labels {unknown}; labels are "
                             f"{', '.join(CLASSIFICATION_LABELS)}")
        return value

    @field_validator("from_address")
    @classmethod
    def _from(cls, value: str | None) -> str | None:
        return None if value is None else _address(value, "reply from_address")

    @model_validator(mode="after")
    def _unique_passages(self) -> ReplyPolicy:
        ids = [p.id for p in self.knowledge]
        if len(set(ids)) != len(ids):
            raise ValueError("knowledge passage ids must be unique")
        return self


class MailboxRoute(BaseModel):
    model_config = ConfigDict(extra="forbid")

    actions: list[Action] = Field(default_factory=lambda: [Action.EXTRACT])
    forward_to: list[str] = Field(default_factory=list)
    description: str = ""
    reply: ReplyPolicy | None = Field(
        default=None, description="This mailbox's reply policy: the fields it sets replace "
        "the tenant's (Tenant.reply)")


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
    reply: ReplyPolicy | None = Field(
        default=None, description="Reply policy of every mailbox that lists 'reply' "
        "(a mailbox's own `reply` overrides fields of it)")

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

    def reply_policy(self, mailbox: str) -> ReplyPolicy | None:
        """The reply policy for a mailbox: None when its route does not list ``reply`` or no
        policy is set; the tenant's with the fields the mailbox's own policy sets replaced."""
        route = self.route(mailbox)
        if route is None or Action.REPLY not in route.actions:
            return None
        own, base = route.reply, self.reply
        if own is None or base is None:
            return own or base
        return base.model_copy(update={f: getattr(own, f) for f in own.model_fields_set})

    def reply_from_address(self, mailbox: str, policy: ReplyPolicy) -> str:
        return policy.from_address or f"{mailbox.lower()}+{self.slug}@{self.domains[0]}"

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
        unused = {f for f in ("user_domains", "pbxs", "voicemail", "reply")
                  if not getattr(self, f)}
        data = self.model_dump(mode="json", exclude=unused)
        for route in data["mailboxes"].values():
            if route.get("reply") is None:
                route.pop("reply", None)
        return json.dumps(data, separators=(",", ":")).encode()


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
