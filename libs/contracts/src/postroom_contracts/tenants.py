"""The tenant registry: who receives mail at which address, and what happens to it.

Kept in the NATS KV bucket ``postroom-tenants`` (one key per tenant slug, JSON value), so every
service sees a change as soon as it is written. The embedded stack seeds it from a YAML file.
"""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field, field_validator

from .ids import TENANT_SLUG_PATTERN

WILDCARD_MAILBOX = "*"


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


class Tenant(BaseModel):
    model_config = ConfigDict(extra="forbid")

    slug: str = Field(pattern=TENANT_SLUG_PATTERN)
    name: str = ""
    domains: list[str] = Field(min_length=1)
    mailboxes: dict[str, MailboxRoute] = Field(
        default_factory=lambda: {WILDCARD_MAILBOX: MailboxRoute()}
    )
    enabled: bool = True

    @field_validator("domains")
    @classmethod
    def _lower_domains(cls, value: list[str]) -> list[str]:
        return [d.strip().lower().rstrip(".") for d in value]

    @field_validator("mailboxes")
    @classmethod
    def _lower_mailboxes(cls, value: dict[str, MailboxRoute]) -> dict[str, MailboxRoute]:
        return {k.strip().lower(): v for k, v in value.items()}

    def route(self, mailbox: str) -> MailboxRoute | None:
        """The route for a mailbox (local part before ``+``), or None when it has none."""
        mailbox = mailbox.lower()
        return self.mailboxes.get(mailbox) or self.mailboxes.get(WILDCARD_MAILBOX)


class TenantSeed(BaseModel):
    """The seed file: ``tenants: [...]``."""

    model_config = ConfigDict(extra="forbid")

    tenants: list[Tenant]
