"""console's own tables: the read model (a projection of the event stream), the position it
was built to, the API keys and the label corrections made here.

The projection tables (``mails``, ``timeline``, ``deliveries``, ``projection_failures``) are
derived data: a rebuild deletes their rows and reads the stream again. ``api_keys`` and
``corrections`` are the console's own facts and survive a rebuild. Every list the API serves
has an index on its filter followed by its keyset order, so a page is an index range scan
whatever the table size.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    DateTime,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
)

from postroom_runtime import add_runtime_tables

metadata = MetaData()

PROJECTION = "events"  # projection_state.name of the one projection

mails = Table(
    "mails",
    metadata,
    Column("mail_key", String(64), primary_key=True),
    Column("tenant", String(63), nullable=False),
    Column("message_id", Text, nullable=True),
    Column("source", String(16), nullable=True),
    Column("mailbox", String(255), nullable=True),
    Column("envelope_from", Text, nullable=True),
    Column("header_from", Text, nullable=True),
    Column("recipients", JSON, nullable=False),
    Column("subject", Text, nullable=True),
    # the subject case-folded (str.casefold) for the search: one text compared on both stores,
    # served by a pg_trgm GIN index (PostgreSQL) or the FTS5 trigram table mails_subject_fts
    # kept by triggers (SQLite); both made by migration 0002
    Column("subject_search", Text, nullable=True),
    # the sender filter's text, kept by the projector: the From header's address and the
    # envelope sender, each case-folded, joined by "\n" (handlers.sender_fold); indexed as
    # subject_search is (pg_trgm GIN index or the FTS5 table mails_sender_fts; migration 0004)
    Column("sender_search", Text, nullable=True),
    # mail.received's occurred_at; until it is seen, the first event's (keyset order: not null)
    Column("received_at", DateTime(timezone=True), nullable=False),
    Column("size", BigInteger, nullable=True),
    Column("raw", JSON, nullable=True),
    Column("status", String(16), nullable=False),
    Column("label", String(16), nullable=True),
    Column("confidence", Float, nullable=True),
    Column("scores", JSON, nullable=True),
    Column("model_version", String(64), nullable=True),
    Column("spam_score", Float, nullable=True),
    Column("processor_id", String(128), nullable=True),
    Column("classified_at", DateTime(timezone=True), nullable=True),
    Column("classify_ms", Float, nullable=True),  # the classifier's processing_time_ms
    Column("corrected_label", String(16), nullable=True),
    Column("corrected_by", String(128), nullable=True),
    Column("trace_id", String(32), nullable=True),
    Column("processing_ms", Float, nullable=True),  # received -> classified
    Column("has_html", Integer, nullable=False),
    Column("documents", Integer, nullable=False),
    Column("transcripts", Integer, nullable=False),
    Column("deliveries", Integer, nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Column("last_sequence", BigInteger, nullable=False),
    Index("ix_mails_received", "received_at", "mail_key"),
    Index("ix_mails_tenant_received", "tenant", "received_at", "mail_key"),
    Index("ix_mails_label_received", "label", "received_at", "mail_key"),
    Index("ix_mails_status_received", "status", "received_at", "mail_key"),
    Index("ix_mails_tenant_label_received", "tenant", "label", "received_at", "mail_key"),
    Index("ix_mails_tenant_status_received", "tenant", "status", "received_at", "mail_key"),
    Index("ix_mails_message_id", "message_id"),
)

timeline = Table(
    "timeline",
    metadata,
    Column("sequence", BigInteger, primary_key=True, autoincrement=False),  # stream sequence
    Column("mail_key", String(64), nullable=False),
    Column("tenant", String(63), nullable=False),
    Column("event_type", String(64), nullable=False),
    Column("event_id", String(128), nullable=False),
    Column("occurred_at", DateTime(timezone=True), nullable=False),
    Column("payload", JSON, nullable=False),
    Column("trace_id", String(32), nullable=True),
    Index("ix_timeline_mail", "mail_key", "sequence"),
    Index("ix_timeline_tenant", "tenant", "sequence"),
    Index("ix_timeline_event_id", "event_id"),
)

deliveries = Table(
    "deliveries",
    metadata,
    Column("delivery_id", String(128), primary_key=True),
    Column("mail_key", String(64), nullable=False),
    Column("tenant", String(63), nullable=False),
    Column("kind", String(16), nullable=False),
    Column("to", JSON, nullable=False),
    Column("status", String(16), nullable=False),  # requested | sent | failed
    Column("requested_at", DateTime(timezone=True), nullable=True),
    Column("finished_at", DateTime(timezone=True), nullable=True),
    Column("relay", String(255), nullable=True),
    Column("error", Text, nullable=True),
    Column("message_id", Text, nullable=True),
    Column("sequence", BigInteger, nullable=False),  # of delivery.requested (keyset order)
    Index("ix_deliveries_sequence", "sequence"),
    Index("ix_deliveries_mail", "mail_key"),
    Index("ix_deliveries_status_sequence", "status", "sequence"),
    Index("ix_deliveries_tenant_sequence", "tenant", "sequence"),
    Index("ix_deliveries_tenant_status_sequence", "tenant", "status", "sequence"),
)

# AI replies (reply.drafted, reply.reviewed, reply.skipped), one row per reply id; status:
# the draft's pending | held | auto, then approved | rejected once reviewed, or skipped
replies = Table(
    "replies",
    metadata,
    Column("reply_id", String(64), primary_key=True),
    Column("mail_key", String(64), nullable=False),
    Column("tenant", String(63), nullable=False),
    Column("mailbox", String(255), nullable=True),
    Column("status", String(16), nullable=False),
    Column("draft_status", String(16), nullable=True),  # pending | held | auto as drafted
    Column("held_reasons", JSON, nullable=False),
    Column("to", JSON, nullable=False),
    Column("subject", Text, nullable=True),
    Column("body_text", Text, nullable=True),
    Column("draft_text", Text, nullable=True),
    Column("language", String(16), nullable=True),
    Column("model", String(128), nullable=True),
    Column("backend", String(32), nullable=True),
    Column("sources", JSON, nullable=False),
    Column("drafted_at", DateTime(timezone=True), nullable=True),
    Column("decision", String(16), nullable=True),
    Column("reviewed_by", String(128), nullable=True),
    Column("reviewed_at", DateTime(timezone=True), nullable=True),
    Column("edited_text", Text, nullable=True),  # the draft's text as the reviewer sent it
    Column("reason", Text, nullable=True),  # a rejection's, or why it was skipped
    Column("sequence", BigInteger, nullable=False),  # of its first event (keyset order)
    Index("ix_replies_sequence", "sequence"),
    Index("ix_replies_mail", "mail_key"),
    Index("ix_replies_status_sequence", "status", "sequence"),
    Index("ix_replies_tenant_sequence", "tenant", "sequence"),
    Index("ix_replies_tenant_status_sequence", "tenant", "status", "sequence"),
)

projection_state = Table(
    "projection_state",
    metadata,
    Column("name", String(32), primary_key=True),
    Column("last_sequence", BigInteger, nullable=False),
    Column("rebuilt_at", DateTime(timezone=True), nullable=True),
)

projection_failures = Table(
    "projection_failures",
    metadata,
    Column("sequence", BigInteger, primary_key=True, autoincrement=False),
    Column("subject", String(255), nullable=False),
    Column("mail_key", String(64), nullable=True),
    Column("error", Text, nullable=False),
    Column("failed_at", DateTime(timezone=True), nullable=False),
)

api_keys = Table(
    "api_keys",
    metadata,
    Column("key_id", String(32), primary_key=True),
    Column("name", String(128), nullable=False),
    Column("tenant", String(63), nullable=True),  # NULL: admin
    Column("secret_hash", String(64), nullable=False),  # sha256 hex of the secret
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("revoked_at", DateTime(timezone=True), nullable=True),
)

corrections = Table(
    "corrections",
    metadata,
    Column("correction_id", String(64), primary_key=True),
    Column("mail_key", String(64), nullable=False),
    Column("tenant", String(63), nullable=False),
    Column("label", String(16), nullable=False),
    Column("previous_label", String(16), nullable=True),
    Column("corrected_by", String(128), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Index("ix_corrections_mail", "mail_key"),
)

# the reviews made here (a console fact, kept across a rebuild): one per reply, so a second
# decision on the same reply is refused (409) even before its event is projected
reply_reviews = Table(
    "reply_reviews",
    metadata,
    Column("reply_id", String(64), primary_key=True),
    Column("mail_key", String(64), nullable=False),
    Column("tenant", String(63), nullable=False),
    Column("decision", String(16), nullable=False),
    Column("reviewed_by", String(128), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

processed_messages, outbox = add_runtime_tables(metadata)

PROJECTION_TABLES = (mails, timeline, deliveries, replies, projection_failures)


def fit(table: Table, row: dict[str, Any]) -> dict[str, Any]:
    """``row`` as the column types take it on every backend: strings cut to the column's
    length and without NUL characters (PostgreSQL refuses both; SQLite would not)."""
    out = dict(row)
    for column in table.columns:
        value = out.get(column.name)
        if isinstance(value, str):
            value = value.replace("\x00", "")
            length = getattr(column.type, "length", None)
            out[column.name] = value[:length] if length else value
    return out
