"""The statements of one commit: each decision's row mutations in order, then its events.

Every statement runs inside the caller's transaction; the first failure raises a typed error and
the caller rolls the whole transaction back.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import Table, and_, delete, insert, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from persistence import codec
from persistence.errors import DuplicateRow, ReceiptConflict, StoreError, VersionConflict
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
    Decision,
    DeleteInput,
    InputRecord,
    Mutation,
    PutInput,
    PutReceipt,
    PutRuntime,
    PutSnapshot,
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


async def apply_decision(conn: AsyncConnection, decision: Decision, now: datetime) -> None:
    for mutation in decision.mutations:
        try:
            await _apply(conn, decision.runtime_id, mutation, now)
        except IntegrityError as exc:
            raise _integrity_failure(exc, mutation) from exc
    if decision.events:
        try:
            rows = [event_values(event, now) for event in decision.events]
            await conn.execute(insert(event_outbox), rows)
        except IntegrityError as exc:
            raise _integrity_failure(exc, None) from exc


async def _apply(conn: AsyncConnection, runtime_id: str, mutation: Mutation, now: datetime) -> None:
    match mutation:
        case PutRuntime(row=row, expected_version=expected):
            await _put_runtime(conn, row, expected)
        case PutInput(record=record, insert=True):
            await _insert_input(conn, runtime_id, record)
        case PutInput(record=record):
            await _update_input(conn, runtime_id, record)
        case DeleteInput(input_id=input_id):
            await conn.execute(
                delete(inputs).where(
                    and_(inputs.c.runtime_id == runtime_id, inputs.c.input_id == input_id)
                )
            )
        case PutReceipt(receipt=receipt):
            await conn.execute(insert(boundary_receipts).values(receipt_values(receipt)))
        case PutSnapshot(snapshot=snapshot):
            await _upsert_snapshot(conn, snapshot)
        case RecordCommand():
            await conn.execute(
                insert(processed_commands).values(
                    runtime_id=runtime_id,
                    command_id=mutation.command_id,
                    command_type=mutation.command_type,
                    outcome=codec.encode_command(mutation.outcome),
                    processed_at=codec.to_utc(mutation.at),
                )
            )


async def _put_runtime(conn: AsyncConnection, row: RuntimeRow, expected: int) -> None:
    if expected == 0:
        await conn.execute(insert(runtimes).values(runtime_values(row)))
        return
    values = runtime_values(row)
    del values["runtime_id"]
    result = await conn.execute(
        update(runtimes)
        .where(and_(runtimes.c.runtime_id == row.runtime_id, runtimes.c.version == expected))
        .values(values)
    )
    if result.rowcount == 0:
        raise VersionConflict(row.runtime_id, expected)


async def _insert_input(conn: AsyncConnection, runtime_id: str, record: InputRecord) -> None:
    # The id conflict is named as the arbiter, so an input repeated whole (same id and same key)
    # is reported as a repeated id on both databases, whichever index each checks first.
    statement = _dialect_insert(conn, inputs, input_values(runtime_id, record))
    result = await conn.execute(
        statement.on_conflict_do_nothing(index_elements=["runtime_id", "input_id"])
    )
    if result.rowcount == 0:
        raise DuplicateRow("input id", _detail(PutInput(record, insert=True)))


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
    statement = _dialect_insert(conn, session_snapshots, values)
    changed = {k: v for k, v in values.items() if k != "runtime_id"}
    await conn.execute(statement.on_conflict_do_update(index_elements=["runtime_id"], set_=changed))


def _dialect_insert(
    conn: AsyncConnection, table: Table, values: Mapping[str, Any]
) -> postgresql.Insert | sqlite.Insert:
    if conn.dialect.name == "postgresql":
        return postgresql.insert(table).values(dict(values))
    return sqlite.insert(table).values(dict(values))


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
    if isinstance(mutation, PutReceipt) and constraint == "pk_boundary_receipts":
        receipt = mutation.receipt
        return ReceiptConflict(
            f"runtime {receipt.runtime_id!r} run {receipt.run_id} sequence {receipt.sequence}"
        )
    if constraint in _DUPLICATES:
        return DuplicateRow(_DUPLICATES[constraint], _detail(mutation))
    if is_foreign_key(constraint):
        return StoreError(f"{describe(exc)} (a row refers to a runtime that is not stored)")
    return StoreError(f"refused by the database: {describe(exc)}")
