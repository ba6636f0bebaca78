"""Opening a runtime store from its URL."""

from __future__ import annotations

from persistence.memory import MemoryRuntimeStore
from persistence.ports import RuntimeStore
from persistence.sql.store import open_store

MEMORY_URL = "memory://"


async def open_runtime_store(
    url: str, *, writer_id: str | None = None, writer_group: str | None = None,
    create_schema: bool = False, require_schema: bool = False, existing: bool = False,
) -> RuntimeStore:
    """The store for ``url``, recording ``writer_id`` (the worker's id) and ``writer_group``
    (its deployment, the topology prefix) on every runtime row it writes.

    ``memory://`` is a fresh in-process store (nothing survives the process);
    ``sqlite+aiosqlite:///path`` and ``postgresql+asyncpg://...`` (also ``postgresql://`` and
    ``postgres://``) are SQL stores. ``create_schema`` runs the migrations first;
    ``require_schema`` refuses a schema that is not at head (SchemaMismatch); ``existing``
    refuses to make a SQLite file (DatabaseMissing, also raised for a SQLite folder or a
    PostgreSQL database that does not exist). Raises ValueError for any other URL,
    StoreUnavailable when the database does not answer and UnsafeDatabase when its commits are
    not durable. Messages never show the password.
    """
    if url.startswith(MEMORY_URL):
        return MemoryRuntimeStore(writer_id=writer_id, writer_group=writer_group)
    return await open_store(url, writer_id=writer_id, writer_group=writer_group,
                            create_schema=create_schema, require_schema=require_schema,
                            existing=existing)
