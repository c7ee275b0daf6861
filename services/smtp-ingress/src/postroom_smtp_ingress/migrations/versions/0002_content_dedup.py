"""received_mails: dedup on tenant + Message-ID + content; a reused Message-ID is another mail

Adds ``content_sha256`` (the message as the client sent it), drops the unique constraint on
(tenant, message_id) and indexes message_id for the lookup. Rows written before this revision
stored exactly what the client sent, so their ``raw_sha256`` is their content hash.

Downgrading fails while a tenant has two mails with one Message-ID (the old constraint cannot
hold them); remove the later copies first if you must go back.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("received_mails") as batch:
        batch.add_column(sa.Column("content_sha256", sa.String(64), nullable=True))
    op.execute("UPDATE received_mails SET content_sha256 = raw_sha256")
    with op.batch_alter_table("received_mails") as batch:
        batch.alter_column("content_sha256", existing_type=sa.String(64), nullable=False)
        batch.drop_constraint("uq_received_mails_tenant_message_id", type_="unique")
        batch.create_index("ix_received_mails_message_id", ["message_id"])


def downgrade() -> None:
    with op.batch_alter_table("received_mails") as batch:
        batch.drop_index("ix_received_mails_message_id")
        batch.create_unique_constraint(
            "uq_received_mails_tenant_message_id", ["tenant", "message_id"]
        )
        batch.drop_column("content_sha256")
