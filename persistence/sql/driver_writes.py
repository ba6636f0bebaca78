"""A commit's statements on PostgreSQL, sent straight to asyncpg inside SQLAlchemy's transaction.

Through SQLAlchemy each statement of a commit costs, per row, a dictionary of parameters that
the statement's compiled form walks and each column type's bind processor converts; with a few
hundred rows per commit that was a large part of the worker's time. Here the same statements
(:mod:`persistence.sql.batched`: each column one array, the text fixed per table) go to the
asyncpg connection under the SQLAlchemy connection, in the transaction SQLAlchemy opened, so
SQLAlchemy's commit or rollback ends them with the rest. The values are the row mapping's
(:mod:`persistence.sql.rows`), already in what asyncpg takes: JSON as text, aware UTC times,
UUIDs.

Which commits take this way is decided in one place, :func:`persistence.sql.writes.apply_plan`.
The checks are those of the SQLAlchemy way: a runtime row is compared on its version, an updated
input must be stored, an inserted one must be new; a violated constraint becomes the same typed
error (:func:`persistence.sql.failures.integrity_failure`). Other driver errors are left to the
store's write transaction, which turns them into typed errors as it does SQLAlchemy's.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import asyncpg  # type: ignore[import-untyped]
from sqlalchemy.ext.asyncio import AsyncConnection

from persistence.errors import DuplicateRow, StoreError, VersionConflict
from persistence.plan import InputWrite, WritePlan
from persistence.ports import Writer
from persistence.sql.batched import (
    delete_from_arrays,
    insert_from_arrays,
    update_from_arrays,
    upsert_clause,
)
from persistence.sql.failures import integrity_failure
from persistence.sql.rows import (
    COMMAND_COLUMNS,
    EVENT_COLUMNS,
    INPUT_COLUMNS,
    RECEIPT_COLUMNS,
    RUNTIME_COLUMNS,
    SNAPSHOT_COLUMNS,
    Row,
    command_values,
    event_values,
    input_values,
    receipt_values,
    runtime_values,
    snapshot_values,
)
from persistence.sql.tables import (
    boundary_receipts,
    event_outbox,
    inputs,
    processed_commands,
    runtimes,
    session_snapshots,
)

_INPUT_KEYS = ("runtime_id", "input_id")

_INSERT_RUNTIMES = insert_from_arrays(runtimes, RUNTIME_COLUMNS)
_UPDATE_RUNTIMES = update_from_arrays(runtimes, ("runtime_id",), RUNTIME_COLUMNS,
                                      fence_version=True)
_DELETE_INPUTS = delete_from_arrays(inputs, _INPUT_KEYS)
_UPDATE_INPUTS = update_from_arrays(inputs, _INPUT_KEYS, INPUT_COLUMNS)
# The id conflict is named as the arbiter, so an input repeated whole (same id and same key) is
# reported as a repeated id, as on SQLite; a repeated key alone still violates its index.
_INSERT_INPUTS = insert_from_arrays(
    inputs, INPUT_COLUMNS, conflict="ON CONFLICT (runtime_id, input_id) DO NOTHING",
    returning=_INPUT_KEYS,
)
_INSERT_RECEIPTS = insert_from_arrays(boundary_receipts, RECEIPT_COLUMNS)
_UPSERT_SNAPSHOTS = insert_from_arrays(
    session_snapshots, SNAPSHOT_COLUMNS,
    conflict=upsert_clause(session_snapshots, ("runtime_id",), SNAPSHOT_COLUMNS),
)
_INSERT_COMMANDS = insert_from_arrays(processed_commands, COMMAND_COLUMNS)
# In the commit's order, so that the outbox positions follow the order of the decisions.
_INSERT_EVENTS = insert_from_arrays(event_outbox, EVENT_COLUMNS, ordered=True)


def _arrays(rows: Sequence[Row]) -> list[tuple[Any, ...]]:
    """The rows' columns, each as one array parameter."""
    return list(zip(*rows, strict=True))


async def driver_of(conn: AsyncConnection) -> Any:
    """The asyncpg connection under ``conn``."""
    return (await conn.get_raw_connection()).driver_connection


