"""Handing a composed message over: SMTP to the outbound relay (aiosmtplib), or capture.

:func:`send` never raises for what the relay says: it returns an :class:`Outcome` that says
whether the mail was accepted (perhaps for some recipients only), refused for good (5xx) or
failed for now (4xx, connection refused, timeouts, a dropped connection).
"""

from __future__ import annotations

import contextlib
import os
import ssl
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal
from urllib.parse import unquote, urlsplit

import aiosmtplib
import dkim

SCHEMES = {"smtp": "plain", "smtp+starttls": "starttls", "smtps": "tls"}
DEFAULT_PORTS = {"plain": 25, "starttls": 587, "tls": 465}


@dataclass(frozen=True)
class RelayConfig:
    host: str
    port: int
    security: Literal["plain", "starttls", "tls"]
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    timeout: float = 30.0
    verify: bool = True
    ca_file: Path | None = None

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def tls_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(self.ca_file) if self.ca_file else None)
        if not self.verify:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        return context


def parse_relay_url(url: str, *, username: str | None = None, password: str | None = None,
                    timeout: float = 30.0, verify: bool = True,
                    ca_file: Path | None = None) -> RelayConfig | None:
    """``smtp[+starttls]://[user:password@]host[:port]`` or ``smtps://...``; '' is None
    (capture). User and password in the URL win over the separate settings."""
    if not url.strip():
        return None
    parts = urlsplit(url.strip())
    security = SCHEMES.get(parts.scheme.lower())
    if security is None:
        raise ValueError(f"relay URL scheme must be one of {', '.join(SCHEMES)}")
    if not parts.hostname:
        raise ValueError("relay URL has no host")
    return RelayConfig(
        host=parts.hostname, port=parts.port or DEFAULT_PORTS[security],
        security=security,  # type: ignore[arg-type]
        username=unquote(parts.username) if parts.username else username,
        password=unquote(parts.password) if parts.password else password,
        timeout=timeout, verify=verify, ca_file=ca_file,
    )


@dataclass
class Outcome:
    result: Literal["sent", "temporary", "permanent"]
    response: str
    code: int | None = None
    accepted: list[str] = field(default_factory=list)
    refused: dict[str, str] = field(default_factory=dict)


def _reply(code: int, message: str) -> str:
    return f"{code} {message}".strip()


async def send(relay: RelayConfig, envelope_from: str, recipients: list[str],
               message: bytes) -> Outcome:
    """One SMTP conversation: connect, (STARTTLS), (AUTH), MAIL, RCPT..., DATA."""
    client = aiosmtplib.SMTP(
        hostname=relay.host, port=relay.port, timeout=relay.timeout,
        use_tls=relay.security == "tls",
        start_tls=True if relay.security == "starttls" else False,
        tls_context=relay.tls_context() if relay.security != "plain" else None,
        username=relay.username, password=relay.password,
    )
    try:
        await client.connect()
        try:
            refused, reply = await client.sendmail(envelope_from, recipients, message)
        finally:
            try:
                await client.quit()
            except Exception:
                client.close()
    except aiosmtplib.SMTPRecipientsRefused as exc:
        refused_map = {r.recipient: _reply(r.code, r.message) for r in exc.recipients}
        temporary = any(400 <= r.code < 500 for r in exc.recipients)
        first = exc.recipients[0] if exc.recipients else None
        return Outcome("temporary" if temporary else "permanent",
                       "all recipients refused: " + "; ".join(refused_map.values()),
                       first.code if first else None, refused=refused_map)
    except aiosmtplib.SMTPAuthenticationError as exc:
        # wrong credentials are a configuration problem: temporary, so a fix lets it through
        return Outcome("temporary", _reply(exc.code, exc.message), exc.code)
    except aiosmtplib.SMTPResponseException as exc:
        kind: Literal["temporary", "permanent"] = (
            "permanent" if 500 <= exc.code < 600 else "temporary")
        return Outcome(kind, _reply(exc.code, exc.message), exc.code)
    except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
        return Outcome("temporary", f"{type(exc).__name__}: {exc}")
    refused_map = {addr: _reply(r.code, r.message) for addr, r in refused.items()}
    accepted = [r for r in recipients if r not in refused_map]
    return Outcome("sent", reply, 250, accepted=accepted, refused=refused_map)


async def reachable(relay: RelayConfig) -> None:
    """Connect and say EHLO (health): raises when the relay cannot be reached."""
    client = aiosmtplib.SMTP(hostname=relay.host, port=relay.port,
                             timeout=min(relay.timeout, 5.0),
                             use_tls=relay.security == "tls",
                             start_tls=False,
                             tls_context=relay.tls_context() if relay.security != "plain"
                             else None)
    await client.connect()
    try:
        await client.ehlo()
    finally:
        try:
            await client.quit()
        except Exception:
            client.close()


@dataclass(frozen=True)
class DkimSigner:
    domain: str
    selector: str
    key: bytes = field(repr=False)
    headers: tuple[bytes, ...] = (b"from", b"to", b"cc", b"subject", b"date", b"message-id",
                                  b"in-reply-to", b"references", b"mime-version",
                                  b"content-type")

    @classmethod
    def from_file(cls, domain: str, selector: str, key_file: Path) -> DkimSigner:
        return cls(domain, selector, key_file.read_bytes())

    def sign(self, message: bytes) -> bytes:
        """The message with a DKIM-Signature field in front (relaxed/relaxed, rsa-sha256)."""
        signature = dkim.sign(
            message, self.selector.encode(), self.domain.encode(), self.key,
            canonicalize=(b"relaxed", b"relaxed"), include_headers=list(self.headers),
        )
        return signature + message


def capture(directory: Path, delivery_id: str, envelope_from: str, recipients: list[str],
            message: bytes) -> Path:
    """Write ``<delivery_id>.eml`` atomically (a temporary file renamed into place), with the
    envelope in X-Postroom-Envelope-* fields in front so ``postroom outbox`` can show it."""
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / f"{delivery_id}.eml"
    envelope = (f"X-Postroom-Envelope-From: <{envelope_from}>\r\n"
                f"X-Postroom-Envelope-To: {', '.join(f'<{r}>' for r in recipients)}\r\n"
                f"X-Postroom-Delivery-Id: {delivery_id}\r\n").encode()
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{delivery_id}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(envelope + message)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return target

