"""transcriber's own table: one row per transcribed (or failed) recording.

Written in the consumer's transaction with the idempotency row and the outbox rows of the
voicemail.transcribed and delivery.requested events, so a crash leaves all of it or none.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    JSON,
    Column,
    DateTime,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    select,
)
from sqlalchemy.ext.asyncio import AsyncSession

from postroom_runtime import add_runtime_tables

metadata = MetaData()

transcriptions = Table(
    "transcriptions",
    metadata,
    Column("event_id", String(64), primary_key=True),  # the voicemail.transcribed event
    Column("tenant", String(63), nullable=False),
    Column("mail_key", String(64), nullable=False),
    Column("index", Integer, nullable=False),
    Column("document_id", String(64), nullable=False),
    Column("status", String(16), nullable=False),
    Column("engine", String(32), nullable=False),
    Column("language", String(35), nullable=False),
    Column("text", Text, nullable=False),
    Column("confidence", Float, nullable=True),
    Column("duration_seconds", Float, nullable=False),
    Column("processing_seconds", Float, nullable=False),
    Column("error", Text, nullable=True),
    Column("call", JSON, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Index("ix_transcriptions_mail_key", "mail_key"),
    Index("ix_transcriptions_tenant_created_at", "tenant", "created_at"),
)

processed_messages, outbox = add_runtime_tables(metadata)


async def add(session: AsyncSession, **row: Any) -> None:
    await session.execute(transcriptions.insert().values(**row))


async def list_transcriptions(session: AsyncSession, *, tenant: str | None = None,
                              mail_key: str | None = None, limit: int = 100,
                              offset: int = 0) -> list[Any]:
    query = select(transcriptions)
    if tenant is not None:
        query = query.where(transcriptions.c.tenant == tenant)
    if mail_key is not None:
        query = query.where(transcriptions.c.mail_key == mail_key)
    query = query.order_by(transcriptions.c.created_at.desc(),
                           transcriptions.c.index).limit(limit).offset(offset)
    return list((await session.execute(query)).all())
