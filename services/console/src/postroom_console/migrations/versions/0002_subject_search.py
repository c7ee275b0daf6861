"""Subject search served by an index: ``mails.subject_search`` (the subject case-folded by the
projector, so both stores compare the same text whatever their locale); on PostgreSQL a
``pg_trgm`` GIN index on it, on SQLite an FTS5 trigram table kept by triggers.

Without the rights to create ``pg_trgm`` the migration logs it and goes on: the search then
scans, as before, and gives the same results.

Revision ID: 0002
Revises: 0001
"""

import logging

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

log = logging.getLogger("postroom_console.migrations")

# SQLite: the FTS5 table shares the rowid of ``mails``. The triggers keep it; an ALTER of
# ``mails`` in batch mode (a table copy) drops them, so a later migration that does one must
# create them again (``SQLITE_TRIGGERS``).
SQLITE_FTS = ("CREATE VIRTUAL TABLE IF NOT EXISTS mails_subject_fts "
              "USING fts5(subject_search, tokenize='trigram case_sensitive 1')")
SQLITE_TRIGGERS = (
    "CREATE TRIGGER IF NOT EXISTS mails_subject_fts_insert AFTER INSERT ON mails "
    "WHEN new.subject_search IS NOT NULL BEGIN "
    "INSERT INTO mails_subject_fts(rowid, subject_search) "
    "VALUES (new.rowid, new.subject_search); END",
    "CREATE TRIGGER IF NOT EXISTS mails_subject_fts_update AFTER UPDATE OF subject_search "
    "ON mails WHEN old.subject_search IS NOT new.subject_search BEGIN "
    "DELETE FROM mails_subject_fts WHERE rowid = old.rowid; "
    "INSERT INTO mails_subject_fts(rowid, subject_search) "
    "SELECT new.rowid, new.subject_search WHERE new.subject_search IS NOT NULL; END",
    "CREATE TRIGGER IF NOT EXISTS mails_subject_fts_delete AFTER DELETE ON mails BEGIN "
    "DELETE FROM mails_subject_fts WHERE rowid = old.rowid; END",
)


def fold(subject: str | None) -> str | None:
    return None if subject is None else subject.casefold()


def upgrade() -> None:
    op.add_column("mails", sa.Column("subject_search", sa.Text, nullable=True))
    bind = op.get_bind()
    # rows projected before this revision: folded here (Python's casefold, as the projector)
    mails = sa.table("mails", sa.column("mail_key"), sa.column("subject"),
                     sa.column("subject_search"))
    rows = bind.execute(sa.select(mails.c.mail_key, mails.c.subject)
                        .where(mails.c.subject.is_not(None))).all()
    update = (sa.update(mails).where(mails.c.mail_key == sa.bindparam("_key"))
              .values(subject_search=sa.bindparam("_folded")))
    for start in range(0, len(rows), 5000):
        bind.execute(update, [{"_key": k, "_folded": fold(s)}
                              for k, s in rows[start:start + 5000]])
    if bind.dialect.name == "sqlite":
        op.execute(SQLITE_FTS)
        op.execute("INSERT INTO mails_subject_fts(rowid, subject_search) "
                   "SELECT rowid, subject_search FROM mails WHERE subject_search IS NOT NULL")
        for trigger in SQLITE_TRIGGERS:
            op.execute(trigger)
        return
    try:
        with bind.begin_nested():
            bind.execute(sa.text("CREATE EXTENSION IF NOT EXISTS pg_trgm"))
    except sa.exc.DBAPIError as exc:
        log.warning("pg_trgm not available (%s): subject search without an index",
                    str(exc.orig).splitlines()[0] if exc.orig else exc)
        return
    op.execute("CREATE INDEX IF NOT EXISTS ix_mails_subject_trgm ON mails "
               "USING gin (subject_search gin_trgm_ops)")


def downgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name == "sqlite":
        for name in ("insert", "update", "delete"):
            op.execute(f"DROP TRIGGER IF EXISTS mails_subject_fts_{name}")
        op.execute("DROP TABLE IF EXISTS mails_subject_fts")
    else:
        op.execute("DROP INDEX IF EXISTS ix_mails_subject_trgm")
    op.drop_column("mails", "subject_search")
