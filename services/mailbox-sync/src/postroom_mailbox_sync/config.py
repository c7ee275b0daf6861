"""mailbox-sync settings: the shared runtime settings plus the IMAP timings, the static account
of the simple case, the credentials key, the API token and the inbound-parse secrets."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from pydantic import Field, field_validator, model_validator

from postroom_runtime import RuntimeSettings

# RFC 2177: a server may drop an IDLE client after 30 minutes; renew before 29
IDLE_LIMIT_SECONDS = 29 * 60


def parse_secrets(value: str) -> dict[tuple[str, str], str]:
    """``"acme/support=s3cret,globex=other"`` -> ``{("acme", "support"): "s3cret",
    ("globex", "*"): "other"}``: the inbound-parse secret per tenant and mailbox (``*``: every
    mailbox of the tenant)."""
    out: dict[tuple[str, str], str] = {}
    for item in value.split(","):
        item = item.strip()
        if not item:
            continue
        target, sep, secret = item.partition("=")
        if not sep or not secret.strip():
            raise ValueError(f"expected tenant[/mailbox]=secret, got {target.strip()!r}=...")
        tenant, _, mailbox = target.strip().partition("/")
        out[(tenant.strip().lower(), mailbox.strip().lower() or "*")] = secret.strip()
    return out


class MailboxSyncSettings(RuntimeSettings):
    """Environment variables (upper-case names), e.g. ``IMAP_HOST=imap.example.com``."""

    service_name: ClassVar[str] = "mailbox-sync"
    http_port: int = Field(default=8031, ge=0, le=65535)

    # --- credentials at rest and the API ---------------------------------------------------
    mailbox_sync_secret_key: str | None = Field(
        default=None,
        description="Fernet key(s) encrypting stored credentials; comma-separated for "
        "rotation (the first encrypts, every one decrypts)")
    mailbox_sync_secret_key_file: Path = Field(
        default=Path("var/mailbox-sync/secret-key"),
        description="Without MAILBOX_SYNC_SECRET_KEY: the key kept in this file, generated "
        "(mode 0600) on the first start")
    mailbox_sync_api_token: str | None = Field(
        default=None, description="Bearer token of /api/v1/accounts")
    mailbox_sync_api_token_file: Path = Field(
        default=Path("var/mailbox-sync/api-token"),
        description="Without MAILBOX_SYNC_API_TOKEN: the token kept in this file, generated "
        "on the first start (`postroom mailboxes` reads it)")

    # --- the static account of the simple case (seed 002's names) ----------------------------
    imap_host: str | None = None
    imap_port: int | None = Field(default=None, ge=1, le=65535,
                                  description="Default 993 with IMAP_SSL, else 143")
    imap_ssl: bool = Field(default=True, description="Implicit TLS (imaps)")
    imap_starttls: bool = Field(default=False, description="STARTTLS on the plain port")
    imap_folder: str = Field(default="INBOX", description="Comma-separated folders to watch")
    email_address: str | None = None
    email_password: str | None = None
    mailbox_sync_tenant: str | None = Field(default=None,
                                            description="Tenant of the static account")
    mailbox_sync_mailbox: str = Field(default="support",
                                      description="Tenant mailbox of the static account")

    # --- IMAP timings ------------------------------------------------------------------------
    email_check_interval: float = Field(
        default=30.0, gt=0, description="Seconds between polls where IDLE is missing or off")
    imap_idle: bool = Field(default=True, description="Use IDLE where the server has it")
    imap_idle_renew_seconds: float = Field(
        default=25 * 60.0, gt=0, description="IDLE is ended and re-issued this often (< 29 min)")
    imap_watchdog_seconds: float = Field(
        default=45.0, gt=0,
        description="Silence in IDLE after which the connection is probed (DONE + NOOP): a "
        "hung connection is noticed within this plus IMAP_TIMEOUT_SECONDS")
    imap_refresh_seconds: float = Field(
        default=1800.0, gt=0,
        description="A watched folder's connection is closed and opened again this often: "
        "a last resort for a server that keeps a stale view of a folder recreated while "
        "selected even after the SELECT that follows every quiet IDLE cycle and every poll")
    imap_timeout_seconds: float = Field(
        default=15.0, gt=0, description="Connect, greeting, login and every command")
    imap_ca_file: Path | None = Field(
        default=None, description="PEM file of CA certificates IMAP servers' certificates are "
        "also checked against (a private CA), beside the system's")
    imap_backoff_base_seconds: float = Field(default=1.0, gt=0)
    imap_backoff_max_seconds: float = Field(default=300.0, gt=0)
    imap_first_sync_days: float = Field(
        default=7.0, ge=0,
        description="First sync (and a UIDVALIDITY change): mail received in these last days; "
        "0 = only mail arriving from now on. An account's own `since` wins")
    imap_fetch_batch: int = Field(default=25, ge=1, le=1000,
                                  description="UIDs fetched per UID FETCH")

    # --- inbound parse ---------------------------------------------------------------------
    mailbox_sync_inbound_secrets: str = Field(
        default="", description="tenant[/mailbox]=secret,... for POST /api/v1/inbound/...")
    mailbox_sync_inbound_tolerance_seconds: float = Field(
        default=300.0, gt=0, description="Signed timestamps older or newer than this: refused")
    mailbox_sync_inbound_max_bytes: int = Field(default=25 * 1024 * 1024, gt=0)

    # --- provider push -----------------------------------------------------------------------
    mailbox_sync_resync_max_messages: int = Field(
        default=500, ge=1,
        description="A provider history id too old to continue from: resync at most this "
        "many newest messages (and say so in the account's status)")

    mailbox_sync_provider_poll_seconds: float = Field(
        default=300.0, gt=0,
        description="Provider accounts also fetch their history this often (a lost "
        "notification is caught up)")
    mailbox_sync_public_url: str | None = Field(
        default=None,
        description="This service's URL as a provider reaches it: provider accounts ask the "
        "provider to watch and push to <URL>/api/v1/push/<account id>")

    @field_validator("imap_port", "imap_host", "email_address", "email_password",
                     "mailbox_sync_tenant", "mailbox_sync_public_url", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        # compose passes `${IMAP_PORT:-}`: an empty variable means "not set"
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("imap_idle_renew_seconds")
    @classmethod
    def _renew_before_limit(cls, value: float) -> float:
        if value >= IDLE_LIMIT_SECONDS:
            raise ValueError("must be below 1740 (29 minutes): servers drop IDLE at 30")
        return value

    @field_validator("mailbox_sync_inbound_secrets")
    @classmethod
    def _secrets(cls, value: str) -> str:
        parse_secrets(value)
        return value

    @model_validator(mode="after")
    def _static_account(self) -> MailboxSyncSettings:
        if self.imap_host and not (self.email_address and self.email_password
                                   and self.mailbox_sync_tenant):
            raise ValueError("IMAP_HOST needs EMAIL_ADDRESS, EMAIL_PASSWORD and "
                             "MAILBOX_SYNC_TENANT")
        return self

    @property
    def inbound_secrets(self) -> dict[tuple[str, str], str]:
        return parse_secrets(self.mailbox_sync_inbound_secrets)

    @property
    def folders(self) -> list[str]:
        return [f.strip() for f in self.imap_folder.split(",") if f.strip()] or ["INBOX"]
