"""A tiny schema used by the runtime's store tests (like a service's store.py)."""

from sqlalchemy import Column, Integer, MetaData, String, Table, UniqueConstraint

from postroom_runtime.store import add_runtime_tables

metadata = MetaData()
widgets = Table(
    "widgets",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("tenant", String(64), nullable=False),
    Column("name", String(200), nullable=False),
    UniqueConstraint("tenant", "name"),
)
processed, outbox = add_runtime_tables(metadata)
