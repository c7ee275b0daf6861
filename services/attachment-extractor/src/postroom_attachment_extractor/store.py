"""attachment-extractor's own tables: mails (with their state machine) and documents.

``mails`` holds one row per mail key with its current status; ``mail_transitions`` records
every status change (RECEIVED → STORED → PARSED, or → FAILED). ``documents`` holds one row
per extracted attachment; its bytes live in the blob store under their SHA-256, so the same
file in two mails is two documents and one blob.

Everything written for one mail happens in the consumer's transaction (together with the
idempotency row and the outbox rows), so a crash leaves all of it or none of it.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    insert,
    select,
    update,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from postroom_runtime import add_runtime_tables


class Status(StrEnum):
    RECEIVED = "RECEIVED"  # the mail.received event arrived
    STORED = "STORED"  # its raw MIME was read back from the blob store and verified
    PARSED = "PARSED"  # attachments stored as documents, mail.parsed emitted (terminal)
    FAILED = "FAILED"  # given up on (dead-lettered), mail.failed emitted


metadata = MetaData()

mails = Table(
    "mails",
    metadata,
    Column("mail_key", String(64), primary_key=True),
    Column("tenant", String(63), nullable=False),
    Column("message_id", String(998), nullable=False),
    Column("status", String(16), nullable=False),
    Column("error", Text, nullable=True),
    Column("defects", JSON, nullable=False, default=list),
    Column("document_count", Integer, nullable=False, default=0),
    Column("received_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Index("ix_mails_tenant_received_at", "tenant", "received_at"),
    Index("ix_mails_status", "status"),
)

mail_transitions = Table(
    "mail_transitions",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("mail_key", String(64), ForeignKey("mails.mail_key"), nullable=False, index=True),
    Column("status", String(16), nullable=False),
    Column("at", DateTime(timezone=True), nullable=False),
)

documents = Table(
    "documents",
    metadata,
    Column("document_id", String(64), primary_key=True),
    Column("tenant", String(63), nullable=False),
    Column("mail_key", String(64), ForeignKey("mails.mail_key"), nullable=False),
    Column("index", Integer, nullable=False),
    Column("filename", String(255), nullable=False),
    Column("declared_type", String(255), nullable=False),
    Column("sniffed_type", String(255), nullable=True),
    Column("size", BigInteger, nullable=False),
    Column("sha256", String(64), nullable=False, index=True),
    Column("blob_bucket", String(255), nullable=False),
    Column("blob_key", String(255), nullable=False),
    Column("supported", Boolean, nullable=False),
    Column("metadata", JSON, nullable=False, default=dict),
    Column("created_at", DateTime(timezone=True), nullable=False),
    UniqueConstraint("mail_key", "index", name="uq_documents_mail_key_index"),
    Index("ix_documents_tenant_created_at", "tenant", "created_at"),
    Index("ix_documents_created_at", "created_at"),
)

processed_messages, outbox = add_runtime_tables(metadata)


def utc(value: datetime | None) -> datetime | None:
    """SQLite hands timestamps back naive; they were written in UTC."""
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


# --- mails ----------------------------------------------------------------------------------


async def get_mail(session: AsyncSession, key: str) -> Any:
    return (await session.execute(select(mails).where(mails.c.mail_key == key))).first()


async def transition(
    session: AsyncSession, key: str, status: Status, at: datetime, **fields: Any
) -> None:
    """Set a mail's status (and other columns) and record the transition."""
    await session.execute(
        update(mails).where(mails.c.mail_key == key).values(status=status.value, updated_at=at,
                                                             **fields)
    )
    await session.execute(insert(mail_transitions).values(mail_key=key, status=status.value,
                                                          at=at))


async def receive_mail(
    session: AsyncSession, *, key: str, tenant: str, message_id: str, received_at: datetime,
    at: datetime,
) -> None:
    """First sight of a mail (or a replay of a failed one): status RECEIVED."""
    if await get_mail(session, key) is None:
        await session.execute(
            insert(mails).values(
                mail_key=key, tenant=tenant, message_id=message_id[:998],
                status=Status.RECEIVED.value, error=None, defects=[], document_count=0,
                received_at=received_at, updated_at=at,
            )
        )
        await session.execute(insert(mail_transitions).values(
            mail_key=key, status=Status.RECEIVED.value, at=at))
    else:
        await transition(session, key, Status.RECEIVED, at, error=None)


async def add_document(session: AsyncSession, **values: Any) -> None:
    await session.execute(insert(documents).values(**values))


async def record_parsed(
    session: AsyncSession, *, key: str, tenant: str, message_id: str, received_at: datetime,
    at: tuple[datetime, datetime, datetime], defects: list[str],
    docs: Sequence[dict[str, Any]],
) -> bool:
    """A mail seen for the first time and parsed: the rows that ``receive_mail``, two
    transitions and ``add_document`` per document would write (``at``: when it was RECEIVED,
    STORED, PARSED), in three statements instead of eight or more. False, and nothing
    written, when the mail has a row already."""
    values = dict(
        mail_key=key, tenant=tenant, message_id=message_id[:998], status=Status.PARSED.value,
        error=None, defects=defects, document_count=len(docs), received_at=received_at,
        updated_at=at[2],
    )
    dialect = session.bind.dialect.name
    if dialect == "sqlite":
        new_row = sqlite_insert(mails).values(**values).on_conflict_do_nothing()
    elif dialect == "postgresql":
        new_row = pg_insert(mails).values(**values).on_conflict_do_nothing()
    else:  # pragma: no cover - SQLite and PostgreSQL are the stores we run
        if await get_mail(session, key) is not None:
            return False
        new_row = insert(mails).values(**values)
    if (await session.execute(new_row)).rowcount == 0:
        return False
    await session.execute(insert(mail_transitions), [
        {"mail_key": key, "status": status.value, "at": when}
        for status, when in zip((Status.RECEIVED, Status.STORED, Status.PARSED), at, strict=True)
    ])
    if docs:
        await session.execute(insert(documents), list(docs))
    return True


async def transitions_of(session: AsyncSession, key: str) -> Sequence[Any]:
    return (
        await session.execute(
            select(mail_transitions.c.status, mail_transitions.c.at)
            .where(mail_transitions.c.mail_key == key)
            .order_by(mail_transitions.c.id)
        )
    ).all()


async def list_mails(
    session: AsyncSession, *, tenant: str | None, status: str | None, limit: int, offset: int
) -> Sequence[Any]:
    query = select(mails)
    if tenant is not None:
        query = query.where(mails.c.tenant == tenant)
    if status is not None:
        query = query.where(mails.c.status == status)
    query = query.order_by(mails.c.received_at.desc(), mails.c.mail_key).limit(limit)
    return (await session.execute(query.offset(offset))).all()


# --- documents ------------------------------------------------------------------------------


async def get_document(session: AsyncSession, document_id: str) -> Any:
    return (
        await session.execute(select(documents).where(documents.c.document_id == document_id))
    ).first()


async def list_documents(
    session: AsyncSession, *, tenant: str | None = None, mail_key: str | None = None,
    limit: int = 100, offset: int = 0,
) -> Sequence[Any]:
    """Newest first; the documents of one mail in attachment order."""
    query = select(documents)
    if tenant is not None:
        query = query.where(documents.c.tenant == tenant)
    if mail_key is not None:
        query = query.where(documents.c.mail_key == mail_key)
    query = query.order_by(
        documents.c.created_at.desc(), documents.c.mail_key, documents.c["index"]
    )
    return (await session.execute(query.limit(limit).offset(offset))).all()
