"""The history checker's read-only queries on the SQL stores (``HistoryReader``).

A mixin of :class:`persistence.sql.store.SqlRuntimeStore` rather than more methods on it: the
worker never calls these, and they read a runtime's whole history (every receipt, every outbox
event with its sent mark), so they live apart from the hot queries. They only ``SELECT``; each
query opens its own connection, and a failure is the same typed ``StoreError`` as the store's.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any
from uuid import UUID

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from persistence import codec
from persistence.ports import OutboxEntry
from persistence.sql.failures import DATABASE_ERRORS, store_error
from persistence.sql.tables import boundary_receipts, event_outbox, processed_commands, runtimes
from schemas import CommandCompleted, RuntimePhase
from worker.core.model import BoundaryReceipt, RuntimeRow


class SqlHistoryQueries:
    """``HistoryReader`` over the store's engine (``list_inputs`` is the store's own)."""

    _engine: AsyncEngine

    @contextlib.asynccontextmanager
    async def _history_reading(self) -> AsyncIterator[AsyncConnection]:
        try:
            async with self._engine.connect() as conn:
                yield conn
        except DATABASE_ERRORS as exc:
            raise store_error(exc) from exc

    async def read_runtime_row(self, runtime_id: str) -> RuntimeRow | None:
        async with self._history_reading() as conn:
            found = (
                await conn.execute(select(runtimes).where(runtimes.c.runtime_id == runtime_id))
            ).first()
        if found is None:
            return None
        pre_run = found.pre_run_phase
        return RuntimeRow(
            runtime_id=found.runtime_id,
            phase=RuntimePhase(found.phase),
            pre_run_phase=None if pre_run is None else RuntimePhase(pre_run),
            current_run_id=found.current_run_id,
            next_admission_seq=found.next_admission_seq,
            version=found.version,
            updated_at=found.updated_at,
        )

    async def read_receipts(self, runtime_id: str) -> list[BoundaryReceipt]:
        table = boundary_receipts
        async with self._history_reading() as conn:
            result = await conn.execute(
                select(table)
                .where(table.c.runtime_id == runtime_id)
                .order_by(table.c.committed_at, table.c.sequence, table.c.run_id)
            )
            rows = list(result)
        return [receipt_of(row) for row in rows]

    async def read_commands(self, runtime_id: str) -> list[CommandCompleted]:
        table = processed_commands
        async with self._history_reading() as conn:
            result = await conn.execute(
                select(table.c.outcome)
                .where(table.c.runtime_id == runtime_id)
                .order_by(table.c.processed_at, table.c.command_id)
            )
            return [codec.decode_command(outcome) for outcome in result.scalars()]

    async def read_outbox(self, runtime_id: str) -> list[OutboxEntry]:
        table = event_outbox
        async with self._history_reading() as conn:
            result = await conn.execute(
                select(table.c.position, table.c.body, table.c.sent_at)
                .where(table.c.runtime_id == runtime_id)
                .order_by(table.c.position)
            )
            return [
                OutboxEntry(row.position, codec.decode_event(row.body), row.sent_at is not None)
                for row in result
            ]


def receipt_of(row: Any) -> BoundaryReceipt:
    """A boundary receipt from a row of its table."""
    return BoundaryReceipt(
        runtime_id=row.runtime_id,
        run_id=row.run_id,
        sequence=row.sequence,
        contributing_input_ids=tuple(UUID(i) for i in row.contributing_input_ids),
        conversation_digest=row.conversation_digest,
        message_count=row.message_count,
        committed_at=row.committed_at,
    )
