"""Connections of the SQL store: read connections, write transactions, and their failures.

The base of :class:`persistence.sql.store.SqlRuntimeStore` and of its mixins
(:mod:`persistence.sql.history`, :mod:`persistence.sql.membership`), so that every query opens
its connection the same way and every database failure becomes the same typed ``StoreError``
(a pooled connection the failure left unusable is thrown away, not put back in the pool).
SQLite writers are serialised in-process: SQLite has one writer at a time anyway, and queueing
on a lock is cheaper than on the busy timeout. A consistent read runs in REPEATABLE READ on
PostgreSQL (SQLite's read transaction is already one snapshot).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from sqlalchemy import URL
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from persistence.sql.engine import WRITE_OPTION, is_sqlite, safe_url
from persistence.sql.failures import DATABASE_ERRORS, leaves_connection_unusable, store_error


class SqlConnections:
    """The engine of one database and the way each query reaches it."""

    def __init__(self, engine: AsyncEngine, url: URL) -> None:
        self._engine = engine
        self._url = url
        self._sqlite = is_sqlite(url)
        self._write_lock = asyncio.Lock() if self._sqlite else None

    @property
    def url(self) -> str:
        """The database URL with its password masked."""
        return safe_url(self._url)

    @property
    def engine(self) -> AsyncEngine:
        return self._engine

    @contextlib.asynccontextmanager
    async def _reading(self, *, consistent: bool = False) -> AsyncIterator[AsyncConnection]:
        try:
            async with self._engine.connect() as conn:
                try:
                    if consistent and not self._sqlite:
                        await conn.execution_options(isolation_level="REPEATABLE READ")
                    yield conn
                except DATABASE_ERRORS as exc:
                    await _discard_if_unusable(conn, exc)
                    raise
        except DATABASE_ERRORS as exc:
            raise store_error(exc) from exc

    @contextlib.asynccontextmanager
    async def _writing(self) -> AsyncIterator[AsyncConnection]:
        """A write transaction; the body commits it with :meth:`_commit`."""
        async with contextlib.AsyncExitStack() as stack:
            if self._write_lock is not None:
                await stack.enter_async_context(self._write_lock)
            try:
                async with self._engine.connect() as conn:
                    try:
                        await conn.execution_options(**{WRITE_OPTION: True})
                        await conn.begin()
                        yield conn
                    except DATABASE_ERRORS as exc:
                        await _discard_if_unusable(conn, exc)
                        raise
            except DATABASE_ERRORS as exc:
                raise store_error(exc) from exc

    @staticmethod
    async def _commit(conn: AsyncConnection) -> None:
        try:
            await conn.commit()
        except DATABASE_ERRORS as exc:
            await _discard_if_unusable(conn, exc)
            raise store_error(exc, during_commit=True) from exc


async def _discard_if_unusable(conn: AsyncConnection, exc: BaseException) -> None:
    """Throw away a pooled connection a failure left unusable (see
    :func:`~persistence.sql.failures.leaves_connection_unusable`)."""
    if leaves_connection_unusable(exc) and not conn.invalidated:
        with contextlib.suppress(Exception):
            await conn.invalidate()
