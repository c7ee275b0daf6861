"""corrections (latest per mail), models (versions with their bytes); classifications.routed
and .attachments (the model input the raw mail does not give).

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("classifications", sa.Column("routed", sa.Boolean, nullable=True))
    op.add_column("classifications", sa.Column("attachments", sa.JSON, nullable=True))
    op.create_table(
        "corrections",
        sa.Column("tenant", sa.String(63), primary_key=True),
        sa.Column("mail_key", sa.String(64), primary_key=True),
        sa.Column("correction_id", sa.String(64), nullable=False),
        sa.Column("email_id", sa.Text, nullable=False),
        sa.Column("label", sa.String(16), nullable=False),
        sa.Column("previous_label", sa.String(16), nullable=True),
        sa.Column("previous_model_version", sa.String(64), nullable=True),
        sa.Column("corrected_by", sa.String(200), nullable=False),
        sa.Column("features", sa.JSON, nullable=True),
        sa.Column("corrected_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "models",
        sa.Column("version", sa.String(64), primary_key=True),
        sa.Column("seq", sa.Integer, nullable=False, unique=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("corrections", sa.Integer, nullable=False),
        sa.Column("training_mails", sa.Integer, nullable=False),
        sa.Column("training_sha256", sa.String(64), nullable=False),
        sa.Column("training_seconds", sa.Integer, nullable=False),
        sa.Column("metrics", sa.JSON, nullable=True),
        sa.Column("trained_by", sa.String(200), nullable=False),
        sa.Column("model", sa.LargeBinary, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("models")
    op.drop_table("corrections")
    with op.batch_alter_table("classifications") as batch:
        batch.drop_column("attachments")
        batch.drop_column("routed")
