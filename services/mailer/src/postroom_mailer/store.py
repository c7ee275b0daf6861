"""mailer's own tables: the send outbox (one row per delivery_id) and the runtime tables.

A row is written by the consumer in its transaction (composed message and all) and then
belongs to the sender loop: ``pending`` -> ``claimed`` (a batch taken by one sender) ->
``sending`` (committed right before the SMTP conversation) -> ``sent`` or ``failed``; a
temporary failure puts it back to ``pending`` with its next attempt's time.
``dead_letter_pending`` marks a failed row whose dead letter is still to be published.
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum

from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    DateTime,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
)

from postroom_runtime import add_runtime_tables


class Status(StrEnum):
    PENDING = "pending"  # waiting for its (next) attempt
    CLAIMED = "claimed"  # taken by a sender, not yet handed to the relay
    SENDING = "sending"  # in an SMTP conversation: after a crash the relay may have it
    SENT = "sent"  # accepted by the relay (or captured): delivery.sent emitted
    FAILED = "failed"  # refused or retries ran out: delivery.failed emitted, dead-lettered


metadata = MetaData()

deliveries = Table(
    "deliveries",
    metadata,
    Column("delivery_id", String(128), primary_key=True),
    Column("tenant", String(63), nullable=False),
    Column("mail_key", String(64), nullable=False),
    Column("kind", String(32), nullable=False),
    Column("event", LargeBinary, nullable=False),  # the delivery.requested payload
    Column("event_subject", String(255), nullable=False),
    Column("event_headers", JSON, nullable=False),
    Column("message_id", String(998), nullable=False),
    Column("subject", Text, nullable=False),
    Column("envelope_from", String(998), nullable=False),
    Column("recipients", JSON, nullable=False),
    Column("message", LargeBinary, nullable=False),
    Column("status", String(16), nullable=False),
    Column("attempts", Integer, nullable=False, default=0),
    Column("uncertain", Integer, nullable=False, default=0),  # times found 'sending'
    Column("next_attempt_at", DateTime(timezone=True), nullable=False),
    Column("claimed_by", String(64), nullable=True),
    Column("claimed_at", DateTime(timezone=True), nullable=True),
    Column("relay", String(255), nullable=True),
    Column("smtp_code", Integer, nullable=True),
    Column("smtp_response", Text, nullable=True),
    Column("refused", JSON, nullable=True),
    Column("error", Text, nullable=True),
    Column("dkim_signed", Boolean, nullable=False, default=False),
    Column("dead_letter_pending", Boolean, nullable=False, default=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Column("sent_at", DateTime(timezone=True), nullable=True),
    Index("ix_deliveries_due", "status", "next_attempt_at"),
    Index("ix_deliveries_created_at", "created_at"),
)

processed_messages, outbox = add_runtime_tables(metadata)


def utc(value: datetime | None) -> datetime | None:
    """SQLite gives naive datetimes back: they were written in UTC."""
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value
