"""The SQL runtime store (PostgreSQL and SQLite) and its schema."""

from persistence.sql.store import SqlRuntimeStore, open_store
from persistence.sql.tables import metadata

__all__ = ["SqlRuntimeStore", "metadata", "open_store"]
