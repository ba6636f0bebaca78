"""The statements of one commit: the rows of its folded plan (:mod:`persistence.plan`), then
its events, each mapped by :mod:`persistence.sql.rows`.

Every statement runs inside the caller's transaction; the first failure raises a typed error and
the caller rolls the whole transaction back.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Table, and_, delete, insert, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from persistence.errors import DuplicateRow, ReceiptConflict, StoreError, VersionConflict
from persistence.plan import InputWrite, WritePlan
from persistence.sql.failures import describe, is_foreign_key, violated_constraint
from persistence.sql.rows import (
    command_to_row,
    event_to_row,
    input_to_row,
    receipt_to_row,
    runtime_to_row,
    snapshot_to_row,
)
from persistence.sql.tables import (
    boundary_receipts,
    event_outbox,
    inputs,
    processed_commands,
    runtimes,
    session_snapshots,
)
from worker.core.model import InputRecord, RuntimeRow, SessionSnapshot

_DUPLICATES = {
    "pk_inputs": "input id",
    "uq_inputs_runtime_id_idempotency_key": "idempotency key",
    "pk_processed_commands": "command id",
    "uq_event_outbox_event_id": "event id",
}


async def apply_plan(
    conn: AsyncConnection, plan: WritePlan, now: datetime, writer: str | None = None
) -> None:
    """Write a folded commit: a statement per runtime row, multi-row inserts for the rest."""
    try:
        for row, expected in plan.runtimes.values():
            await _put_runtime(conn, row, expected, writer)
        for runtime_id, input_id in plan.deletes:
            await conn.execute(
                delete(inputs).where(
                    and_(inputs.c.runtime_id == runtime_id, inputs.c.input_id == input_id)
                )
            )
        for write in plan.updates:
            await _update_input(conn, write.runtime_id, write.record)
        if plan.inserts:
            await _insert_inputs(conn, plan.inserts)
        if plan.receipts:
            await conn.execute(
                insert(boundary_receipts), [receipt_to_row(r) for r in plan.receipts]
            )
        for snapshot in plan.snapshots.values():
            await _upsert_snapshot(conn, snapshot)
        if plan.commands:
            await conn.execute(
                insert(processed_commands),
                [command_to_row(runtime_id, command) for runtime_id, command in plan.commands],
            )
        if plan.events:
            await conn.execute(insert(event_outbox), [event_to_row(e, now) for e in plan.events])
    except IntegrityError as exc:
        raise _integrity_failure(exc) from exc


async def _insert_inputs(conn: AsyncConnection, writes: list[InputWrite]) -> None:
    # The id conflict is named as the arbiter, so an input repeated whole (same id and same key)
    # is reported as a repeated id on both databases, whichever index each checks first.
    statement = (
        _dialect_insert(conn, inputs)
        .on_conflict_do_nothing(index_elements=["runtime_id", "input_id"])
        .returning(inputs.c.runtime_id, inputs.c.input_id)
    )
    result = await conn.execute(statement, [input_to_row(w.runtime_id, w.record) for w in writes])
    written = {(row.runtime_id, row.input_id) for row in result}
    for write in writes:
        record = write.record
        if (write.runtime_id, record.input_id) not in written:
            detail = f"input {record.input_id} key {record.idempotency_key!r}"
            raise DuplicateRow("input id", detail)


async def _put_runtime(
    conn: AsyncConnection, row: RuntimeRow, expected: int, writer: str | None
) -> None:
    values = runtime_to_row(row, writer=writer)
    if expected == 0:
        try:
            await conn.execute(insert(runtimes).values(values))
        except IntegrityError as exc:  # another writer created it first
            raise VersionConflict(row.runtime_id, expected) from exc
        return
    del values["runtime_id"]
    result = await conn.execute(
        update(runtimes)
        .where(and_(runtimes.c.runtime_id == row.runtime_id, runtimes.c.version == expected))
        .values(values)
    )
    if result.rowcount == 0:
        raise VersionConflict(row.runtime_id, expected)


async def _update_input(conn: AsyncConnection, runtime_id: str, record: InputRecord) -> None:
    values = input_to_row(runtime_id, record)
    for key in ("runtime_id", "input_id"):
        del values[key]
    result = await conn.execute(
        update(inputs)
        .where(and_(inputs.c.runtime_id == runtime_id, inputs.c.input_id == record.input_id))
        .values(values)
    )
    if result.rowcount == 0:
        raise StoreError(f"runtime {runtime_id!r}: input {record.input_id} is not stored")


async def _upsert_snapshot(conn: AsyncConnection, snapshot: SessionSnapshot) -> None:
    values = snapshot_to_row(snapshot)
    statement = _dialect_insert(conn, session_snapshots).values(values)
    changed = {k: v for k, v in values.items() if k != "runtime_id"}
    await conn.execute(statement.on_conflict_do_update(index_elements=["runtime_id"], set_=changed))


def _dialect_insert(conn: AsyncConnection, table: Table) -> postgresql.Insert | sqlite.Insert:
    if conn.dialect.name == "postgresql":
        return postgresql.insert(table)
    return sqlite.insert(table)


def _integrity_failure(exc: IntegrityError) -> StoreError:
    """The typed error for a constraint the multi-row statements of a commit violated.

    The runtime rows' own conflicts are caught where they are written (:func:`_put_runtime`).
    """
    constraint = violated_constraint(exc)
    if constraint == "pk_boundary_receipts":
        return ReceiptConflict(describe(exc))
    if constraint in _DUPLICATES:
        return DuplicateRow(_DUPLICATES[constraint])
    if is_foreign_key(constraint):
        return StoreError(f"{describe(exc)} (a row refers to a runtime that is not stored)")
    return StoreError(f"refused by the database: {describe(exc)}")
