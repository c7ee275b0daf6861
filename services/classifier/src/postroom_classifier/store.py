"""classifier's own table: one row per classified mail (the mail.classified event).

Written in the consumer's transaction with the idempotency row and the outbox row of the
mail.classified event, so a crash leaves all of it or none.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    JSON,
    Column,
    DateTime,
    Float,
    Index,
    MetaData,
    String,
    Table,
    Text,
    func,
    select,
)
from sqlalchemy.ext.asyncio import AsyncSession

from postroom_runtime import add_runtime_tables

metadata = MetaData()

classifications = Table(
    "classifications",
    metadata,
    Column("event_id", String(64), primary_key=True),  # the mail.classified event
    Column("tenant", String(63), nullable=False),
    Column("mail_key", String(64), nullable=False),
    Column("email_id", Text, nullable=False),
    Column("label", String(16), nullable=False),
    Column("confidence", Float, nullable=False),
    Column("scores", JSON, nullable=False),
    Column("model_version", String(64), nullable=False),
    Column("processor_id", String(128), nullable=False),
    Column("processing_time_ms", Float, nullable=False),
    Column("spam_score", Float, nullable=True),
    Column("processed_at", DateTime(timezone=True), nullable=False),
    Index("ix_classifications_mail_key", "mail_key"),
    Index("ix_classifications_tenant_processed_at", "tenant", "processed_at"),
    Index("ix_classifications_label", "label"),
)

processed_messages, outbox = add_runtime_tables(metadata)


async def add(session: AsyncSession, **row: Any) -> None:
    await session.execute(classifications.insert().values(**row))


async def list_classifications(session: AsyncSession, *, tenant: str | None = None,
                               mail_key: str | None = None, label: str | None = None,
                               limit: int = 100, offset: int = 0) -> list[Any]:
    query = select(classifications)
    if tenant is not None:
        query = query.where(classifications.c.tenant == tenant)
    if mail_key is not None:
        query = query.where(classifications.c.mail_key == mail_key)
    if label is not None:
        query = query.where(classifications.c.label == label)
    query = query.order_by(classifications.c.processed_at.desc(),
                           classifications.c.event_id).limit(limit).offset(offset)
    return list((await session.execute(query)).all())


async def counts_by_label(session: AsyncSession) -> dict[str, int]:
    rows = await session.execute(select(classifications.c.label, func.count())
                                 .group_by(classifications.c.label))
    return {label: int(n) for label, n in rows.all()}
