"""Alembic environment of smtp-ingress: run through postroom_runtime's Store.migrate()."""

from postroom_runtime.migrations import run_migrations
from postroom_smtp_ingress.store import metadata

run_migrations(metadata)
