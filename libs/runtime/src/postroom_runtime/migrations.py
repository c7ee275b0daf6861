"""Shared body of every service's Alembic ``env.py``.

A service's ``migrations/env.py`` is two lines::

    from postroom_runtime.migrations import run_migrations
    from postroom_<service>.store import metadata
    run_migrations(metadata)
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import MetaData


def run_migrations(metadata: MetaData) -> None:
    connection = context.config.attributes.get("connection")
    if connection is None:
        raise RuntimeError("run migrations through postroom_runtime.store.Store.migrate()")
    context.configure(
        connection=connection,
        target_metadata=metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()
