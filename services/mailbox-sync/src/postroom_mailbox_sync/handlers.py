"""Pure logic of mailbox-sync: accounts as the API takes them, IMAP response parsing, backoff,
signatures. Nothing here does I/O."""

from __future__ import annotations

import hashlib
import hmac
import random
import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from postroom_contracts import is_tenant_slug

# --- accounts ---------------------------------------------------------------------------------

Security = Literal["ssl", "starttls", "none"]


FLAG_PATTERN = r"^\\?[A-Za-z$][A-Za-z0-9_$-]{0,62}$"  # an IMAP flag or keyword


def default_port(kind: str, security: str) -> int:
    """An account's port when it names none: HTTPS for a provider, else IMAPS or IMAP."""
    if kind == "provider":
        return 443
    return 993 if security == "ssl" else 143


class AccountIn(BaseModel):
    """An account as ``POST /api/v1/accounts`` and ``postroom mailboxes add`` take it."""

    model_config = ConfigDict(extra="forbid")

    id: str | None = Field(default=None, pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$",
                           description="Default: derived from tenant, mailbox and user")
    kind: Literal["imap", "provider"] = "imap"
    tenant: str
    mailbox: str = Field(min_length=1, max_length=64,
                         description="The tenant's mailbox (its route), e.g. 'support'")
    address: str | None = Field(default=None, max_length=320,
                                description="The mailbox's address (recipient of its mail); "
                                "default: the user name when it is an address")
    host: str = Field(min_length=1, max_length=255,
                      description="IMAP server; provider: the API's base URL")
    port: int | None = Field(default=None, ge=1, le=65535)
    security: Security = "ssl"
    tls_verify: bool = True
    username: str = Field(min_length=1, max_length=320)
    password: str | None = Field(default=None, min_length=1)
    oauth_token: str | None = Field(default=None, min_length=1,
                                    description="XOAUTH2 access token instead of a password; "
                                    "provider: the API's bearer token")
    webhook_secret: str | None = Field(default=None, min_length=16,
                                       description="provider: the push notifications' key")
    folders: list[str] = Field(default_factory=lambda: ["INBOX"], min_length=1)
    mode: Literal["auto", "idle", "poll"] = "auto"
    mark_seen: bool = False
    flag: str | None = Field(default=None, pattern=FLAG_PATTERN,
                             description="Flag set after ingest, e.g. $Postroom or \\Flagged")
    move_to: str | None = Field(default=None, min_length=1, max_length=255)
    since: datetime | date | None = Field(
        default=None, description="First-sync horizon: mail received since then")
    enabled: bool = True

    @model_validator(mode="after")
    def _consistent(self) -> AccountIn:
        if not is_tenant_slug(self.tenant):
            raise ValueError(f"tenant {self.tenant!r} is not a tenant slug")
        self.mailbox = self.mailbox.lower()
        if (self.password is None) == (self.oauth_token is None):
            raise ValueError("give exactly one of password and oauth_token")
        if self.kind == "provider" and self.oauth_token is None:
            raise ValueError("a provider account needs oauth_token (the API's bearer token)")
        if self.kind == "provider" and self.webhook_secret is None:
            raise ValueError("a provider account needs webhook_secret")
        if self.kind == "provider" and not self.host.startswith(("http://", "https://")):
            raise ValueError("a provider account's host is the API's URL (http:// or https://)")
        for folder in [*self.folders, self.move_to or ""]:
            if any(c in folder for c in '\r\n\x00"\\'):
                raise ValueError(f"folder name {folder!r} has a forbidden character")
        if self.move_to is not None and self.move_to in self.folders:
            raise ValueError("move_to must not be a watched folder")
        if self.address is None:
            if "@" not in self.username:
                raise ValueError("give the mailbox's address (the user name is not one)")
            self.address = self.username
        return self

    @property
    def default_port(self) -> int:
        return default_port(self.kind, self.security)

    def derived_id(self) -> str:
        digest = hashlib.sha256(
            f"{self.kind}\n{self.tenant}\n{self.mailbox}\n{self.host}\n{self.username}".encode()
        ).hexdigest()
        return f"{self.tenant}-{self.mailbox}-{digest[:8]}"[:64]

    def horizon(self) -> datetime | None:
        since = self.since
        if since is None:
            return None
        if isinstance(since, datetime):
            return since if since.tzinfo else since.replace(tzinfo=UTC)
        return datetime(since.year, since.month, since.day, tzinfo=UTC)


