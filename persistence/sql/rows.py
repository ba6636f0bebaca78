"""The SQL row mapping: each stored value to the column values of its table row, and back.

The one place that knows which column holds what. Values stay Python values (UUIDs, aware
datetimes); the column types in :mod:`persistence.sql.tables` turn them into what each database
stores. JSON columns hold the shapes of :mod:`persistence.codec`, so an input, a command outcome
or an event reads back equal from any store. Times are refused when naive, before any statement
runs.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any
from uuid import UUID

from sqlalchemy import RowMapping

from persistence import codec
from schemas import CommandCompleted, EventEnvelope, RuntimePhase
from worker.core.model import (
    BoundaryReceipt,
    InputRecord,
    RecordCommand,
    RuntimeRow,
    SessionSnapshot,
)

Values = dict[str, Any]
"""A row's column values, to insert or update."""


def runtime_to_row(row: RuntimeRow, *, writer: str | None, group: str | None = None) -> Values:
    """A ``runtimes`` row; ``writer`` is the id of the store's writer (``last_writer``) and
    ``group`` its deployment (``writer_group``)."""
    return {
        "runtime_id": row.runtime_id,
        "phase": row.phase.value,
        "pre_run_phase": None if row.pre_run_phase is None else row.pre_run_phase.value,
        "current_run_id": row.current_run_id,
        "next_admission_seq": row.next_admission_seq,
        "version": row.version,
        "updated_at": codec.to_utc(row.updated_at),
        "last_writer": writer,
        "writer_group": group,
    }


def runtime_from_row(row: RowMapping) -> RuntimeRow:
    pre_run = row["pre_run_phase"]
    return RuntimeRow(
        runtime_id=row["runtime_id"],
        phase=RuntimePhase(row["phase"]),
        pre_run_phase=None if pre_run is None else RuntimePhase(pre_run),
        current_run_id=row["current_run_id"],
        next_admission_seq=row["next_admission_seq"],
        version=row["version"],
        updated_at=row["updated_at"],
    )


def input_to_row(runtime_id: str, record: InputRecord) -> Values:
    """An ``inputs`` row: the whole record in ``state``, and copies of the queried fields."""
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


def input_from_state(state: Mapping[str, Any]) -> InputRecord:
    """The input stored in an ``inputs`` row's ``state`` column."""
    return codec.decode_input(state)


def input_from_state_text(text: str) -> InputRecord:
    """The input stored in an ``inputs`` row's ``state`` column, read as text: parsed by
    orjson (the column type's ``json`` is several times slower on a cold load's thousands of
    rows), its payload only once read (:func:`persistence.codec.decode_input_text`)."""
    return codec.decode_input_text(text)


def receipt_to_row(receipt: BoundaryReceipt) -> Values:
    return {
        "runtime_id": receipt.runtime_id,
        "run_id": receipt.run_id,
        "sequence": receipt.sequence,
        "contributing_input_ids": [str(i) for i in receipt.contributing_input_ids],
        "conversation_digest": receipt.conversation_digest,
        "message_count": receipt.message_count,
        "committed_at": codec.to_utc(receipt.committed_at),
    }


def receipt_from_row(row: RowMapping) -> BoundaryReceipt:
    return BoundaryReceipt(
        runtime_id=row["runtime_id"],
        run_id=row["run_id"],
        sequence=row["sequence"],
        contributing_input_ids=tuple(UUID(i) for i in row["contributing_input_ids"]),
        conversation_digest=row["conversation_digest"],
        message_count=row["message_count"],
        committed_at=row["committed_at"],
    )


def snapshot_to_row(snapshot: SessionSnapshot) -> Values:
    return {
        "runtime_id": snapshot.runtime_id,
        "run_id": snapshot.run_id,
        "body": dict(snapshot.body),
        "digest": snapshot.digest,
        "message_count": snapshot.message_count,
        "committed_at": codec.to_utc(snapshot.committed_at),
    }


def snapshot_from_row(row: RowMapping) -> SessionSnapshot:
    return SessionSnapshot(
        runtime_id=row["runtime_id"],
        run_id=row["run_id"],
        body=dict(row["body"]),
        digest=row["digest"],
        message_count=row["message_count"],
        committed_at=row["committed_at"],
    )


def command_to_row(runtime_id: str, command: RecordCommand) -> Values:
    """A ``processed_commands`` row: the outcome that a repeated command is answered with."""
    return {
        "runtime_id": runtime_id,
        "command_id": command.command_id,
        "command_type": command.command_type,
        "outcome": codec.encode_command(command.outcome),
        "processed_at": codec.to_utc(command.at),
    }


def command_from_outcome(outcome: Mapping[str, Any]) -> CommandCompleted:
    """The outcome stored in a ``processed_commands`` row's ``outcome`` column."""
    return codec.decode_command(outcome)


def event_to_row(
    event: EventEnvelope, now: datetime, traceparent: str | None = None,
    writer_group: str | None = None,
) -> Values:
    """An unsent ``event_outbox`` row written at ``now`` (the position is the database's), with
    the trace context of the decision that made it and the deployment that wrote it."""
    return {
        "event_id": event.event_id,
        "runtime_id": event.runtime_id,
        "code": event.code.value,
        "body": codec.encode_event(event),
        "created_at": now,
        "sent_at": None,
        "traceparent": traceparent,
        "writer_group": writer_group,
    }


def event_from_body(body: Mapping[str, Any]) -> EventEnvelope:
    """The event stored in an ``event_outbox`` row's ``body`` column."""
    return codec.decode_event(body)
