"""The SQL row mapping: runtime rows, inputs, receipts, snapshots, commands and events read back
equal through a real (SQLite) table, column types and JSON columns included; each row's values
come in its table's column order."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any
from uuid import uuid4

import pytest
from sqlalchemy import Engine, RowMapping, Table, create_engine, insert, select

from persistence import codec
from persistence.sql import rows
from persistence.sql.engine import JsonText, json_column, json_text
from persistence.sql.rows import (
    command_from_outcome,
    command_to_row,
    event_from_body,
    event_to_row,
    input_from_state,
    input_to_row,
    receipt_from_row,
    receipt_to_row,
    runtime_from_row,
    runtime_to_row,
    snapshot_from_row,
    snapshot_to_row,
)
from persistence.sql.tables import (
    boundary_receipts,
    event_outbox,
    inputs,
    metadata,
    processed_commands,
    runtimes,
    session_snapshots,
)
from schemas import (
    BlobImageBlock,
    CommandCompleted,
    CommandReport,
    Durability,
    EventCode,
    EventEnvelope,
    ImageMediaType,
    InputHeader,
    InputKind,
    InputPhase,
    Lane,
    OperatorSource,
    PromptInput,
    RuntimePhase,
    TextBlock,
)
from tests.unit.test_codec import PAYLOADS, record_of
from worker.core.model import (
    BoundaryReceipt,
    HistoryEntry,
    InputRecord,
    RecordCommand,
    RuntimeRow,
    SessionSnapshot,
)

pytestmark = pytest.mark.unit

NOW = datetime(2026, 3, 14, 15, 9, 26, 535897, tzinfo=UTC)


@pytest.fixture(scope="module")
def engine() -> Iterator[Engine]:
    engine = create_engine("sqlite://", json_serializer=json_text)  # as the store's engines
    metadata.create_all(engine)
    try:
        yield engine
    finally:
        engine.dispose()


def through(engine: Engine, table: Table, values: dict[str, Any]) -> RowMapping:
    """``values`` written to ``table`` and read back (in a transaction rolled back after)."""
    with engine.connect() as conn:
        conn.execute(insert(table).values(values))
        return conn.execute(select(table)).one()._mapping


def test_rows_receipts_and_snapshots_round_trip(engine: Engine) -> None:
    row = RuntimeRow("rt:a", RuntimePhase.RUNNING, RuntimePhase.IDLE, uuid4(), 4, 9, NOW)
    receipt = BoundaryReceipt("rt:a", uuid4(), 3, (uuid4(), uuid4()), "ab" * 32, 12, NOW)
    snapshot = SessionSnapshot("rt:a", uuid4(), {"messages": [{"t": "hi"}]}, "cd" * 32, 1, NOW)
    bare_row = RuntimeRow("rt:b", RuntimePhase.IDLE, None, None, 1, 1, NOW)

    def runtime_through(value: RuntimeRow) -> RowMapping:
        return through(engine, runtimes, runtime_to_row(value, writer=None))

    assert runtime_from_row(runtime_through(row)) == row
    assert runtime_from_row(runtime_through(bare_row)) == bare_row
    assert receipt_from_row(through(engine, boundary_receipts, receipt_to_row(receipt))) == receipt
    assert snapshot_from_row(through(engine, session_snapshots, snapshot_to_row(snapshot))) == (
        snapshot
    )


@pytest.mark.parametrize("value", [
    {"text": "héllo", "none": None, "list": [1, 2.5, True]},
    {"output": 2**70},  # beyond what orjson encodes: the json module takes over
    [],
])
def test_json_columns_text_reads_back_equal(value: Any) -> None:
    assert json.loads(json_text(value)) == value


@pytest.mark.parametrize(("names", "table"), [
    (rows.RUNTIME_COLUMNS, runtimes),
    (rows.INPUT_COLUMNS, inputs),
    (rows.RECEIPT_COLUMNS, boundary_receipts),
    (rows.SNAPSHOT_COLUMNS, session_snapshots),
    (rows.COMMAND_COLUMNS, processed_commands),
    (rows.EVENT_COLUMNS, event_outbox),
], ids=lambda value: value.name if isinstance(value, Table) else "")
def test_each_rows_values_come_in_its_tables_column_order(
    names: tuple[str, ...], table: Table
) -> None:
    expected = tuple(c.name for c in table.columns if c.name != "position")
    assert names == expected


def test_inputs_commands_and_events_round_trip(engine: Engine) -> None:
    blob = "sha256:" + "a" * 64
    payload = PromptInput(
        header=InputHeader(id=uuid4(), timestamp=NOW, source=OperatorSource(),
                           durability=Durability.DURABLE, idempotency_key="k"),
        content=[TextBlock(text="see"), BlobImageBlock(media_type=ImageMediaType.PNG,
                                                       blob_id=blob)],
    )
    record = InputRecord(
        input_id=payload.header.id, kind=InputKind.PROMPT, phase=InputPhase.STAGED,
        lane=Lane.QUEUE, admission_seq=3, durability=Durability.DURABLE, payload=payload,
        created_at=NOW, updated_at=NOW, idempotency_key="k", last_run_id=uuid4(),
        history=(HistoryEntry(NOW, InputPhase.QUEUED, InputPhase.STAGED, "staged"),),
    )
    outcome = CommandCompleted(command_id=uuid4(), command_type="retire",
                               state=RuntimePhase.RETIRED, report=CommandReport())
    command = RecordCommand(outcome.command_id, outcome.command_type, outcome, NOW)
    event = EventEnvelope(
        event_id=uuid4(), at=NOW, runtime_id="rt:a", category=EventCode.RUN_COMPLETED.category,
        code=EventCode.RUN_COMPLETED, data={"text": "héllo", "count": 2, "big": 2**70},
    )
    with engine.connect() as conn:
        conn.execute(insert(runtimes).values(
            runtime_to_row(RuntimeRow("rt:a", RuntimePhase.IDLE, None, None, 1, 1, NOW),
                           writer=None)))
        conn.execute(insert(inputs).values(input_to_row("rt:a", record)))
        conn.execute(insert(processed_commands).values(command_to_row("rt:a", command)))
        conn.execute(insert(event_outbox).values(event_to_row(event, NOW, None, "g")))
        stored = conn.execute(select(inputs)).one()._mapping
        assert input_from_state(stored["state"]) == record
        assert stored["blob_ids"] == [blob]
        assert command_from_outcome(
            conn.execute(select(processed_commands.c.outcome)).scalar_one()) == outcome
        body = conn.execute(select(event_outbox.c.body)).scalar_one()
        assert event_from_body(body) == event


def test_json_text_passes_encoded_text_through() -> None:
    encoded = json_column({"a": [1, None]})
    assert isinstance(encoded, JsonText)
    assert json_text(encoded) is encoded
    assert json.loads(encoded) == {"a": [1, None]}


def test_the_encodings_a_record_kept_go_once_it_is_written_terminal() -> None:
    """The write-side caches hold live inputs only: a terminal record's last write drops what
    its writes kept (its payload's encoding and blob ids, its history's encodings)."""
    payload = PAYLOADS[1]
    entry = HistoryEntry(at=datetime.now(UTC), from_phase=None, to_phase=InputPhase.QUEUED,
                         reason="admitted")
    queued = record_of(payload, history=(entry,))
    first = rows.input_values("rt:kept", queued)
    assert payload in codec._payloads
    assert payload in codec._blob_ids
    assert entry in codec._histories

    consumed = dataclasses.replace(queued, phase=InputPhase.CONSUMED)
    last = rows.input_values("rt:kept", consumed)

    assert payload not in codec._payloads
    assert payload not in codec._blob_ids
    assert entry not in codec._histories
    assert first[11] != last[11]  # the state, written again
    assert rows.input_values("rt:kept", consumed) == last  # encoded again, the same
