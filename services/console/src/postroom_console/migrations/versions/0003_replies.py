"""AI replies: ``replies`` (projected from reply.drafted, reply.reviewed, reply.skipped) and
``reply_reviews`` (the decisions made in the console, one per reply). The stored position
goes back to 0 so the replies already in the stream are projected (a rebuild).

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

TZ = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "replies",
        sa.Column("reply_id", sa.String(64), primary_key=True),
        sa.Column("mail_key", sa.String(64), nullable=False),
        sa.Column("tenant", sa.String(63), nullable=False),
        sa.Column("mailbox", sa.String(255), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("draft_status", sa.String(16), nullable=True),
        sa.Column("held_reasons", sa.JSON, nullable=False),
        sa.Column("to", sa.JSON, nullable=False),
        sa.Column("subject", sa.Text, nullable=True),
        sa.Column("body_text", sa.Text, nullable=True),
        sa.Column("draft_text", sa.Text, nullable=True),
        sa.Column("language", sa.String(16), nullable=True),
        sa.Column("model", sa.String(128), nullable=True),
        sa.Column("backend", sa.String(32), nullable=True),
        sa.Column("sources", sa.JSON, nullable=False),
        sa.Column("drafted_at", TZ, nullable=True),
        sa.Column("decision", sa.String(16), nullable=True),
        sa.Column("reviewed_by", sa.String(128), nullable=True),
        sa.Column("reviewed_at", TZ, nullable=True),
        sa.Column("edited_text", sa.Text, nullable=True),
        sa.Column("reason", sa.Text, nullable=True),
        sa.Column("sequence", sa.BigInteger, nullable=False),
    )
    for name, columns in [
        ("ix_replies_sequence", ["sequence"]),
        ("ix_replies_mail", ["mail_key"]),
        ("ix_replies_status_sequence", ["status", "sequence"]),
        ("ix_replies_tenant_sequence", ["tenant", "sequence"]),
        ("ix_replies_tenant_status_sequence", ["tenant", "status", "sequence"]),
    ]:
        op.create_index(name, "replies", columns)
    op.create_table(
        "reply_reviews",
        sa.Column("reply_id", sa.String(64), primary_key=True),
        sa.Column("mail_key", sa.String(64), nullable=False),
        sa.Column("tenant", sa.String(63), nullable=False),
        sa.Column("decision", sa.String(16), nullable=False),
        sa.Column("reviewed_by", sa.String(128), nullable=False),
        sa.Column("created_at", TZ, nullable=False),
    )
    # the read model is rebuilt from the stream: earlier reply events get their rows
    for table in ("mails", "timeline", "deliveries", "projection_failures"):
        op.execute(f"DELETE FROM {table}")
    op.execute("UPDATE projection_state SET last_sequence = 0")


def downgrade() -> None:
    op.drop_table("reply_reviews")
    op.drop_table("replies")
