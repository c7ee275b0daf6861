"""classifications; the runtime's idempotency and outbox tables.

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
        "classifications",
        sa.Column("event_id", sa.String(64), primary_key=True),
        sa.Column("tenant", sa.String(63), nullable=False),
        sa.Column("mail_key", sa.String(64), nullable=False),
        sa.Column("email_id", sa.Text, nullable=False),
        sa.Column("label", sa.String(16), nullable=False),
        sa.Column("confidence", sa.Float, nullable=False),
        sa.Column("scores", sa.JSON, nullable=False),
        sa.Column("model_version", sa.String(64), nullable=False),
        sa.Column("processor_id", sa.String(128), nullable=False),
        sa.Column("processing_time_ms", sa.Float, nullable=False),
        sa.Column("spam_score", sa.Float, nullable=True),
        sa.Column("processed_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_classifications_mail_key", "classifications", ["mail_key"])
    op.create_index("ix_classifications_tenant_processed_at", "classifications",
                    ["tenant", "processed_at"])
    op.create_index("ix_classifications_label", "classifications", ["label"])
    create_runtime_tables(op)


def downgrade() -> None:
    op.drop_table("outbox")
    op.drop_table("processed_messages")
    op.drop_table("classifications")
