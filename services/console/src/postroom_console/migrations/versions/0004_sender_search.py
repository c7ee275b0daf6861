"""Sender filter served by an index, as the subject search is (0002): ``mails.sender_search``
(the From header's address and the envelope sender, each case-folded by the projector, joined
by a line break, which no address holds); on PostgreSQL a ``pg_trgm`` GIN index on it, on
SQLite an FTS5 trigram table kept by triggers.

Without the rights to create ``pg_trgm`` the migration logs it and goes on: the filter then
scans, as before, and gives the same results.

Revision ID: 0004
Revises: 0003
"""

import logging

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

log = logging.getLogger("postroom_console.migrations")

BATCH = 5000
SEPARATOR = "\n"

# SQLite: the FTS5 table shares the rowid of ``mails``, as mails_subject_fts (0002) does. The
# column is added with a plain ALTER TABLE (no table copy), so 0002's triggers stay; a later
# migration that alters ``mails`` in batch mode (a table copy drops every trigger on it) must
# create both sets again (0002's ``SQLITE_TRIGGERS`` and ``SQLITE_TRIGGERS`` here).
SQLITE_FTS = ("CREATE VIRTUAL TABLE IF NOT EXISTS mails_sender_fts "
              "USING fts5(sender_search, tokenize='trigram case_sensitive 1')")
SQLITE_TRIGGERS = (
    "CREATE TRIGGER IF NOT EXISTS mails_sender_fts_insert AFTER INSERT ON mails "
    "WHEN new.sender_search IS NOT NULL BEGIN "
    "INSERT INTO mails_sender_fts(rowid, sender_search) "
    "VALUES (new.rowid, new.sender_search); END",
    "CREATE TRIGGER IF NOT EXISTS mails_sender_fts_update AFTER UPDATE OF sender_search "
    "ON mails WHEN old.sender_search IS NOT new.sender_search BEGIN "
    "DELETE FROM mails_sender_fts WHERE rowid = old.rowid; "
    "INSERT INTO mails_sender_fts(rowid, sender_search) "
    "SELECT new.rowid, new.sender_search WHERE new.sender_search IS NOT NULL; END",
    "CREATE TRIGGER IF NOT EXISTS mails_sender_fts_delete AFTER DELETE ON mails BEGIN "
    "DELETE FROM mails_sender_fts WHERE rowid = old.rowid; END",
)


def sender_fold(header_from: str | None, envelope_from: str | None) -> str | None:
    """As the projector's ``handlers.sender_fold`` (Python's casefold), frozen here."""
    parts = [a.casefold() for a in (header_from, envelope_from) if a is not None]
    return SEPARATOR.join(parts) if parts else None


def backfill(bind: sa.Connection) -> None:
    """Rows projected before this revision, ``BATCH`` at a time in key order."""
    mails = sa.table("mails", sa.column("mail_key"), sa.column("header_from"),
                     sa.column("envelope_from"), sa.column("sender_search"))
    update = (sa.update(mails).where(mails.c.mail_key == sa.bindparam("_key"))
              .values(sender_search=sa.bindparam("_folded")))
    after = ""
    while True:
        rows = bind.execute(
            sa.select(mails.c.mail_key, mails.c.header_from, mails.c.envelope_from)
            .where(mails.c.mail_key > after,
                   sa.or_(mails.c.header_from.is_not(None), mails.c.envelope_from.is_not(None)))
            .order_by(mails.c.mail_key).limit(BATCH)).all()
        if not rows:
            return
        bind.execute(update, [{"_key": k, "_folded": sender_fold(h, e)} for k, h, e in rows])
        after = rows[-1][0]


def upgrade() -> None:
    op.add_column("mails", sa.Column("sender_search", sa.Text, nullable=True))
    bind = op.get_bind()
    backfill(bind)
    if bind.dialect.name == "sqlite":
        op.execute(SQLITE_FTS)
        op.execute("INSERT INTO mails_sender_fts(rowid, sender_search) "
                   "SELECT rowid, sender_search FROM mails WHERE sender_search IS NOT NULL")
        for trigger in SQLITE_TRIGGERS:
            op.execute(trigger)
        return
    try:
        with bind.begin_nested():
            bind.execute(sa.text("CREATE EXTENSION IF NOT EXISTS pg_trgm"))
    except sa.exc.DBAPIError as exc:
        log.warning("pg_trgm not available (%s): sender filter without an index",
                    str(exc.orig).splitlines()[0] if exc.orig else exc)
        return
    op.execute("CREATE INDEX IF NOT EXISTS ix_mails_sender_trgm ON mails "
               "USING gin (sender_search gin_trgm_ops)")


def downgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name == "sqlite":
        for name in ("insert", "update", "delete"):
            op.execute(f"DROP TRIGGER IF EXISTS mails_sender_fts_{name}")
        op.execute("DROP TABLE IF EXISTS mails_sender_fts")
    else:
        op.execute("DROP INDEX IF EXISTS ix_mails_sender_trgm")
    op.drop_column("mails", "sender_search")
