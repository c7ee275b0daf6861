"""deliveries (the send outbox); the runtime's idempotency and outbox tables.

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


def upgrade() -> None:
    op.create_table(
        "deliveries",
        sa.Column("delivery_id", sa.String(128), primary_key=True),
        sa.Column("tenant", sa.String(63), nullable=False),
        sa.Column("mail_key", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("event", sa.LargeBinary, nullable=False),
        sa.Column("event_subject", sa.String(255), nullable=False),
        sa.Column("event_headers", sa.JSON, nullable=False),
        sa.Column("message_id", sa.String(998), nullable=False),
        sa.Column("subject", sa.Text, nullable=False),
        sa.Column("envelope_from", sa.String(998), nullable=False),
        sa.Column("recipients", sa.JSON, nullable=False),
        sa.Column("message", sa.LargeBinary, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("uncertain", sa.Integer, nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("claimed_by", sa.String(64), nullable=True),
        sa.Column("claimed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("relay", sa.String(255), nullable=True),
        sa.Column("smtp_code", sa.Integer, nullable=True),
        sa.Column("smtp_response", sa.Text, nullable=True),
        sa.Column("refused", sa.JSON, nullable=True),
        sa.Column("error", sa.Text, nullable=True),
        sa.Column("dkim_signed", sa.Boolean, nullable=False),
        sa.Column("dead_letter_pending", sa.Boolean, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_index("ix_deliveries_due", "deliveries", ["status", "next_attempt_at"])
    op.create_index("ix_deliveries_created_at", "deliveries", ["created_at"])
    create_runtime_tables(op)


def downgrade() -> None:
    op.drop_table("outbox")
    op.drop_table("processed_messages")
    op.drop_table("deliveries")