async def _driver_in_transaction(conn: AsyncConnection) -> Any:
    """The asyncpg connection under ``conn``, inside ``conn``'s transaction.

    SQLAlchemy's asyncpg adapter sends BEGIN lazily, with the first statement it runs; a commit
    whose statements all go to the driver has it send an empty one first, so that none of them
    runs outside the transaction (and commits on its own)."""
    driver = await driver_of(conn)
    if driver is not None and not driver.is_in_transaction():
        await conn.exec_driver_sql("SELECT 1")
    if driver is None or not driver.is_in_transaction():  # pragma: no cover - never seen
        raise StoreError("the write transaction has not begun on its connection")
    return driver


async def apply_through_driver(
    conn: AsyncConnection, plan: WritePlan, now: datetime, writer: Writer
) -> None:
    """Write a folded commit with one statement per table (two for runtime rows)."""
    driver = await _driver_in_transaction(conn)
    await _put_runtimes(driver, plan, writer)
    try:
        if plan.deletes:
            await driver.execute(_DELETE_INPUTS, *_arrays(plan.deletes))
        updates, inserts = plan.updates, plan.inserts
        if updates:
            await _update_inputs(driver, updates)
        if inserts:
            await _insert_inputs(driver, inserts)
        if plan.receipts:
            await driver.execute(_INSERT_RECEIPTS,
                                 *_arrays([receipt_values(r) for r in plan.receipts]))
        if plan.snapshots:
            await driver.execute(_UPSERT_SNAPSHOTS,
                                 *_arrays([snapshot_values(s) for s in plan.snapshots.values()]))
        if plan.commands:
            await driver.execute(_INSERT_COMMANDS, *_arrays(
                [command_values(runtime_id, command) for runtime_id, command in plan.commands]))
        if plan.events:
            traces, group = plan.traces, writer.group
            await driver.execute(_INSERT_EVENTS, *_arrays([
                event_values(e, now, traces.get(e.event_id) if traces else None, group)
                for e in plan.events
            ]))
    except asyncpg.IntegrityConstraintViolationError as exc:
        raise integrity_failure(exc) from exc


async def _put_runtimes(driver: Any, plan: WritePlan, writer: Writer) -> None:
    """New runtimes in one INSERT, the others in one compare-and-set UPDATE."""
    created = [runtime_values(row, writer=writer.id, group=writer.group)
               for row, expected in plan.runtimes.values() if expected == 0]
    if created:
        try:
            await driver.execute(_INSERT_RUNTIMES, *_arrays(created))
        except asyncpg.IntegrityConstraintViolationError as exc:
            # another writer created one of them first
            raise VersionConflict(created[0][0], 0) from exc
    moved = [(row, expected) for row, expected in plan.runtimes.values() if expected != 0]
    if not moved:
        return
    given = [(*runtime_values(row, writer=writer.id, group=writer.group), expected)
             for row, expected in moved]
    try:
        matched = {record[0] for record in await driver.fetch(_UPDATE_RUNTIMES, *_arrays(given))}
    except asyncpg.IntegrityConstraintViolationError as exc:
        raise integrity_failure(exc) from exc
    for row, expected in moved:
        if row.runtime_id not in matched:
            raise VersionConflict(row.runtime_id, expected)


async def _update_inputs(driver: Any, writes: Sequence[InputWrite]) -> None:
    rows = [input_values(w.runtime_id, w.record) for w in writes]
    matched = {(r[0], r[1]) for r in await driver.fetch(_UPDATE_INPUTS, *_arrays(rows))}
    for write in writes:
        if (write.runtime_id, write.record.input_id) not in matched:
            raise StoreError(
                f"runtime {write.runtime_id!r}: input {write.record.input_id} is not stored"
            )


async def _insert_inputs(driver: Any, writes: Sequence[InputWrite]) -> None:
    rows = [input_values(w.runtime_id, w.record) for w in writes]
    written = {(r[0], r[1]) for r in await driver.fetch(_INSERT_INPUTS, *_arrays(rows))}
    for write in writes:
        record = write.record
        if (write.runtime_id, record.input_id) not in written:
            detail = f"input {record.input_id} key {record.idempotency_key!r}"
            raise DuplicateRow("input id", detail)
