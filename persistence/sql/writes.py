"""The statements of one commit: each decision's row mutations in order, then its events.

Every statement runs inside the caller's transaction; the first failure raises a typed error and
the caller rolls the whole transaction back.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Table, and_, delete, insert, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from persistence import codec
from persistence.errors import DuplicateRow, ReceiptConflict, StoreError, VersionConflict
from persistence.plan import InputWrite, WritePlan
from persistence.sql.failures import describe, is_foreign_key, violated_constraint
from persistence.sql.tables import (
    boundary_receipts,
    event_outbox,
    inputs,
    processed_commands,
    runtimes,
    session_snapshots,
)
from schemas import EventEnvelope
from worker.core.model import (
    BoundaryReceipt,
    InputRecord,
    Mutation,
    PutInput,
    PutRuntime,
    RecordCommand,
    RuntimeRow,
    SessionSnapshot,
)

_DUPLICATES = {
    "pk_inputs": "input id",
    "uq_inputs_runtime_id_idempotency_key": "idempotency key",
    "pk_processed_commands": "command id",
    "uq_event_outbox_event_id": "event id",
}


def runtime_values(row: RuntimeRow) -> dict[str, Any]:
    return {
        "runtime_id": row.runtime_id,
        "phase": row.phase.value,
        "pre_run_phase": None if row.pre_run_phase is None else row.pre_run_phase.value,
        "current_run_id": row.current_run_id,
        "next_admission_seq": row.next_admission_seq,
        "version": row.version,
        "updated_at": codec.to_utc(row.updated_at),
    }


def input_values(runtime_id: str, record: InputRecord) -> dict[str, Any]:
    return {
        "runtime_id": runtime_id,
        "input_id": record.input_id,
        "phase": record.phase.value,
        "lane": record.lane.value,
        "admission_seq": record.admission_seq,
        "kind": record.kind.value,
        "durability": record.durability.value,
        "idempotency_key": record.idempotency_key,
        "supersession_key": record.supersession_key,
        "last_run_id": record.last_run_id,
        "boundary_sequence": record.boundary_sequence,
        "state": codec.encode_input(record),
        "blob_ids": codec.blob_ids_of(record) or None,
        "created_at": codec.to_utc(record.created_at),
        "updated_at": codec.to_utc(record.updated_at),
    }


def receipt_values(receipt: BoundaryReceipt) -> dict[str, Any]:
    return {
        "runtime_id": receipt.runtime_id,
        "run_id": receipt.run_id,
        "sequence": receipt.sequence,
        "contributing_input_ids": [str(i) for i in receipt.contributing_input_ids],
        "conversation_digest": receipt.conversation_digest,
        "message_count": receipt.message_count,
        "committed_at": codec.to_utc(receipt.committed_at),
    }


def snapshot_values(snapshot: SessionSnapshot) -> dict[str, Any]:
    return {
        "runtime_id": snapshot.runtime_id,
        "run_id": snapshot.run_id,
        "body": dict(snapshot.body),
        "digest": snapshot.digest,
        "message_count": snapshot.message_count,
        "committed_at": codec.to_utc(snapshot.committed_at),
    }


def event_values(event: EventEnvelope, now: datetime) -> dict[str, Any]:
    return {
        "event_id": event.event_id,
        "runtime_id": event.runtime_id,
        "code": event.code.value,
        "body": codec.encode_event(event),
        "created_at": now,
        "sent_at": None,
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
                insert(boundary_receipts), [receipt_values(r) for r in plan.receipts]
            )
        for snapshot in plan.snapshots.values():
            await _upsert_snapshot(conn, snapshot)
        if plan.commands:
            await conn.execute(
                insert(processed_commands),
                [
                    {
                        "runtime_id": runtime_id,
                        "command_id": command.command_id,
                        "command_type": command.command_type,
                        "outcome": codec.encode_command(command.outcome),
                        "processed_at": codec.to_utc(command.at),
                    }
                    for runtime_id, command in plan.commands
                ],
            )
        if plan.events:
            await conn.execute(insert(event_outbox), [event_values(e, now) for e in plan.events])
    except IntegrityError as exc:
        raise _integrity_failure(exc, None) from exc


async def _insert_inputs(conn: AsyncConnection, writes: list[InputWrite]) -> None:
    # The id conflict is named as the arbiter, so an input repeated whole (same id and same key)
    # is reported as a repeated id on both databases, whichever index each checks first.
    statement = (
        _dialect_insert(conn, inputs)
        .on_conflict_do_nothing(index_elements=["runtime_id", "input_id"])
        .returning(inputs.c.runtime_id, inputs.c.input_id)
    )
    result = await conn.execute(statement, [input_values(w.runtime_id, w.record) for w in writes])
    written = {(row.runtime_id, row.input_id) for row in result}
    for write in writes:
        if (write.runtime_id, write.record.input_id) not in written:
            raise DuplicateRow("input id", _detail(PutInput(write.record, insert=True)))


async def _put_runtime(
    conn: AsyncConnection, row: RuntimeRow, expected: int, writer: str | None
) -> None:
    if expected == 0:
        try:
            values = {**runtime_values(row), "last_writer": writer}
            await conn.execute(insert(runtimes).values(values))
        except IntegrityError as exc:  # another writer created it first
            raise VersionConflict(row.runtime_id, expected) from exc
        return
    values = runtime_values(row)
    del values["runtime_id"]
    values["last_writer"] = writer
    result = await conn.execute(
        update(runtimes)
        .where(and_(runtimes.c.runtime_id == row.runtime_id, runtimes.c.version == expected))
        .values(values)
    )
    if result.rowcount == 0:
        raise VersionConflict(row.runtime_id, expected)


async def _update_input(conn: AsyncConnection, runtime_id: str, record: InputRecord) -> None:
    values = input_values(runtime_id, record)
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
    values = snapshot_values(snapshot)
    statement = _dialect_insert(conn, session_snapshots).values(values)
    changed = {k: v for k, v in values.items() if k != "runtime_id"}
    await conn.execute(statement.on_conflict_do_update(index_elements=["runtime_id"], set_=changed))


def _dialect_insert(conn: AsyncConnection, table: Table) -> postgresql.Insert | sqlite.Insert:
    if conn.dialect.name == "postgresql":
        return postgresql.insert(table)
    return sqlite.insert(table)


def _detail(mutation: Mutation | None) -> str:
    if isinstance(mutation, PutInput):
        return f"input {mutation.record.input_id} key {mutation.record.idempotency_key!r}"
    if isinstance(mutation, RecordCommand):
        return f"command {mutation.command_id}"
    return ""


def _integrity_failure(exc: IntegrityError, mutation: Mutation | None) -> StoreError:
    constraint = violated_constraint(exc)
    if isinstance(mutation, PutRuntime) and constraint == "pk_runtimes":
        return VersionConflict(mutation.row.runtime_id, mutation.expected_version)
    if constraint == "pk_boundary_receipts":
        return ReceiptConflict(describe(exc))
    if constraint in _DUPLICATES:
        return DuplicateRow(_DUPLICATES[constraint], _detail(mutation))
    if is_foreign_key(constraint):
        return StoreError(f"{describe(exc)} (a row refers to a runtime that is not stored)")
    return StoreError(f"refused by the database: {describe(exc)}")
