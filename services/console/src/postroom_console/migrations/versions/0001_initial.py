"""The read model (mails, timeline, deliveries, projection_state, projection_failures), API
keys, corrections; the runtime's idempotency and outbox tables.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

from postroom_runtime.store import create_runtime_tables

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

TZ = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "mails",
        sa.Column("mail_key", sa.String(64), primary_key=True),
        sa.Column("tenant", sa.String(63), nullable=False),
        sa.Column("message_id", sa.Text, nullable=True),
        sa.Column("source", sa.String(16), nullable=True),
        sa.Column("mailbox", sa.String(255), nullable=True),
        sa.Column("envelope_from", sa.Text, nullable=True),
        sa.Column("header_from", sa.Text, nullable=True),
        sa.Column("recipients", sa.JSON, nullable=False),
        sa.Column("subject", sa.Text, nullable=True),
        sa.Column("received_at", TZ, nullable=False),
        sa.Column("size", sa.BigInteger, nullable=True),
        sa.Column("raw", sa.JSON, nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("label", sa.String(16), nullable=True),
        sa.Column("confidence", sa.Float, nullable=True),
        sa.Column("scores", sa.JSON, nullable=True),
        sa.Column("model_version", sa.String(64), nullable=True),
        sa.Column("spam_score", sa.Float, nullable=True),
        sa.Column("processor_id", sa.String(128), nullable=True),
        sa.Column("classified_at", TZ, nullable=True),
        sa.Column("classify_ms", sa.Float, nullable=True),
        sa.Column("corrected_label", sa.String(16), nullable=True),
        sa.Column("corrected_by", sa.String(128), nullable=True),
        sa.Column("trace_id", sa.String(32), nullable=True),
        sa.Column("processing_ms", sa.Float, nullable=True),
        sa.Column("has_html", sa.Integer, nullable=False),
        sa.Column("documents", sa.Integer, nullable=False),
        sa.Column("transcripts", sa.Integer, nullable=False),
        sa.Column("deliveries", sa.Integer, nullable=False),
        sa.Column("updated_at", TZ, nullable=False),
        sa.Column("last_sequence", sa.BigInteger, nullable=False),
    )
    for name, columns in [
        ("ix_mails_received", ["received_at", "mail_key"]),
        ("ix_mails_tenant_received", ["tenant", "received_at", "mail_key"]),
        ("ix_mails_label_received", ["label", "received_at", "mail_key"]),
        ("ix_mails_status_received", ["status", "received_at", "mail_key"]),
        ("ix_mails_tenant_label_received", ["tenant", "label", "received_at", "mail_key"]),
        ("ix_mails_tenant_status_received", ["tenant", "status", "received_at", "mail_key"]),
        ("ix_mails_message_id", ["message_id"]),
    ]:
        op.create_index(name, "mails", columns)

    op.create_table(
        "timeline",
        sa.Column("sequence", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("mail_key", sa.String(64), nullable=False),
        sa.Column("tenant", sa.String(63), nullable=False),
        sa.Column("event_type", sa.String(64), nullable=False),
        sa.Column("event_id", sa.String(128), nullable=False),
        sa.Column("occurred_at", TZ, nullable=False),
        sa.Column("payload", sa.JSON, nullable=False),
        sa.Column("trace_id", sa.String(32), nullable=True),
    )
    op.create_index("ix_timeline_mail", "timeline", ["mail_key", "sequence"])
    op.create_index("ix_timeline_tenant", "timeline", ["tenant", "sequence"])
    op.create_index("ix_timeline_event_id", "timeline", ["event_id"])

    op.create_table(
        "deliveries",
        sa.Column("delivery_id", sa.String(128), primary_key=True),
        sa.Column("mail_key", sa.String(64), nullable=False),
        sa.Column("tenant", sa.String(63), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("to", sa.JSON, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("requested_at", TZ, nullable=True),
        sa.Column("finished_at", TZ, nullable=True),
        sa.Column("relay", sa.String(255), nullable=True),
        sa.Column("error", sa.Text, nullable=True),
        sa.Column("message_id", sa.Text, nullable=True),
        sa.Column("sequence", sa.BigInteger, nullable=False),
    )
    for name, columns in [
        ("ix_deliveries_sequence", ["sequence"]),
        ("ix_deliveries_mail", ["mail_key"]),
        ("ix_deliveries_status_sequence", ["status", "sequence"]),
        ("ix_deliveries_tenant_sequence", ["tenant", "sequence"]),
        ("ix_deliveries_tenant_status_sequence", ["tenant", "status", "sequence"]),
    ]:
        op.create_index(name, "deliveries", columns)

    op.create_table(
        "projection_state",
        sa.Column("name", sa.String(32), primary_key=True),
        sa.Column("last_sequence", sa.BigInteger, nullable=False),
        sa.Column("rebuilt_at", TZ, nullable=True),
    )
    op.create_table(
        "projection_failures",
        sa.Column("sequence", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("subject", sa.String(255), nullable=False),
        sa.Column("mail_key", sa.String(64), nullable=True),
        sa.Column("error", sa.Text, nullable=False),
        sa.Column("failed_at", TZ, nullable=False),
    )
    op.create_table(
        "api_keys",
        sa.Column("key_id", sa.String(32), primary_key=True),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("tenant", sa.String(63), nullable=True),
        sa.Column("secret_hash", sa.String(64), nullable=False),
        sa.Column("created_at", TZ, nullable=False),
        sa.Column("revoked_at", TZ, nullable=True),
    )
    op.create_table(
        "corrections",
        sa.Column("correction_id", sa.String(64), primary_key=True),
        sa.Column("mail_key", sa.String(64), nullable=False),
        sa.Column("tenant", sa.String(63), nullable=False),
        sa.Column("label", sa.String(16), nullable=False),
        sa.Column("previous_label", sa.String(16), nullable=True),
        sa.Column("corrected_by", sa.String(128), nullable=False),
        sa.Column("created_at", TZ, nullable=False),
    )
    op.create_index("ix_corrections_mail", "corrections", ["mail_key"])
    create_runtime_tables(op)


def downgrade() -> None:
    for table in ("outbox", "processed_messages", "corrections", "api_keys",
                  "projection_failures", "projection_state", "deliveries", "timeline", "mails"):
        op.drop_table(table)
