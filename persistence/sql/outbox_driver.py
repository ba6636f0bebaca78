"""The outbox relay's read and mark on PostgreSQL, sent straight to asyncpg.

The relay reads up to a thousand unsent events per pass and marks them sent once the broker
confirmed them. Through SQLAlchemy the read built a result row object per event, and the mark
rendered one bound parameter per position (an expanding ``IN``): a new statement text for each
batch size, compiled by SQLAlchemy and parsed and planned by PostgreSQL each time. Here both
are fixed texts that asyncpg prepares once per connection: the read returns plain records, the
mark takes every position as one array. SQLite keeps the SQLAlchemy way
(:class:`persistence.sql.store.SqlRuntimeStore` decides, by the store's database).

Neither needs a transaction of its own: the read is one snapshot, the mark one statement, and
each runs as it comes (asyncpg's autocommit) on a connection of the store's pool. Driver errors
are the store's to turn into typed errors, as for its other statements.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncConnection

from persistence.outbox_port import OutboxEvent
from persistence.sql.driver_writes import driver_of

# A relay reads its own deployment's rows and those written by none (before groups were
# recorded); ``writer_group = NULL`` matches nothing, so a relay of no group reads only those.
_FETCH_UNSENT = (
    "SELECT position, event_id, runtime_id, code, body->>'at', body::text, traceparent "
    "FROM event_outbox WHERE sent_at IS NULL AND (writer_group IS NULL OR writer_group = $1) "
    "ORDER BY position LIMIT $2"
)
_MARK_SENT = (
    "UPDATE event_outbox SET sent_at = $2 WHERE position = ANY($1::bigint[]) AND sent_at IS NULL"
)


async def fetch_unsent(conn: AsyncConnection, group: str | None, limit: int) -> list[OutboxEvent]:
    """The first ``limit`` unsent events of ``group`` (and of no group), in outbox order."""
    records = await (await driver_of(conn)).fetch(_FETCH_UNSENT, group, limit)
    return [
        OutboxEvent(r[0], r[1], r[2], r[3], datetime.fromisoformat(r[4]), r[5].encode(), r[6])
        for r in records
    ]


async def mark_sent(conn: AsyncConnection, positions: Sequence[int], now: datetime) -> None:
    """Mark the events at ``positions`` sent at ``now`` (those not marked already)."""
    await (await driver_of(conn)).execute(_MARK_SENT, list(positions), now)
