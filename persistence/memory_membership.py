"""Worker heartbeats in memory (``MembershipStore``), a mixin of the in-memory store.

The rows live in the shared :class:`MemberTable` of a :class:`~persistence.memory.MemoryDatabase`,
so stores opened on one database (one per worker, in tests) see each other's heartbeats, and a
change of membership calls the watchers of the group at once, as PostgreSQL's ``NOTIFY`` does.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from persistence.codec import to_utc
from persistence.ports import MemberRow


@dataclass
class MemberTable:
    rows: dict[str, tuple[str, MemberRow]] = field(default_factory=dict)
    """Worker id → (group, its row)."""
    watchers: dict[str, list[Callable[[], None]]] = field(default_factory=dict)

    def tell(self, group: str) -> None:
        for watcher in list(self.watchers.get(group, ())):
            watcher()


class MemoryMembership:
    """``MembershipStore`` over the ``members`` table of the store's database."""

    @property
    def _members(self) -> MemberTable:
        raise NotImplementedError

    async def heartbeat(
        self, worker_id: str, *, now: datetime, ttl: timedelta, group: str = ""
    ) -> list[str]:
        rows = await self.heartbeat_members(worker_id, now=now, ttl=ttl, group=group)
        return [row.worker_id for row in rows]

    async def heartbeat_members(
        self, worker_id: str, *, now: datetime, ttl: timedelta, group: str = "",
        version: str = "", shards: Sequence[str] = (), announce: bool = False,
    ) -> list[MemberRow]:
        table = self._members
        cutoff = to_utc(now) - ttl
        stale = [w for w, (g, row) in table.rows.items() if g == group and row.last_seen < cutoff]
        for worker in stale:
            del table.rows[worker]
        leaving = worker_id in table.rows and table.rows[worker_id][1].leaving
        table.rows[worker_id] = (group, MemberRow(worker_id, to_utc(now), version,
                                                  tuple(shards), leaving))
        if announce or stale:
            table.tell(group)
        return _live(table, group, cutoff)

    async def members(self, group: str = "", *, now: datetime, ttl: timedelta
                      ) -> list[MemberRow]:
        return _live(self._members, group, to_utc(now) - ttl)

    async def set_leaving(self, worker_id: str) -> None:
        table = self._members
        if worker_id in table.rows:
            group, row = table.rows[worker_id]
            table.rows[worker_id] = (group, dataclasses.replace(row, leaving=True))
            table.tell(group)

    async def leave(self, worker_id: str) -> None:
        found = self._members.rows.pop(worker_id, None)
        if found is not None:
            self._members.tell(found[0])

    async def watch(self, group: str, on_change: Callable[[], None]) -> bool:
        watchers = self._members.watchers.setdefault(group, [])
        watchers.append(on_change)
        try:
            await asyncio.Event().wait()  # until cancelled
        finally:
            watchers.remove(on_change)
        return True


def _live(table: MemberTable, group: str, cutoff: datetime) -> list[MemberRow]:
    return sorted((row for g, row in table.rows.values() if g == group and row.last_seen >= cutoff),
                  key=lambda row: row.worker_id)
