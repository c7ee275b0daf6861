"""mailbox-sync's own tables.

``accounts``     the mailboxes it reads (IMAP or a provider's API); credentials encrypted
                 with the service's Fernet key (``secrets.py``), never stored in clear.
``positions``    per account and folder: UIDVALIDITY, the next UID to read, HIGHESTMODSEQ
                 (CONDSTORE) or a provider's last history id; written in the transaction of
                 the mail that moved it.
``mails``        one row per mail published (its ``mail.received``): the dedup record. A mail
                 is the same mail when tenant, Message-ID and content agree (its mail key), so
                 a re-indexed folder (UIDVALIDITY changed), a retried upload or a mail that
                 reaches two watched folders is published once.
``imap_uids``    account + folder + UIDVALIDITY + UID -> mail key: every message read, so a
                 UID is never fetched and published twice.
plus the runtime's ``processed_messages`` and ``outbox`` (events are published from there).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    delete,
    select,
    update,
)
from sqlalchemy.ext.asyncio import AsyncSession

from postroom_runtime import add_runtime_tables
from postroom_runtime.store import utcnow

metadata = MetaData()

accounts = Table(
    "accounts",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("kind", String(16), nullable=False),  # imap | provider
    Column("origin", String(8), nullable=False),  # api | env
    Column("tenant", String(63), nullable=False),
    Column("mailbox", String(64), nullable=False),
    Column("address", String(320), nullable=False),
    Column("host", String(255), nullable=False),  # provider: the API's base URL
    Column("port", Integer, nullable=False),
    Column("security", String(16), nullable=False),  # ssl | starttls | none
    Column("tls_verify", Boolean, nullable=False),
    Column("username", String(320), nullable=False),
    Column("auth", String(16), nullable=False),  # password | xoauth2 | bearer
    Column("secret", LargeBinary, nullable=False),  # Fernet token of the password/token
    Column("webhook_secret", LargeBinary, nullable=True),  # provider push: Fernet token
    Column("folders", JSON, nullable=False),
    Column("mode", String(8), nullable=False),  # auto | idle | poll
    Column("mark_seen", Boolean, nullable=False),
    Column("flag", String(64), nullable=True),
    Column("move_to", String(255), nullable=True),
    Column("since", DateTime(timezone=True), nullable=True),
    Column("enabled", Boolean, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, default=utcnow),
    Column("updated_at", DateTime(timezone=True), nullable=False, default=utcnow),
)

positions = Table(
    "positions",
    metadata,
    Column("account_id", String(64), primary_key=True),
    Column("folder", String(255), primary_key=True),
    Column("uidvalidity", BigInteger, nullable=True),
    Column("uidnext", BigInteger, nullable=True),
    Column("highestmodseq", BigInteger, nullable=True),
    Column("history_id", String(64), nullable=True),
    Column("ingested", Integer, nullable=False, default=0),
    Column("duplicates", Integer, nullable=False, default=0),
    Column("last_sync_at", DateTime(timezone=True), nullable=True),
)

mails = Table(
    "mails",
    metadata,
    Column("mail_key", String(64), primary_key=True),
    Column("tenant", String(63), nullable=False),
    Column("message_id", String(1000), nullable=False),
    Column("content_sha256", String(64), nullable=False),
    Column("event_id", String(64), nullable=False),
    Column("source", String(16), nullable=False),
    Column("account_id", String(64), nullable=True),
    Column("size", BigInteger, nullable=False),
    Column("ingested_at", DateTime(timezone=True), nullable=False, default=utcnow),
)

imap_uids = Table(
    "imap_uids",
    metadata,
    Column("account_id", String(64), primary_key=True),
    Column("folder", String(255), primary_key=True),
    Column("uidvalidity", BigInteger, primary_key=True),
    Column("uid", BigInteger, primary_key=True),
    Column("mail_key", String(64), nullable=False),
    Column("seen_at", DateTime(timezone=True), nullable=False, default=utcnow),
)

processed_messages, outbox = add_runtime_tables(metadata)


async def position(session: AsyncSession, account_id: str, folder: str) -> dict[str, Any] | None:
    row = (await session.execute(select(positions).where(
        positions.c.account_id == account_id, positions.c.folder == folder))).mappings().first()
    return dict(row) if row is not None else None


async def save_position(session: AsyncSession, account_id: str, folder: str, *,
                        ingested: int = 0, duplicates: int = 0, **values: Any) -> None:
    """Set a folder's position fields (``values``) and add to its counts; the row is created
    on first use."""
    values["last_sync_at"] = utcnow()
    current = await position(session, account_id, folder)
    if current is None:
        await session.execute(positions.insert().values(
            account_id=account_id, folder=folder, ingested=ingested, duplicates=duplicates,
            **values))
        return
    await session.execute(update(positions).where(
        positions.c.account_id == account_id, positions.c.folder == folder).values(
        ingested=positions.c.ingested + ingested,
        duplicates=positions.c.duplicates + duplicates, **values))


async def known_uid(session: AsyncSession, account_id: str, folder: str, uidvalidity: int,
                    uid: int) -> bool:
    row = (await session.execute(select(imap_uids.c.uid).where(
        imap_uids.c.account_id == account_id, imap_uids.c.folder == folder,
        imap_uids.c.uidvalidity == uidvalidity, imap_uids.c.uid == uid))).first()
    return row is not None


async def known_mail(session: AsyncSession, mail_key: str) -> bool:
    row = (await session.execute(select(mails.c.mail_key).where(
        mails.c.mail_key == mail_key))).first()
    return row is not None


async def forget_account(session: AsyncSession, account_id: str) -> bool:
    """Remove an account, its positions and UID records (published mails stay recorded)."""
    found = (await session.execute(delete(accounts).where(accounts.c.id == account_id))).rowcount
    await session.execute(delete(positions).where(positions.c.account_id == account_id))
    await session.execute(delete(imap_uids).where(imap_uids.c.account_id == account_id))
    return bool(found)


def now() -> datetime:
    return utcnow()
