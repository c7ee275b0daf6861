"""mails, dmarc_failures, replies, audit, rate_buckets; the runtime's idempotency and outbox
tables.

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
        "mails",
        sa.Column("tenant", sa.String(63), primary_key=True),
        sa.Column("mail_key", sa.String(64), primary_key=True),
        sa.Column("mailbox", sa.String(64), nullable=False),
        sa.Column("message_id", sa.Text, nullable=False),
        sa.Column("envelope_from", sa.Text, nullable=True),
        sa.Column("reply", sa.Boolean, nullable=False),
        sa.Column("raw", sa.JSON, nullable=True),
        sa.Column("thread_id", sa.Text, nullable=True),
        sa.Column("subject", sa.Text, nullable=True),
        sa.Column("body_text", sa.Text, nullable=True),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_mails_tenant_thread", "mails", ["tenant", "thread_id"])
    op.create_index("ix_mails_received_at", "mails", ["received_at"])
    op.create_table(
        "replies",
        sa.Column("reply_id", sa.String(64), primary_key=True),
        sa.Column("tenant", sa.String(63), nullable=False),
        sa.Column("mail_key", sa.String(64), nullable=False),
        sa.Column("mailbox", sa.String(64), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("reason", sa.String(32), nullable=True),
        sa.Column("detail", sa.Text, nullable=True),
        sa.Column("label", sa.String(16), nullable=True),
        sa.Column("cause_event_id", sa.String(64), nullable=False),
        sa.Column("trace", sa.JSON, nullable=False),
        sa.Column("thread_id", sa.Text, nullable=True),
        sa.Column("email_id", sa.Text, nullable=True),
        sa.Column("request", sa.JSON, nullable=True),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_error", sa.Text, nullable=True),
        sa.Column("to", sa.JSON, nullable=True),
        sa.Column("from_address", sa.Text, nullable=True),
        sa.Column("subject", sa.Text, nullable=True),
        sa.Column("draft_text", sa.Text, nullable=True),
        sa.Column("body_text", sa.Text, nullable=True),
        sa.Column("body_html", sa.Text, nullable=True),
        sa.Column("language", sa.String(8), nullable=True),
        sa.Column("in_reply_to", sa.Text, nullable=True),
        sa.Column("references", sa.JSON, nullable=True),
        sa.Column("model", sa.String(128), nullable=True),
        sa.Column("backend", sa.String(16), nullable=True),
        sa.Column("prompt_version", sa.String(32), nullable=True),
        sa.Column("sources", sa.JSON, nullable=True),
        sa.Column("held_reasons", sa.JSON, nullable=True),
        sa.Column("prompt_tokens", sa.Integer, nullable=True),
        sa.Column("completion_tokens", sa.Integer, nullable=True),
        sa.Column("latency_ms", sa.Float, nullable=True),
        sa.Column("delivery_id", sa.String(128), nullable=True),
        sa.Column("reviewed_by", sa.String(200), nullable=True),
        sa.Column("queued_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("drafted_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("decided_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_index("ix_replies_status_next", "replies", ["status", "next_attempt_at"])
    op.create_index("ix_replies_tenant_queued", "replies", ["tenant", "queued_at"])
    op.create_index("ix_replies_mail", "replies", ["tenant", "mail_key"])
    op.create_table(
        "audit",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True,
                  autoincrement=True),
        sa.Column("reply_id", sa.String(64), nullable=False),
        sa.Column("tenant", sa.String(63), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("action", sa.String(32), nullable=False),
        sa.Column("actor", sa.String(200), nullable=False),
        sa.Column("detail", sa.JSON, nullable=False),
    )
    op.create_index("ix_audit_reply_id", "audit", ["reply_id"])
    op.create_table(
        "dmarc_failures",
        sa.Column("tenant", sa.String(63), primary_key=True),
        sa.Column("mail_key", sa.String(64), primary_key=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "rate_buckets",
        sa.Column("scope", sa.String(16), primary_key=True),
        sa.Column("key", sa.String(255), primary_key=True),
        sa.Column("tokens", sa.Float, nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    create_runtime_tables(op)


def downgrade() -> None:
    for table in ("outbox", "processed_messages", "rate_buckets", "dmarc_failures", "audit",
                  "replies", "mails"):
        op.drop_table(table)
