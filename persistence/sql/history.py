"""The history checker's read-only queries on the SQL stores (``HistoryReader``).

A mixin of :class:`persistence.sql.store.SqlRuntimeStore` rather than more methods on it: the
worker never calls these, and they read a runtime's whole history (every receipt, every outbox
event with its sent mark), so they live apart from the hot queries. They only ``SELECT``; each
query opens its own connection, and a failure is the same typed ``StoreError`` as the store's.
"""

from __future__ import annotations

from sqlalchemy import select

from persistence.ports import OutboxEntry
from persistence.sql.connections import SqlConnections
from persistence.sql.rows import (
    command_from_outcome,
    event_from_body,
    receipt_from_row,
    runtime_from_row,
)
from persistence.sql.tables import boundary_receipts, event_outbox, processed_commands, runtimes
from schemas import CommandCompleted
from worker.core.model import BoundaryReceipt, RuntimeRow


class SqlHistoryQueries(SqlConnections):
    """``HistoryReader`` over the store's engine (``list_inputs`` is the store's own)."""

    async def read_runtime_row(self, runtime_id: str) -> RuntimeRow | None:
        async with self._reading() as conn:
            found = (
                await conn.execute(select(runtimes).where(runtimes.c.runtime_id == runtime_id))
            ).first()
        return None if found is None else runtime_from_row(found._mapping)

    async def read_receipts(self, runtime_id: str) -> list[BoundaryReceipt]:
        table = boundary_receipts
        async with self._reading() as conn:
            result = await conn.execute(
                select(table)
                .where(table.c.runtime_id == runtime_id)
                .order_by(table.c.committed_at, table.c.sequence, table.c.run_id)
            )
            rows = list(result)
        return [receipt_from_row(row._mapping) for row in rows]

    async def read_commands(self, runtime_id: str) -> list[CommandCompleted]:
        table = processed_commands
        async with self._reading() as conn:
            result = await conn.execute(
                select(table.c.outcome)
                .where(table.c.runtime_id == runtime_id)
                .order_by(table.c.processed_at, table.c.command_id)
            )
            return [command_from_outcome(outcome) for outcome in result.scalars()]

    async def read_outbox(self, runtime_id: str) -> list[OutboxEntry]:
        table = event_outbox
        async with self._reading() as conn:
            result = await conn.execute(
                select(table.c.position, table.c.body, table.c.sent_at)
                .where(table.c.runtime_id == runtime_id)
                .order_by(table.c.position)
            )
            return [
                OutboxEntry(row.position, event_from_body(row.body), row.sent_at is not None)
                for row in result
            ]
