"""Alembic environment: run through postroom_runtime.store.Store.migrate() at start-up."""

from postroom_mailbox_sync.store import metadata
from postroom_runtime.migrations import run_migrations

run_migrations(metadata)
