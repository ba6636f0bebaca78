"""Worker heartbeats on the SQL stores (``MembershipStore``), a mixin of the SQL store.

One row per running worker in ``workers``; a heartbeat refreshes the worker's own row (its
version and the shards it consumes with it), forgets the rows of its group that are older than
the time to live, and reads the live ones, all in one transaction.

Changes are announced on PostgreSQL with ``NOTIFY meerkat_membership, '<group>'``, inside the
transaction that makes them (so a watcher that is told reads the new rows): a worker's first
heartbeat, a heartbeat that forgot a stale row, a worker marking itself leaving, a worker
leaving. :meth:`SqlMembership.watch` holds one pooled connection with ``LISTEN`` for as long as
it runs; that connection is thrown away afterwards, never handed back to the pool listening.
SQLite cannot notify: its watchers poll at the heartbeat interval.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, select, text, update
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncConnection

from persistence.codec import to_utc
from persistence.errors import StoreUnavailable
from persistence.ports import MemberRow
from persistence.sql.connections import SqlConnections
from persistence.sql.failures import DATABASE_ERRORS, store_error
from persistence.sql.tables import workers

NOTIFY_CHANNEL = "meerkat_membership"
_NOTIFY = text(f"SELECT pg_notify('{NOTIFY_CHANNEL}', :group)")
_ROW = (workers.c.worker_id, workers.c.last_seen, workers.c.version, workers.c.shards,
        workers.c.leaving)


class SqlMembership(SqlConnections):
    """``MembershipStore`` over the store's engine."""

    async def heartbeat(
        self, worker_id: str, *, now: datetime, ttl: timedelta, group: str = ""
    ) -> list[str]:
        rows = await self.heartbeat_members(worker_id, now=now, ttl=ttl, group=group)
        return [row.worker_id for row in rows]

    async def heartbeat_members(
        self, worker_id: str, *, now: datetime, ttl: timedelta, group: str = "",
        version: str = "", shards: Sequence[str] = (), announce: bool = False,
    ) -> list[MemberRow]:
        cutoff = now - ttl
        of_group = workers.c.group_name == group
        # SKIP LOCKED: two workers forgetting the same dead ones never wait on each other
        # (nor deadlock); what one skips, the other deletes. SQLite has one writer anyway.
        stale = select(workers.c.worker_id).where(of_group, workers.c.last_seen < cutoff)
        upsert = (sqlite_insert if self._sqlite else postgresql_insert)(workers).values(
            worker_id=worker_id, group_name=group, last_seen=now, version=version,
            shards=",".join(shards),
        )
        upsert = upsert.on_conflict_do_update(
            index_elements=[workers.c.worker_id],
            set_={"group_name": upsert.excluded.group_name,
                  "last_seen": upsert.excluded.last_seen,
                  "version": upsert.excluded.version,
                  "shards": upsert.excluded.shards},
        )
        async with self._writing() as conn:
            forgotten = await conn.execute(
                delete(workers).where(
                    workers.c.worker_id.in_(stale.with_for_update(skip_locked=True))
                )
            )
            await conn.execute(upsert)
            result = await conn.execute(
                select(*_ROW).where(of_group, workers.c.last_seen >= cutoff)
                .order_by(workers.c.worker_id)
            )
            live = [_member(row) for row in result]
            if announce or forgotten.rowcount:
                await self._notify(conn, group)
            await self._commit(conn)
        return live

    async def members(self, group: str = "", *, now: datetime, ttl: timedelta
                      ) -> list[MemberRow]:
        query = (select(*_ROW)
                 .where(workers.c.group_name == group, workers.c.last_seen >= now - ttl)
                 .order_by(workers.c.worker_id))
        async with self._reading() as conn:
            return [_member(row) for row in await conn.execute(query)]

    async def set_leaving(self, worker_id: str) -> None:
        await self._change(worker_id, update(workers).values(leaving=True))

    async def leave(self, worker_id: str) -> None:
        await self._change(worker_id, delete(workers))

    async def _change(self, worker_id: str, statement: Any) -> None:
        mine = workers.c.worker_id == worker_id
        async with self._writing() as conn:
            group = (await conn.execute(select(workers.c.group_name).where(mine))).scalar()
            await conn.execute(statement.where(mine))
            if group is not None:
                await self._notify(conn, group)
            await self._commit(conn)

    async def _notify(self, conn: AsyncConnection, group: str) -> None:
        if not self._sqlite:
            await conn.execute(_NOTIFY, {"group": group})

    async def watch(self, group: str, on_change: Callable[[], None]) -> bool:
        if self._sqlite:
            return False
        lost = asyncio.Event()

        def notified(_connection: object, _pid: int, _channel: str, payload: str) -> None:
            if payload == group:
                on_change()

        try:
            async with self._engine.connect() as conn:
                try:
                    raw = await conn.get_raw_connection()
                    listener = raw.driver_connection
                    assert listener is not None
                    listener.add_termination_listener(lambda _connection: lost.set())
                    await listener.add_listener(NOTIFY_CHANNEL, notified)
                    await lost.wait()
                finally:
                    await conn.invalidate()  # never back to the pool with a LISTEN on it
        except DATABASE_ERRORS as exc:
            raise store_error(exc) from exc
        raise StoreUnavailable("the connection listening for membership changes was lost")


def _member(row: Any) -> MemberRow:
    shards = tuple(s for s in row.shards.split(",") if s) if row.shards else ()
    return MemberRow(row.worker_id, to_utc(row.last_seen), row.version or "", shards,
                     bool(row.leaving))
