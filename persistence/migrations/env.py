"""Alembic environment of the runtime store.

Normally run through :mod:`persistence.migrate`, which hands over an open connection in
``config.attributes["connection"]``. From the ``alembic`` command line the URL comes from the
``sqlalchemy.url`` option and an async engine is made here.
"""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy import Connection

from persistence.sql.engine import database_url, make_engine
from persistence.sql.tables import metadata


def _run_migrations(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        # SQLite cannot ALTER most things; batch mode rebuilds the table instead.
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()


async def _run_from_url(url: str) -> None:
    engine = make_engine(database_url(url), purpose="migrate")
    try:
        async with engine.begin() as conn:
            await conn.run_sync(_run_migrations)
    finally:
        await engine.dispose()


def _main() -> None:
    connection = context.config.attributes.get("connection")
    if isinstance(connection, Connection):
        _run_migrations(connection)
        return
    url = context.config.get_main_option("sqlalchemy.url")
    if not url:
        raise RuntimeError("set sqlalchemy.url, or run the migrations with persistence.migrate")
    if context.is_offline_mode():
        context.configure(url=database_url(url), target_metadata=metadata, literal_binds=True)
        with context.begin_transaction():
            context.run_migrations()
        return
    asyncio.run(_run_from_url(url))


_main()
