"""accounts, positions, mails, imap_uids; the runtime's idempotency and outbox tables.

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
        "accounts",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("origin", sa.String(8), nullable=False),
        sa.Column("tenant", sa.String(63), nullable=False),
        sa.Column("mailbox", sa.String(64), nullable=False),
        sa.Column("address", sa.String(320), nullable=False),
        sa.Column("host", sa.String(255), nullable=False),
        sa.Column("port", sa.Integer, nullable=False),
        sa.Column("security", sa.String(16), nullable=False),
        sa.Column("tls_verify", sa.Boolean, nullable=False),
        sa.Column("username", sa.String(320), nullable=False),
        sa.Column("auth", sa.String(16), nullable=False),
        sa.Column("secret", sa.LargeBinary, nullable=False),
        sa.Column("webhook_secret", sa.LargeBinary, nullable=True),
        sa.Column("folders", sa.JSON, nullable=False),
        sa.Column("mode", sa.String(8), nullable=False),
        sa.Column("mark_seen", sa.Boolean, nullable=False),
        sa.Column("flag", sa.String(64), nullable=True),
        sa.Column("move_to", sa.String(255), nullable=True),
        sa.Column("since", sa.DateTime(timezone=True), nullable=True),
        sa.Column("enabled", sa.Boolean, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "positions",
        sa.Column("account_id", sa.String(64), primary_key=True),
        sa.Column("folder", sa.String(255), primary_key=True),
        sa.Column("uidvalidity", sa.BigInteger, nullable=True),
        sa.Column("uidnext", sa.BigInteger, nullable=True),
        sa.Column("highestmodseq", sa.BigInteger, nullable=True),
        sa.Column("history_id", sa.String(64), nullable=True),
        sa.Column("ingested", sa.Integer, nullable=False),
        sa.Column("duplicates", sa.Integer, nullable=False),
        sa.Column("last_sync_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_table(
        "mails",
        sa.Column("mail_key", sa.String(64), primary_key=True),
        sa.Column("tenant", sa.String(63), nullable=False),
        sa.Column("message_id", sa.String(1000), nullable=False),
        sa.Column("content_sha256", sa.String(64), nullable=False),
        sa.Column("event_id", sa.String(64), nullable=False),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("account_id", sa.String(64), nullable=True),
        sa.Column("size", sa.BigInteger, nullable=False),
        sa.Column("ingested_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "imap_uids",
        sa.Column("account_id", sa.String(64), primary_key=True),
        sa.Column("folder", sa.String(255), primary_key=True),
        sa.Column("uidvalidity", sa.BigInteger, primary_key=True),
        sa.Column("uid", sa.BigInteger, primary_key=True),
        sa.Column("mail_key", sa.String(64), nullable=False),
        sa.Column("seen_at", sa.DateTime(timezone=True), nullable=False),
    )
    create_runtime_tables(op)


def downgrade() -> None:
    for table in ("outbox", "processed_messages", "imap_uids", "mails", "positions", "accounts"):
        op.drop_table(table)
