"""Worker heartbeats on the SQL stores (``MembershipStore``), a mixin of the SQL store.

One row per running worker in ``workers``; a heartbeat refreshes the worker's own row, forgets
the rows of its group that are older than the time to live, and reads the live ones, all in one
transaction.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import delete, select
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from persistence.sql.connections import SqlConnections
from persistence.sql.tables import workers


class SqlMembership(SqlConnections):
    """``MembershipStore`` over the store's engine."""

    async def heartbeat(
        self, worker_id: str, *, now: datetime, ttl: timedelta, group: str = ""
    ) -> list[str]:
        cutoff = now - ttl
        of_group = workers.c.group_name == group
        # SKIP LOCKED: two workers forgetting the same dead ones never wait on each other
        # (nor deadlock); what one skips, the other deletes. SQLite has one writer anyway.
        stale = select(workers.c.worker_id).where(of_group, workers.c.last_seen < cutoff)
        upsert = (sqlite_insert if self._sqlite else postgresql_insert)(workers).values(
            worker_id=worker_id, group_name=group, last_seen=now
        )
        upsert = upsert.on_conflict_do_update(
            index_elements=[workers.c.worker_id],
            set_={"group_name": upsert.excluded.group_name,
                  "last_seen": upsert.excluded.last_seen},
        )
        async with self._writing() as conn:
            await conn.execute(
                delete(workers).where(
                    workers.c.worker_id.in_(stale.with_for_update(skip_locked=True))
                )
            )
            await conn.execute(upsert)
            result = await conn.execute(
                select(workers.c.worker_id).where(of_group, workers.c.last_seen >= cutoff)
            )
            live = sorted(result.scalars())
            await self._commit(conn)
        return live

    async def leave(self, worker_id: str) -> None:
        async with self._writing() as conn:
            await conn.execute(delete(workers).where(workers.c.worker_id == worker_id))
            await self._commit(conn)
