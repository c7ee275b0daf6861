"""processed_messages and outbox: the runtime's tables for this service's consumers

smtp-ingress consumes its own mail.received to verify SPF, DKIM, DMARC, ARC and iprev after
the 250 (``mail_authentication.py``); its idempotency rows and the mail.authenticated events
it emits live in these tables, as in every consumer's store.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02
"""

from collections.abc import Sequence

from alembic import op

from postroom_runtime.store import create_runtime_tables

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    create_runtime_tables(op)


def downgrade() -> None:
    op.drop_index("ix_outbox_published_at", table_name="outbox")
    op.drop_table("outbox")
    op.drop_table("processed_messages")
