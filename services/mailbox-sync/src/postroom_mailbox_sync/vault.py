"""Credentials at rest: Fernet (AES-128-CBC + HMAC-SHA256) with the service's key.

The key comes from ``MAILBOX_SYNC_SECRET_KEY`` (comma-separated keys rotate: the first
encrypts, each one decrypts), else from the file ``MAILBOX_SYNC_SECRET_KEY_FILE``, generated
with mode 0600 on the first start (the embedded stack keeps it in its data dir). The same goes
for the API token. Lose the key and the stored passwords cannot be read: add the accounts again.
"""

from __future__ import annotations

import logging
import os
import secrets
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from postroom_runtime import ConfigError

log = logging.getLogger("postroom_mailbox_sync")


class SecretUnreadable(Exception):
    """A stored credential cannot be decrypted with the configured key(s)."""


def kept_in_file(path: Path, make: str) -> str:
    """The value in ``path``; ``make`` is written there (0600) when the file is missing."""
    try:
        value = path.read_text().strip()
    except FileNotFoundError:
        value = ""
    if value:
        return value
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(make + "\n")
    log.info("generated a new secret file", extra={"path": str(path)})
    return make


class Vault:
    def __init__(self, keys: list[str]) -> None:
        try:
            self._fernet = MultiFernet([Fernet(k.strip().encode()) for k in keys if k.strip()])
        except (ValueError, TypeError) as exc:
            raise ConfigError("invalid configuration:\n  MAILBOX_SYNC_SECRET_KEY: not a Fernet "
                              f"key (32 url-safe base64 bytes): {exc}") from None

    @classmethod
    def from_settings(cls, key: str | None, key_file: Path) -> Vault:
        if key:
            return cls(key.split(","))
        try:
            return cls([kept_in_file(key_file, Fernet.generate_key().decode())])
        except OSError as exc:
            raise ConfigError(
                "invalid configuration:\n  MAILBOX_SYNC_SECRET_KEY: not set, and the key file "
                f"{key_file} cannot be used ({exc.strerror or exc})") from None

    def seal(self, value: str) -> bytes:
        return self._fernet.encrypt(value.encode())

    def open(self, token: bytes) -> str:
        try:
            return self._fernet.decrypt(bytes(token)).decode()
        except InvalidToken:
            raise SecretUnreadable(
                "stored credentials cannot be decrypted with MAILBOX_SYNC_SECRET_KEY "
                "(key changed?): add the account again") from None


def api_token(token: str | None, token_file: Path) -> str | None:
    """The API's bearer token; None when none is set and the file cannot be written (the
    account API then answers 503)."""
    if token:
        return token
    try:
        return kept_in_file(token_file, f"ms_{secrets.token_urlsafe(24)}")
    except OSError as exc:
        log.warning("no API token: MAILBOX_SYNC_API_TOKEN unset and the token file cannot be "
                    "written", extra={"path": str(token_file), "error": str(exc)})
        return None
