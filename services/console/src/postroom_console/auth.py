"""API keys: ``pr_<key_id>_<secret>``; only the SHA-256 of the secret is stored.

A key belongs to a tenant (it sees that tenant's rows only) or is an admin key (tenant NULL).
``CONSOLE_ADMIN_KEY`` may be any string: one that is not of the ``pr_`` form gets a key id
derived from its hash.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from postroom_runtime.store import utcnow

from .store import api_keys

KEY_PATTERN = re.compile(r"^pr_([0-9a-f]{12})_([A-Za-z0-9_-]{16,})$")
ADMIN_NAME = "admin"


@dataclass(frozen=True)
class Principal:
    key_id: str
    name: str
    tenant: str | None

    @property
    def admin(self) -> bool:
        return self.tenant is None


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def split_key(key: str) -> tuple[str, str]:
    """(key id, secret) of a presented key."""
    match = KEY_PATTERN.match(key)
    if match:
        return match.group(1), match.group(2)
    return "k" + hashlib.sha256(key.encode()).hexdigest()[:11], key


def new_key() -> tuple[str, str]:
    """(key id, the whole key to hand out once)."""
    key_id = secrets.token_hex(6)
    return key_id, f"pr_{key_id}_{secrets.token_urlsafe(24)}"


async def verify(session: AsyncSession, key: str | None) -> Principal | None:
    if not key:
        return None
    key_id, secret = split_key(key.strip())
    row = (await session.execute(select(api_keys).where(api_keys.c.key_id == key_id))).first()
    if row is None or row.revoked_at is not None:
        return None
    if not hmac.compare_digest(row.secret_hash, hash_secret(secret)):
        return None
    return Principal(row.key_id, row.name, row.tenant)


async def create(session: AsyncSession, name: str, tenant: str | None,
                 key: str | None = None) -> tuple[str, str]:
    if key is None:
        key_id, key = new_key()
    else:
        key_id = split_key(key)[0]
    secret = split_key(key)[1]
    await session.execute(insert(api_keys).values(
        key_id=key_id, name=name, tenant=tenant, secret_hash=hash_secret(secret),
        created_at=utcnow(), revoked_at=None))
    return key_id, key


async def ensure_admin(session: AsyncSession, key: str) -> str:
    """The admin key of ``CONSOLE_ADMIN_KEY`` exists and is the only live key named admin
    without a tenant (a changed variable revokes the old key)."""
    key_id, secret = split_key(key)
    now = utcnow()
    await session.execute(update(api_keys).where(
        api_keys.c.name == ADMIN_NAME, api_keys.c.tenant.is_(None),
        api_keys.c.key_id != key_id, api_keys.c.revoked_at.is_(None)).values(revoked_at=now))
    row = (await session.execute(select(api_keys).where(api_keys.c.key_id == key_id))).first()
    if row is None:
        await create(session, ADMIN_NAME, None, key)
    else:
        await session.execute(update(api_keys).where(api_keys.c.key_id == key_id).values(
            name=ADMIN_NAME, tenant=None, secret_hash=hash_secret(secret), revoked_at=None))
    return key_id


def key_json(row: Any) -> dict[str, Any]:
    from .handlers import iso

    return {"key_id": row.key_id, "name": row.name, "tenant": row.tenant,
            "admin": row.tenant is None, "created_at": iso(row.created_at),
            "revoked_at": iso(row.revoked_at)}


# --- tickets: short-lived stand-ins for a key in URLs --------------------------------------
# A browser cannot send a header with a WebSocket or a frame's request; a URL with the key in
# it ends up in logs and history. A ticket is ``tk.<key id>.<expiry>.<signature>``: valid for
# TICKET_SECONDS, signed with the key's stored hash (shared by every replica through the
# store), dead with its key when that is revoked.

TICKET_SECONDS = 60


def _ticket_signature(secret_hash: str, key_id: str, expires: int) -> str:
    return hmac.new(secret_hash.encode(), f"ticket.{key_id}.{expires}".encode(),
                    hashlib.sha256).hexdigest()[:40]


async def issue_ticket(session: AsyncSession, who: Principal, now: float) -> tuple[str, int]:
    row = (await session.execute(select(api_keys.c.secret_hash)
                                 .where(api_keys.c.key_id == who.key_id))).first()
    if row is None:
        raise LookupError(who.key_id)
    expires = int(now) + TICKET_SECONDS
    return f"tk.{who.key_id}.{expires}.{_ticket_signature(row.secret_hash, who.key_id, expires)}", \
        expires


async def verify_ticket(session: AsyncSession, ticket: str | None,
                        now: float) -> Principal | None:
    parts = (ticket or "").split(".")
    if len(parts) != 4 or parts[0] != "tk" or not parts[2].isdigit():
        return None
    _, key_id, expires_raw, signature = parts
    expires = int(expires_raw)
    if not now <= expires <= now + TICKET_SECONDS + 5:
        return None
    row = (await session.execute(select(api_keys).where(api_keys.c.key_id == key_id))).first()
    if row is None or row.revoked_at is not None:
        return None
    if not hmac.compare_digest(signature, _ticket_signature(row.secret_hash, key_id, expires)):
        return None
    return Principal(row.key_id, row.name, row.tenant)
