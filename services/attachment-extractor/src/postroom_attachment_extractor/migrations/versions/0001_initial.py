"""mails, their transitions and documents; the runtime's idempotency and outbox tables.

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
        sa.Column("mail_key", sa.String(64), primary_key=True),
        sa.Column("tenant", sa.String(63), nullable=False),
        sa.Column("message_id", sa.String(998), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("error", sa.Text, nullable=True),
        sa.Column("defects", sa.JSON, nullable=False),
        sa.Column("document_count", sa.Integer, nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_mails_tenant_received_at", "mails", ["tenant", "received_at"])
    op.create_index("ix_mails_status", "mails", ["status"])
    op.create_table(
        "mail_transitions",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("mail_key", sa.String(64), sa.ForeignKey("mails.mail_key"), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_mail_transitions_mail_key", "mail_transitions", ["mail_key"])
    op.create_table(
        "documents",
        sa.Column("document_id", sa.String(64), primary_key=True),
        sa.Column("tenant", sa.String(63), nullable=False),
        sa.Column("mail_key", sa.String(64), sa.ForeignKey("mails.mail_key"), nullable=False),
        sa.Column("index", sa.Integer, nullable=False),
        sa.Column("filename", sa.String(255), nullable=False),
        sa.Column("declared_type", sa.String(255), nullable=False),
        sa.Column("sniffed_type", sa.String(255), nullable=True),
        sa.Column("size", sa.BigInteger, nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("blob_bucket", sa.String(255), nullable=False),
        sa.Column("blob_key", sa.String(255), nullable=False),
        sa.Column("supported", sa.Boolean, nullable=False),
        sa.Column("metadata", sa.JSON, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("mail_key", "index", name="uq_documents_mail_key_index"),
    )
    op.create_index("ix_documents_sha256", "documents", ["sha256"])
    op.create_index("ix_documents_tenant_created_at", "documents", ["tenant", "created_at"])
    op.create_index("ix_documents_created_at", "documents", ["created_at"])
    create_runtime_tables(op)


def downgrade() -> None:
    op.drop_table("outbox")
    op.drop_table("processed_messages")
    op.drop_table("documents")
    op.drop_table("mail_transitions")
    op.drop_table("mails")
