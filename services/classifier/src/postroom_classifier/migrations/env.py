"""Alembic environment: run through postroom_runtime.store.Store.migrate() at start-up."""

from postroom_runtime.migrations import run_migrations
from postroom_classifier.store import metadata

run_migrations(metadata)
