"""mailer settings: the shared runtime settings plus the relay, DKIM, retries and templates."""

from __future__ import annotations

import re
from pathlib import Path
from typing import ClassVar

from pydantic import Field, field_validator

from postroom_runtime import RuntimeSettings

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_schedule(value: str) -> tuple[float, ...]:
    """``"5s,30s,2m"`` -> ``(5.0, 30.0, 120.0)``: the delays before retry 1, 2, 3..."""
    delays: list[float] = []
    for item in value.split(","):
        if not item.strip():
            continue
        match = _DURATION.match(item)
        if match is None:
            raise ValueError(f"not a duration: {item.strip()!r} (e.g. 5s, 2m, 1h, 500ms)")
        delays.append(float(match.group(1)) * _UNITS[match.group(2) or "s"])
    return tuple(delays)


class MailerSettings(RuntimeSettings):
    """Environment variables (upper-case names), e.g. ``MAILER_RELAY_URL=smtp://relay:25``."""

    service_name: ClassVar[str] = "mailer"
    http_port: int = Field(default=8028, ge=0, le=65535)

    mailer_relay_url: str = Field(
        default="",
        description="smtp://host:port, smtp+starttls://host:port or smtps://host:port, "
        "optionally user:password@; empty: capture mail as .eml files (MAILER_CAPTURE_DIR)",
    )
    mailer_relay_username: str | None = Field(default=None, description="AUTH user")
    mailer_relay_password: str | None = Field(default=None, description="AUTH password")
    mailer_relay_timeout_seconds: float = Field(default=30.0, gt=0)
    mailer_relay_tls_verify: bool = Field(
        default=True, description="Verify the relay's certificate (STARTTLS and smtps)")
    mailer_relay_ca_file: Path | None = Field(
        default=None, description="CA bundle for the relay's certificate")
    mailer_capture_dir: Path = Field(
        default=Path("var/outbox"), description="Captured .eml files when no relay is set")
    mailer_envelope_from: str | None = Field(
        default=None, description="Envelope sender when the request names none")
    mailer_from_address: str = Field(
        default="postroom@localhost", description="From of a new mail that names none")
    mailer_message_id_domain: str = Field(
        default="postroom.invalid", pattern=r"^[A-Za-z0-9.-]+$",
        description="Right-hand side of the Message-IDs the mailer derives from delivery_id")
    mailer_dkim_domain: str | None = None
    mailer_dkim_selector: str | None = None
    mailer_dkim_key_file: Path | None = Field(
        default=None, description="PEM private key; signing is on when domain, selector and "
        "key are all set")
    mailer_dkim_private_key: str | None = Field(
        default=None, repr=False,
        description="The PEM private key itself (e.g. from a Kubernetes Secret), instead of "
        "MAILER_DKIM_KEY_FILE")
    mailer_retry_schedule: str = Field(
        default="5s,30s,2m,10m,30m,2h",
        description="Delays before each retry of a temporary failure; then delivery.failed")
    mailer_resend_uncertain: bool = Field(
        default=True,
        description="A row found 'sending' after a crash (the relay may have it): true = send "
        "again (at-least-once), false = fail it for a person to check")
    mailer_send_lease_seconds: float = Field(
        default=300.0, gt=0,
        description="PostgreSQL: a row 'sending' for longer than this is taken as its "
        "sender's crash (keep it well above the relay timeout)")
    mailer_send_concurrency: int = Field(
        default=4, ge=1, le=100, description="SMTP conversations one process holds at once")
    mailer_send_batch: int = Field(
        default=32, ge=1, le=1000,
        description="Rows one claim takes (committed 'sending' together; results are "
        "recorded in groups as conversations finish)")
    mailer_sender_poll_seconds: float = Field(default=1.0, gt=0)
    mailer_template_dir: Path | None = Field(
        default=None, description="Overrides: <dir>/<tenant>/voicemail.html.j2, then "
        "<dir>/voicemail.html.j2, then the templates shipped in the package")

    @field_validator("mailer_relay_username", "mailer_relay_password", "mailer_relay_ca_file",
                     "mailer_envelope_from", "mailer_dkim_domain", "mailer_dkim_selector",
                     "mailer_dkim_key_file", "mailer_dkim_private_key", "mailer_template_dir",
                     mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        return None if value == "" else value

    @field_validator("mailer_retry_schedule")
    @classmethod
    def _schedule(cls, value: str) -> str:
        parse_schedule(value)
        return value

    @property
    def retry_schedule(self) -> tuple[float, ...]:
        return parse_schedule(self.mailer_retry_schedule)
