"""classifier's own tables: one row per classified mail (the mail.classified event), the
latest correction of each mail and the model versions (both shaped by postroom_classify.registry,
which ``postroom classifier train`` uses too).

A classification is written in the consumer's transaction with the idempotency row and the
outbox row of the mail.classified event, so a crash leaves all of it or none.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
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

from postroom_classify.registry import add_learning_tables
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
    # the model input the raw mail does not tell, needed again when the mail is corrected:
    # whether a tenant's route matched (mail.parsed's route) and the document types the
    # extractor found (mail.parsed's documents)
    Column("routed", Boolean, nullable=True),
    Column("attachments", JSON, nullable=True),
    Index("ix_classifications_mail_key", "mail_key"),
    Index("ix_classifications_tenant_processed_at", "tenant", "processed_at"),
    Index("ix_classifications_label", "label"),
)

corrections, models = add_learning_tables(metadata)
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


async def classified_input(session: AsyncSession, tenant: str, mail_key: str) -> Any:
    """``routed`` and ``attachments`` of the mail's latest classification (None: never
    classified here, or before these were kept)."""
    t = classifications
    return (await session.execute(
        select(t.c.routed, t.c.attachments).where(t.c.tenant == tenant,
                                                  t.c.mail_key == mail_key)
        .order_by(t.c.processed_at.desc()).limit(1))).first()


async def save_correction(session: AsyncSession, row: dict[str, Any]) -> bool:
    """Keep ``row`` as the mail's correction unless a later one is already there (latest
    wins, by the time the person made it; a redelivered older correction changes nothing).
    True when stored."""
    t = corrections
    current = (await session.execute(
        select(t.c.corrected_at, t.c.correction_id)
        .where(t.c.tenant == row["tenant"], t.c.mail_key == row["mail_key"])
        .with_for_update())).first()
    if current is None:
        await session.execute(t.insert().values(**row))
        return True
    at = current.corrected_at
    if at.tzinfo is None:
        at = at.replace(tzinfo=row["corrected_at"].tzinfo)
    if (at, current.correction_id) > (row["corrected_at"], row["correction_id"]):
        return False
    await session.execute(t.update().where(t.c.tenant == row["tenant"],
                                           t.c.mail_key == row["mail_key"]).values(**row))
    return True


async def list_corrections(session: AsyncSession, *, tenant: str | None = None,
                           limit: int = 100, offset: int = 0) -> list[Any]:
    t = corrections
    query = select(*(c for c in t.c if c.name != "features"))
    if tenant is not None:
        query = query.where(t.c.tenant == tenant)
    query = query.order_by(t.c.corrected_at.desc(), t.c.mail_key).limit(limit).offset(offset)
    return list((await session.execute(query)).all())
