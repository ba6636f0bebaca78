"""The SQL row mapping: each stored value to the column values of its table row, and back.

The one place that knows which column holds what. Each ``*_values`` function gives a row's
values in the order of ``*_COLUMNS`` (the table's own column order); each ``*_to_row`` gives
the same values by column name. Values stay Python values (UUIDs, aware datetimes) except JSON,
which is encoded once, to :class:`~persistence.sql.engine.JsonText`: the same values go to
SQLAlchemy (SQLite) and straight to asyncpg (PostgreSQL, :mod:`persistence.sql.driver_writes`).
JSON columns hold the shapes of :mod:`persistence.codec`, so an input, a command outcome or an
event reads back equal from any store. Times are refused when naive, before any statement runs.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any
from uuid import UUID

from sqlalchemy import RowMapping, Table

from persistence import codec
from persistence.sql.engine import JsonText, json_column
from persistence.sql.tables import (
    boundary_receipts,
    event_outbox,
    inputs,
    processed_commands,
    runtimes,
    session_snapshots,
)
from schemas import CommandCompleted, EventEnvelope, RuntimePhase
from worker.core.model import (
    BoundaryReceipt,
    InputRecord,
    RecordCommand,
    RuntimeRow,
    SessionSnapshot,
)

Values = dict[str, Any]
"""A row's column values by name, to insert or update."""

Row = tuple[Any, ...]
"""A row's column values in the order of its table's ``*_COLUMNS``."""


def _names(table: Table, *, but: tuple[str, ...] = ()) -> tuple[str, ...]:
    return tuple(c.name for c in table.columns if c.name not in but)


RUNTIME_COLUMNS = _names(runtimes)
INPUT_COLUMNS = _names(inputs)
RECEIPT_COLUMNS = _names(boundary_receipts)
SNAPSHOT_COLUMNS = _names(session_snapshots)
COMMAND_COLUMNS = _names(processed_commands)
EVENT_COLUMNS = _names(event_outbox, but=("position",))
"""(The position is the database's.)"""


def runtime_values(row: RuntimeRow, *, writer: str | None, group: str | None = None) -> Row:
    """A ``runtimes`` row; ``writer`` is the id of the store's writer (``last_writer``) and
    ``group`` its deployment (``writer_group``)."""
    return (
        row.runtime_id,
        row.phase.value,
        None if row.pre_run_phase is None else row.pre_run_phase.value,
        row.current_run_id,
        row.next_admission_seq,
        row.version,
        codec.to_utc(row.updated_at),
        writer,
        group,
    )


def runtime_to_row(row: RuntimeRow, *, writer: str | None, group: str | None = None) -> Values:
    return dict(zip(RUNTIME_COLUMNS, runtime_values(row, writer=writer, group=group),
                    strict=True))


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


def input_values(runtime_id: str, record: InputRecord) -> Row:
    """An ``inputs`` row: the whole record in ``state``, and copies of the queried fields."""
    blob_ids = codec.blob_ids_of(record)
    values = (
        runtime_id,
        record.input_id,
        record.phase.value,
        record.lane.value,
        record.admission_seq,
        record.kind.value,
        record.durability.value,
        record.idempotency_key,
        record.supersession_key,
        record.last_run_id,
        record.boundary_sequence,
        JsonText(codec.encode_input_text(record)),
        json_column(blob_ids) if blob_ids else None,
        codec.to_utc(record.created_at),
        codec.to_utc(record.updated_at),
    )
    if record.is_terminal:
        codec.release(record)
    return values


def input_to_row(runtime_id: str, record: InputRecord) -> Values:
    return dict(zip(INPUT_COLUMNS, input_values(runtime_id, record), strict=True))


def input_from_state(state: Mapping[str, Any]) -> InputRecord:
    """The input stored in an ``inputs`` row's ``state`` column."""
    return codec.decode_input(state)


def input_from_state_text(text: str) -> InputRecord:
    """The input stored in an ``inputs`` row's ``state`` column, read as text: parsed by
    orjson (the column type's ``json`` is several times slower on a cold load's thousands of
    rows), its payload only once read (:func:`persistence.codec.decode_input_text`)."""
    return codec.decode_input_text(text)


def receipt_values(receipt: BoundaryReceipt) -> Row:
    return (
        receipt.runtime_id,
        receipt.run_id,
        receipt.sequence,
        json_column([str(i) for i in receipt.contributing_input_ids]),
        receipt.conversation_digest,
        receipt.message_count,
        codec.to_utc(receipt.committed_at),
    )


def receipt_to_row(receipt: BoundaryReceipt) -> Values:
    return dict(zip(RECEIPT_COLUMNS, receipt_values(receipt), strict=True))


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


def snapshot_values(snapshot: SessionSnapshot) -> Row:
    return (
        snapshot.runtime_id,
        snapshot.run_id,
        json_column(dict(snapshot.body)),
        snapshot.digest,
        snapshot.message_count,
        codec.to_utc(snapshot.committed_at),
    )


def snapshot_to_row(snapshot: SessionSnapshot) -> Values:
    return dict(zip(SNAPSHOT_COLUMNS, snapshot_values(snapshot), strict=True))


def snapshot_from_row(row: RowMapping) -> SessionSnapshot:
    return SessionSnapshot(
        runtime_id=row["runtime_id"],
        run_id=row["run_id"],
        body=dict(row["body"]),
        digest=row["digest"],
        message_count=row["message_count"],
        committed_at=row["committed_at"],
    )


def command_values(runtime_id: str, command: RecordCommand) -> Row:
    """A ``processed_commands`` row: the outcome that a repeated command is answered with."""
    return (
        runtime_id,
        command.command_id,
        command.command_type,
        json_column(codec.encode_command(command.outcome)),
        codec.to_utc(command.at),
    )


def command_to_row(runtime_id: str, command: RecordCommand) -> Values:
    return dict(zip(COMMAND_COLUMNS, command_values(runtime_id, command), strict=True))


def command_from_outcome(outcome: Mapping[str, Any]) -> CommandCompleted:
    """The outcome stored in a ``processed_commands`` row's ``outcome`` column."""
    return codec.decode_command(outcome)


def event_values(
    event: EventEnvelope, now: datetime, traceparent: str | None = None,
    writer_group: str | None = None,
) -> Row:
    """An unsent ``event_outbox`` row written at ``now`` (the position is the database's), with
    the trace context of the decision that made it and the deployment that wrote it."""
    return (
        event.event_id,
        event.runtime_id,
        event.code.value,
        JsonText(codec.encode_event_text(event)),
        codec.to_utc(now),
        None,
        traceparent,
        writer_group,
    )


def event_to_row(
    event: EventEnvelope, now: datetime, traceparent: str | None = None,
    writer_group: str | None = None,
) -> Values:
    return dict(zip(EVENT_COLUMNS, event_values(event, now, traceparent, writer_group),
                    strict=True))


def event_from_body(body: Mapping[str, Any]) -> EventEnvelope:
    """The event stored in an ``event_outbox`` row's ``body`` column."""
    return codec.decode_event(body)
