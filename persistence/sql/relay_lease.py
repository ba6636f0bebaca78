"""Which worker's relay publishes a deployment's events: one at a time per group.

Every worker runs an outbox relay, and every relay could publish every unsent event. With
several replicas of one deployment they would publish the same events side by side (still at
least once, but each event as many times as there are replicas, and out of order), so a relay
publishes only while it holds its group's lease, and stands by otherwise.

On PostgreSQL the lease is a session-level advisory lock (``pg_try_advisory_lock``) on a key
derived from the group, taken on a connection of its own that the lease keeps open: the lock
lives exactly as long as that session. A worker that dies, or whose connection breaks, loses it
at once, and the next standby's pass takes it. Each pass checks the held connection with a
round trip, so a relay that lost its session stops within a pass. On SQLite one process owns
the database, so the lease is always held.
"""

from __future__ import annotations

import hashlib

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from persistence.sql.failures import DATABASE_ERRORS

_TAKE = text("SELECT pg_try_advisory_lock(:key)")
_CHECK = text("SELECT 1")


def lease_key(group: str | None) -> int:
    """The advisory lock's key of ``group``: 64 stable bits of a hash, as PostgreSQL's bigint."""
    digest = hashlib.sha256(f"meerkat-relay:{group or ''}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


class RelayLease:
    """The lease of one store's group (see the module)."""

    def __init__(self, engine: AsyncEngine, group: str | None) -> None:
        self._engine = engine
        self._key = lease_key(group)
        self._sqlite = engine.dialect.name == "sqlite"
        self._held: AsyncConnection | None = None

    async def hold(self) -> bool:
        """Whether this store holds the lease now: kept if held and its session still answers,
        else taken if free. Never raises: a database away means not holding it."""
        if self._sqlite:
            return True
        if self._held is not None:
            try:
                await self._held.execute(_CHECK)
                await self._held.commit()  # never idle in a transaction (the server ends those)
                return True
            except DATABASE_ERRORS:
                await self.release()
        connection = None
        try:
            connection = await self._engine.connect()
            taken = (await connection.execute(_TAKE, {"key": self._key})).scalar_one()
            await connection.commit()  # the lock is the session's, not the transaction's
        except DATABASE_ERRORS:
            if connection is not None:
                await _discard(connection)
            return False
        if not taken:
            await connection.close()
            return False
        self._held = connection
        return True

    async def release(self) -> None:
        """Give the lease up (closing its session releases the lock)."""
        held, self._held = self._held, None
        if held is not None:
            await _discard(held)


async def _discard(connection: AsyncConnection) -> None:
    # The session goes with its connection: it is invalidated rather than pooled, so the lock
    # cannot outlive the lease in a pooled connection.
    try:
        await connection.invalidate()
        await connection.close()
    except DATABASE_ERRORS:
        pass
