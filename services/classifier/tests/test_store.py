"""The classifier's migrations build exactly the tables its code (and postroom_classify's
registry) uses, on SQLite and PostgreSQL, and run twice without harm."""

from __future__ import annotations

from sqlalchemy import Connection

from postroom_classifier.app import MIGRATIONS
from postroom_classifier.store import metadata
from postroom_runtime.store import Store


async def test_the_migrations_build_the_tables_the_code_uses(database_url: str) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    store = Store(database_url)
    try:
        await store.migrate(MIGRATIONS)
        await store.migrate(MIGRATIONS)  # idempotent

        def differences(connection: Connection) -> list[object]:
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            return list(compare_metadata(context, metadata))

        async with store.engine.connect() as conn:
            assert await conn.run_sync(differences) == []
    finally:
        await store.close()