class AccountPatch(BaseModel):
    """``PATCH /api/v1/accounts/{id}``: the fields to change, the others kept. A new password
    replaces an XOAUTH2 token and the other way round; ``null`` clears an optional field
    (``flag``, ``move_to``, ``since``, ``port``: its default). The id and the kind stay."""

    model_config = ConfigDict(extra="forbid")

    tenant: str | None = None
    mailbox: str | None = Field(default=None, min_length=1, max_length=64)
    address: str | None = Field(default=None, max_length=320)
    host: str | None = Field(default=None, min_length=1, max_length=255)
    port: int | None = Field(default=None, ge=1, le=65535)
    security: Security | None = None
    tls_verify: bool | None = None
    username: str | None = Field(default=None, min_length=1, max_length=320)
    password: str | None = Field(default=None, min_length=1)
    oauth_token: str | None = Field(default=None, min_length=1)
    webhook_secret: str | None = Field(default=None, min_length=16)
    folders: list[str] | None = Field(default=None, min_length=1)
    mode: Literal["auto", "idle", "poll"] | None = None
    mark_seen: bool | None = None
    flag: str | None = Field(default=None, pattern=FLAG_PATTERN)
    move_to: str | None = Field(default=None, min_length=1, max_length=255)
    since: datetime | date | None = None
    enabled: bool | None = None

    # fields whose null means "none" rather than "not given"
    CLEARABLE: ClassVar[frozenset[str]] = frozenset(
        {"address", "port", "flag", "move_to", "since", "webhook_secret"})

    def apply(self, current: dict[str, object]) -> dict[str, object]:
        """``current`` (an AccountIn's fields) with this patch applied."""
        merged = dict(current)
        for name in self.model_fields_set:
            value = getattr(self, name)
            if value is None and name not in self.CLEARABLE:
                raise ValueError(f"{name} cannot be null")
            merged[name] = value
        if "password" in self.model_fields_set:
            merged["oauth_token"] = None
        elif "oauth_token" in self.model_fields_set and merged.get("kind") == "imap":
            merged["password"] = None
        return merged


@dataclass(frozen=True)
class Account:
    """A stored account with its credentials decrypted (in memory only)."""

    id: str
    kind: str
    origin: str
    tenant: str
    mailbox: str
    address: str
    host: str
    port: int
    security: str
    tls_verify: bool
    username: str
    auth: str
    secret: str
    folders: tuple[str, ...]
    mode: str
    mark_seen: bool
    flag: str | None
    move_to: str | None
    since: datetime | None
    enabled: bool
    webhook_secret: str | None = None

    def public(self) -> dict[str, object]:
        """What the API shows: everything but the credentials."""
        return {
            "id": self.id, "kind": self.kind, "origin": self.origin, "tenant": self.tenant,
            "mailbox": self.mailbox, "address": self.address, "host": self.host,
            "port": self.port, "security": self.security, "tls_verify": self.tls_verify,
            "username": self.username, "auth": self.auth, "folders": list(self.folders),
            "mode": self.mode, "mark_seen": self.mark_seen, "flag": self.flag,
            "move_to": self.move_to,
            "since": self.since.isoformat() if self.since else None, "enabled": self.enabled,
        }


# --- timing -----------------------------------------------------------------------------------


def backoff(attempt: int, base: float, cap: float, rng: random.Random | None = None) -> float:
    """Delay before reconnect ``attempt`` (from 1): exponential, capped, with full jitter in
    its upper half (many accounts failing at once do not reconnect in step)."""
    ceiling = min(cap, base * (2 ** max(0, attempt - 1)))
    return ceiling * (0.5 + 0.5 * (rng or random).random())


def horizon(since: datetime | None, first_sync_days: float, now: datetime) -> datetime | None:
    """Where a first sync starts: the account's ``since``, else ``first_sync_days`` back;
    None: nothing before now (only mail that arrives from now on)."""
    if since is not None:
        return since
    if first_sync_days <= 0:
        return None
    return now - timedelta(days=first_sync_days)


_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def imap_date(day: datetime) -> str:
    """``1-Dec-2026``: a date as IMAP SEARCH SINCE takes it (RFC 3501 date)."""
    return f"{day.day}-{_MONTHS[day.month - 1]}-{day.year}"


