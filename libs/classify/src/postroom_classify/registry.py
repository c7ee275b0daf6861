"""Corrections and model versions in the classifier's store.

The classifier service owns the tables (its migrations create them); ``postroom classifier
train`` and the service's own retraining read the corrections and add model versions through
these functions, so both agree on the shape. A correction keeps the model input the mail gave
(:class:`MailFeatures` as JSON), so training never needs the blob store (raw mails expire
there; corrections must not).

A model version is ``logreg-tfidf-<YYYYMMDD>-<seq, 5 digits>-<training data SHA-256, 10 hex>``:
unique (``seq`` is unique and the primary key is the version), ordered (``seq`` grows; the
string sorts the same way within a day and across days), and it says which data made it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Column,
    DateTime,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    func,
    select,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from .features import MailFeatures
from .model import Classifier, Correction, Trained

MODEL_PREFIX = "logreg-tfidf"


def add_learning_tables(metadata: MetaData) -> tuple[Table, Table]:
    """``corrections`` (the latest correction of each mail) and ``models`` (versions)."""
    corrections = Table(
        "corrections",
        metadata,
        Column("tenant", String(63), primary_key=True),
        Column("mail_key", String(64), primary_key=True),
        Column("correction_id", String(64), nullable=False),
        Column("email_id", Text, nullable=False),
        Column("label", String(16), nullable=False),
        Column("previous_label", String(16), nullable=True),
        Column("previous_model_version", String(64), nullable=True),
        Column("corrected_by", String(200), nullable=False),
        Column("features", JSON, nullable=True),  # MailFeatures; None: the raw mail was gone
        Column("corrected_at", DateTime(timezone=True), nullable=False),
        Column("recorded_at", DateTime(timezone=True), nullable=False),
    )
    models = Table(
        "models",
        metadata,
        Column("version", String(64), primary_key=True),
        Column("seq", Integer, nullable=False, unique=True),
        Column("created_at", DateTime(timezone=True), nullable=False),
        Column("corrections", Integer, nullable=False),  # corrections learned from
        Column("training_mails", Integer, nullable=False),
        Column("training_sha256", String(64), nullable=False),
        Column("training_seconds", Integer, nullable=False),
        Column("metrics", JSON, nullable=True),  # held-out figures (evaluate())
        Column("trained_by", String(200), nullable=False),
        Column("model", LargeBinary, nullable=False),  # the model file's bytes (joblib)
    )
    return corrections, models


metadata = MetaData()
corrections, models = add_learning_tables(metadata)


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


@dataclass
class StoredCorrections:
    corrections: list[Correction]
    without_features: int  # recorded, but the raw mail was gone: nothing to learn from
    latest: datetime | None  # recorded_at of the newest one


async def load_corrections(session: AsyncSession) -> StoredCorrections:
    rows = (await session.execute(
        select(corrections.c.label, corrections.c.features, corrections.c.recorded_at)
        .order_by(corrections.c.tenant, corrections.c.mail_key))).all()
    usable = [Correction(MailFeatures.from_json(r.features), r.label)
              for r in rows if r.features is not None]
    latest = max((_utc(r.recorded_at) for r in rows), default=None)
    return StoredCorrections(usable, len(rows) - len(usable), latest)


@dataclass
class ModelInfo:
    version: str
    seq: int
    created_at: datetime
    corrections: int


async def latest_model(session: AsyncSession) -> ModelInfo | None:
    row = (await session.execute(
        select(models.c.version, models.c.seq, models.c.created_at, models.c.corrections)
        .order_by(models.c.seq.desc()).limit(1))).first()
    if row is None:
        return None
    return ModelInfo(row.version, row.seq, _utc(row.created_at), row.corrections)


async def load_model(session: AsyncSession, version: str) -> bytes:
    data = (await session.execute(
        select(models.c.model).where(models.c.version == version))).scalar_one()
    return bytes(data)


async def record_model(engine: AsyncEngine, trained: Trained, *, training_mails: int,
                       metrics: dict[str, Any] | None, trained_by: str,
                       attempts: int = 5) -> str:
    """Store ``trained`` as the next version and return it. Two trainers racing for the same
    ``seq`` cannot both win (unique); the loser takes the next one."""
    for attempt in range(attempts):
        try:
            async with engine.begin() as conn:
                seq = int((await conn.execute(
                    select(func.coalesce(func.max(models.c.seq), 0)))).scalar_one()) + 1
                version = (f"{MODEL_PREFIX}-{time.strftime('%Y%m%d')}-{seq:05d}-"
                           f"{trained.digest[:10]}")
                trained.classifier.version = version
                await conn.execute(models.insert().values(
                    version=version, seq=seq, created_at=datetime.now(UTC),
                    corrections=trained.corrections, training_mails=training_mails,
                    training_sha256=trained.digest,
                    training_seconds=round(trained.seconds), metrics=metrics,
                    trained_by=trained_by, model=trained.classifier.to_bytes()))
        except IntegrityError:
            if attempt == attempts - 1:
                raise
            continue
        return version
    raise RuntimeError("unreachable")


def classifier_of(data: bytes) -> Classifier:
    return Classifier.from_bytes(data)
