"""The SQL row mapping: runtime rows, receipts and snapshots read back equal through a real
(SQLite) table, column types and JSON columns included."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any
from uuid import uuid4

import pytest
from sqlalchemy import Engine, RowMapping, Table, create_engine, insert, select

from persistence.sql.engine import json_text
from persistence.sql.rows import (
    receipt_from_row,
    receipt_to_row,
    runtime_from_row,
    runtime_to_row,
    snapshot_from_row,
    snapshot_to_row,
)
from persistence.sql.tables import boundary_receipts, metadata, runtimes, session_snapshots
from schemas import RuntimePhase
from worker.core.model import BoundaryReceipt, RuntimeRow, SessionSnapshot

pytestmark = pytest.mark.unit

NOW = datetime(2026, 3, 14, 15, 9, 26, 535897, tzinfo=UTC)


@pytest.fixture(scope="module")
def engine() -> Iterator[Engine]:
    engine = create_engine("sqlite://")
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
