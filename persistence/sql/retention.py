"""Pruning on the SQL stores (``RetentionStore``), a mixin of the SQL store.

Each table is pruned in transactions of at most ``batch`` rows, so a prune never holds many
row locks nor a long transaction, however much has piled up: the rows of one batch are chosen
by a ``SELECT ... ORDER BY <age> LIMIT batch FOR UPDATE SKIP LOCKED`` (the partial or plain
index on the age column of revision 0005 finds them without reading live rows) and deleted by
primary key in the same statement. ``SKIP LOCKED`` lets the prunes of several workers run at
once without waiting on one another (nor deadlocking); what one skips, another deletes.
SQLite has one writer at a time anyway and ignores the clause.

Receipts need a look at their inputs first (a receipt stays while any of its contributing
inputs is live), which is done in Python on each batch: contributing ids are a JSON list, and
reading them portably in SQL differs between the databases. The receipts are walked in key
order from the oldest, so a batch whose receipts all stay does not stop the walk. An input
never goes back from a terminal phase to a live one, so a receipt found deletable stays so.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any
from uuid import UUID

from sqlalchemy import Table, delete, literal, select, tuple_
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql.elements import ColumnElement

from persistence.ports import PRUNE_BATCH, PruneReport, check_prune_arguments
from persistence.sql.connections import SqlConnections
from persistence.sql.tables import (
    TERMINAL_PHASES,
    boundary_receipts,
    event_outbox,
    inputs,
    processed_commands,
)

_CHUNK = 500
"""Runtime ids per ``IN`` list when looking up live inputs."""

_RECEIPT_KEY = (
    boundary_receipts.c.committed_at,
    boundary_receipts.c.runtime_id,
    boundary_receipts.c.run_id,
    boundary_receipts.c.sequence,
)


class SqlRetention(SqlConnections):
    """``RetentionStore`` over the store's engine."""

    async def prune(
        self, now: datetime, *, sent_events_before: datetime, terminal_before: datetime,
        batch: int = PRUNE_BATCH,
    ) -> PruneReport:
        check_prune_arguments(now, sent_events_before, terminal_before, batch)
        events = await self._delete_in_batches(
            event_outbox, event_outbox.c.sent_at < sent_events_before,
            event_outbox.c.sent_at, batch,
        )
        # Inputs before receipts: a receipt whose last live input became terminal and old
        # goes in the same prune.
        pruned_inputs = await self._delete_in_batches(
            inputs,
            inputs.c.phase.in_(TERMINAL_PHASES) & (inputs.c.updated_at < terminal_before),
            inputs.c.updated_at, batch,
        )
        receipts = await self._prune_receipts(terminal_before, batch)
        commands = await self._delete_in_batches(
            processed_commands, processed_commands.c.processed_at < terminal_before,
            processed_commands.c.processed_at, batch,
        )
        return PruneReport(events, pruned_inputs, receipts, commands)

    async def _delete_in_batches(
        self, table: Table, condition: ColumnElement[bool], age: ColumnElement[Any], batch: int
    ) -> int:
        key = tuple_(*table.primary_key.columns)
        chosen = (
            select(*table.primary_key.columns)
            .where(condition)
            .order_by(age)
            .limit(batch)
            .with_for_update(skip_locked=True)
        )
        deleted = 0
        while True:
            async with self._writing() as conn:
                result = await conn.execute(delete(table).where(key.in_(chosen)))
                await self._commit(conn)
            deleted += result.rowcount
            if result.rowcount < batch:
                return deleted

    async def _prune_receipts(self, before: datetime, batch: int) -> int:
        deleted = 0
        after: tuple[Any, ...] | None = None
        while True:
            query = select(*_RECEIPT_KEY, boundary_receipts.c.contributing_input_ids).where(
                boundary_receipts.c.committed_at < before
            )
            if after is not None:
                query = query.where(tuple_(*_RECEIPT_KEY) > tuple_(
                    *(literal(value, column.type) for value, column
                      in zip(after, _RECEIPT_KEY, strict=True))
                ))
            query = query.order_by(*_RECEIPT_KEY).limit(batch).with_for_update(skip_locked=True)
            async with self._writing() as conn:
                rows = list(await conn.execute(query))
                live = await _live_inputs(conn, {row.runtime_id for row in rows})
                doomed = [
                    (row.runtime_id, row.run_id, row.sequence) for row in rows
                    if not any((row.runtime_id, UUID(i)) in live
                               for i in row.contributing_input_ids)
                ]
                if doomed:
                    result = await conn.execute(delete(boundary_receipts).where(
                        tuple_(*boundary_receipts.primary_key.columns).in_(doomed)
                    ))
                    deleted += result.rowcount
                await self._commit(conn)
            if len(rows) < batch:
                return deleted
            after = tuple(rows[-1])[:len(_RECEIPT_KEY)]


async def _live_inputs(conn: AsyncConnection, runtime_ids: set[str]) -> set[tuple[str, UUID]]:
    """(runtime id, input id) of every live input of these runtimes."""
    ordered: Sequence[str] = sorted(runtime_ids)
    live: set[tuple[str, UUID]] = set()
    for start in range(0, len(ordered), _CHUNK):
        result = await conn.execute(
            select(inputs.c.runtime_id, inputs.c.input_id).where(
                inputs.c.runtime_id.in_(ordered[start:start + _CHUNK]),
                inputs.c.phase.not_in(TERMINAL_PHASES),
            )
        )
        live.update((row.runtime_id, row.input_id) for row in result)
    return live