# --- IMAP responses -------------------------------------------------------------------------


@dataclass(frozen=True)
class FolderState:
    uidvalidity: int
    uidnext: int | None
    highestmodseq: int | None
    exists: int


def _line_text(lines: list[bytes | bytearray]) -> str:
    return "\n".join(bytes(line).decode("utf-8", "replace") for line in lines
                     if isinstance(line, bytes))


def parse_select(lines: list[bytes | bytearray]) -> FolderState:
    """UIDVALIDITY, UIDNEXT, HIGHESTMODSEQ and EXISTS from a SELECT (or EXAMINE) response."""
    text = _line_text(lines)

    def number(pattern: str) -> int | None:
        match = re.search(pattern, text, re.IGNORECASE | re.MULTILINE)
        return int(match.group(1)) if match else None

    uidvalidity = number(r"\[UIDVALIDITY (\d+)\]")
    if uidvalidity is None:
        raise ValueError("SELECT answered without UIDVALIDITY")
    return FolderState(
        uidvalidity=uidvalidity,
        uidnext=number(r"\[UIDNEXT (\d+)\]"),
        highestmodseq=number(r"\[HIGHESTMODSEQ (\d+)\]"),
        exists=number(r"^(\d+) EXISTS") or 0,
    )


def parse_search(lines: list[bytes | bytearray]) -> list[int]:
    """The numbers of ``* SEARCH 1 2 3`` (aioimaplib hands the line over without ``SEARCH``;
    a CONDSTORE ``(MODSEQ n)`` suffix is dropped); the tagged completion text is not a number
    list and is left out."""
    out: list[int] = []
    for line in lines:
        if not isinstance(line, bytes):
            continue
        text = line.decode("ascii", "replace").strip()
        if text.upper().startswith("SEARCH"):
            text = text[6:]
        tokens = re.sub(r"\(MODSEQ \d+\)", "", text).split()
        if tokens and all(t.isdigit() for t in tokens):
            out.extend(int(t) for t in tokens)
    return sorted(set(out))


@dataclass(frozen=True)
class Fetched:
    uid: int
    raw: bytes


_FETCH_START = re.compile(rb"^\d+ FETCH \(")


def parse_fetch(lines: list[bytes | bytearray]) -> list[Fetched]:
    """The messages of a ``UID FETCH ... (UID BODY.PEEK[])`` response: each ``n FETCH (``
    line, its literal (the message) and the text around it, which holds the UID. Unsolicited
    FETCH responses without a body (flag changes by another client) are left out."""
    out: list[Fetched] = []
    text: list[bytes] = []
    body: bytes | None = None

    def close() -> None:
        if body is None:
            return
        match = re.search(rb"UID (\d+)", b" ".join(text))
        if match:
            out.append(Fetched(uid=int(match.group(1)), raw=body))

    for line in lines:
        if isinstance(line, bytearray):
            body = bytes(line)
            continue
        if _FETCH_START.match(line):
            close()
            text, body = [line], None
        else:
            text.append(line)
    close()
    return out


def is_auth_failure(lines: list[bytes | bytearray]) -> str:
    """The server's words on a failed LOGIN/AUTHENTICATE (for the account's status)."""
    return _line_text(lines).strip() or "authentication failed"


# --- signatures (inbound parse and provider push) ---------------------------------------------

SIGNATURE_HEADER = "X-Postroom-Signature"
TIMESTAMP_HEADER = "X-Postroom-Timestamp"


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """``sha256=<hex>``: HMAC-SHA256 of ``<timestamp>.<body>`` with ``secret``."""
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def check_signature(secret: str, timestamp: str | None, signature: str | None, body: bytes,
                    *, now: float, tolerance: float) -> str | None:
    """None when the request is signed with ``secret`` within ``tolerance`` seconds of
    ``now``; otherwise why not (for the problem's detail)."""
    if not timestamp or not signature:
        return f"{TIMESTAMP_HEADER} and {SIGNATURE_HEADER} are required"
    try:
        at = float(timestamp)
    except ValueError:
        return f"{TIMESTAMP_HEADER} is not a Unix time"
    if abs(now - at) > tolerance:
        return f"{TIMESTAMP_HEADER} is more than {tolerance:g}s away from now (replay?)"
    if not hmac.compare_digest(sign(secret, timestamp, body), signature.strip()):
        return "signature does not match"
    return None
