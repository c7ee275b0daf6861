"""smtp-ingress settings: the shared runtime settings plus the SMTP listener's."""

from __future__ import annotations

import ipaddress
import re
import ssl
from functools import cached_property
from pathlib import Path
from typing import ClassVar

from pydantic import Field, SecretStr, ValidationInfo, field_validator

from postroom_runtime import RuntimeSettings

from .dns_lookups import parse_servers


def _split(value: str) -> list[str]:
    return [item.strip() for item in value.split(",") if item.strip()]


class IngressSettings(RuntimeSettings):
    """Environment variables (upper-case names), e.g. ``SMTP_PORT=2525``."""

    service_name: ClassVar[str] = "smtp-ingress"
    http_port: int = Field(default=8025, ge=0, le=65535)
    # raw MIME is stored before every 250: a mail up to 512 KiB (nearly all) takes one NATS
    # round trip in the KV tier instead of three in the Object Store
    blob_small_max_bytes: int = Field(default=524_288, ge=0, le=1_048_576)

    smtp_host: str = "127.0.0.1"
    smtp_port: int = Field(default=1025, ge=0, le=65535, description="0 picks a free port")
    smtp_hostname: str = "postroom.local"
    smtp_domains: str = Field(
        default="", description="Extra accepted domains (comma list), shared by every tenant"
    )
    smtp_tls_cert: Path | None = Field(default=None, validate_default=True)
    smtp_tls_key: Path | None = Field(default=None, validate_default=True)
    smtp_tls_port: int = Field(default=0, ge=0, le=65535, validate_default=True)
    smtp_require_tls: bool = Field(default=False, validate_default=True)
    smtp_auth_users: SecretStr = Field(default=SecretStr(""), validate_default=True)
    smtp_auth_required: bool = Field(default=False, validate_default=True)
    smtp_max_message_size: int = Field(default=26_214_400, ge=1024)
    smtp_max_recipients: int = Field(default=100, ge=1)
    smtp_max_connections_per_ip: int = Field(default=20, ge=1)
    smtp_trusted_networks: str = Field(
        default="127.0.0.0/8,::1/128",
        description="Client networks (comma list of CIDRs) exempt from the per-IP cap",
    )
    smtp_timeout: float = Field(default=300, gt=0)
    tenants_seed_file: Path | None = None
    smtp_workers: int = Field(
        default=1, ge=1, le=32,
        description="SMTP processes sharing the SMTP port(s) (SO_REUSEPORT); see workers.py",
    )
    # mail authentication (SPF, DKIM, DMARC, ARC, iprev), after the 250: authentication.py
    auth_verify: bool = Field(default=True, description="Verify every mail; mail.authenticated")
    auth_dns_servers: str = Field(
        default="", description="DNS servers for the checks: ip[:port],... (empty: the system's)"
    )
    auth_dns_timeout_seconds: float = Field(
        default=5.0, gt=0, le=60,
        description="DNS time of one check of one mail; unanswered lookups give temperror",
    )
    auth_serv_id: str = Field(
        default="", description="authserv-id of Authentication-Results (empty: SMTP_HOSTNAME)"
    )

    # Validators run in field order, so each sees the fields declared above it in info.data.

    @field_validator("smtp_tls_cert", "smtp_tls_key", "tenants_seed_file", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("smtp_tls_cert", "tenants_seed_file")
    @classmethod
    def _file_exists(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_file():
            raise ValueError(f"file {value} does not exist")
        return value

    @field_validator("smtp_tls_key")
    @classmethod
    def _key_matches_cert(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        cert = info.data.get("smtp_tls_cert")
        if cert is not None and value is None:
            raise ValueError("SMTP_TLS_KEY is required when SMTP_TLS_CERT is set")
        if value is not None and cert is None and "smtp_tls_cert" in info.data:
            raise ValueError("SMTP_TLS_KEY is set but SMTP_TLS_CERT is not")
        if value is not None and not value.is_file():
            raise ValueError(f"file {value} does not exist")
        if value is not None and cert is not None:
            try:
                ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(cert, value)
            except (ssl.SSLError, OSError) as exc:
                raise ValueError(f"cannot load certificate {cert} with key {value}: {exc}") \
                    from None
        return value

    @staticmethod
    def _needs_tls(what: str, info: ValidationInfo) -> None:
        if info.data.get("smtp_tls_cert") is None:
            raise ValueError(f"{what} needs SMTP_TLS_CERT and SMTP_TLS_KEY")

    @field_validator("smtp_tls_port")
    @classmethod
    def _tls_port(cls, value: int, info: ValidationInfo) -> int:
        if value:
            cls._needs_tls("SMTP_TLS_PORT", info)
        return value

    @field_validator("smtp_require_tls")
    @classmethod
    def _require_tls(cls, value: bool, info: ValidationInfo) -> bool:
        if value:
            cls._needs_tls("SMTP_REQUIRE_TLS=true", info)
        return value

    @field_validator("smtp_auth_users")
    @classmethod
    def _auth_users(cls, value: SecretStr, info: ValidationInfo) -> SecretStr:
        entries = _split(value.get_secret_value())
        for entry in entries:
            user, sep, password = entry.partition(":")
            if not sep or not user or not password:
                raise ValueError("SMTP_AUTH_USERS must look like user:password,user2:password2")
        if entries:
            cls._needs_tls("SMTP_AUTH_USERS (AUTH is offered only over TLS)", info)
        return value

    @field_validator("smtp_trusted_networks")
    @classmethod
    def _trusted_networks(cls, value: str) -> str:
        for entry in _split(value):
            try:
                ipaddress.ip_network(entry, strict=False)
            except ValueError:
                raise ValueError(
                    f"{entry!r} is not a network: SMTP_TRUSTED_NETWORKS is a comma list of "
                    "CIDRs such as 127.0.0.0/8,::1/128,10.0.0.0/8 (empty: none)"
                ) from None
        return value

    @field_validator("smtp_auth_required")
    @classmethod
    def _auth_required(cls, value: bool, info: ValidationInfo) -> bool:
        users = info.data.get("smtp_auth_users")
        if value and (users is None or not _split(users.get_secret_value())):
            raise ValueError("SMTP_AUTH_REQUIRED=true needs SMTP_AUTH_USERS")
        return value

    @field_validator("auth_dns_servers")
    @classmethod
    def _dns_servers(cls, value: str) -> str:
        parse_servers(value)  # raises ValueError naming the bad entry
        return value

    @field_validator("auth_serv_id")
    @classmethod
    def _serv_id(cls, value: str) -> str:
        if value and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9.-]{0,252}", value):
            raise ValueError("AUTH_SERV_ID must be a host or domain name")
        return value

    @property
    def authserv_id(self) -> str:
        return (self.auth_serv_id or self.smtp_hostname).lower()

    @cached_property
    def dns_servers(self) -> tuple[tuple[str, int], ...]:
        return parse_servers(self.auth_dns_servers)

    @cached_property
    def extra_domains(self) -> frozenset[str]:
        return frozenset(d.lower().rstrip(".") for d in _split(self.smtp_domains))

    @cached_property
    def trusted_networks(self) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
        return tuple(ipaddress.ip_network(entry, strict=False)
                     for entry in _split(self.smtp_trusted_networks))

    @cached_property
    def auth_users(self) -> dict[str, str]:
        users: dict[str, str] = {}
        for entry in _split(self.smtp_auth_users.get_secret_value()):
            user, _, password = entry.partition(":")
            users[user] = password
        return users

    @property
    def tls_enabled(self) -> bool:
        return self.smtp_tls_cert is not None

    def tls_context(self) -> ssl.SSLContext | None:
        """Server-side TLS context (TLS 1.2+), or None when no certificate is configured."""
        if self.smtp_tls_cert is None or self.smtp_tls_key is None:
            return None
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        context.load_cert_chain(self.smtp_tls_cert, self.smtp_tls_key)
        return context
