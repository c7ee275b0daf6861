"""``mails.recipient``: the address a mail asking for a reply was sent to (an IMAP account's
own address, or the SMTP recipient), the reply's From when the tenant's policy names none.

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
    op.add_column("mails", sa.Column("recipient", sa.Text, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("mails") as batch:
        batch.drop_column("recipient")
