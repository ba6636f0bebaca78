"""The history checker's read-only queries behave alike on every store (memory, SQLite,
PostgreSQL): whole histories, in order, nothing left out and nothing of other runtimes.

The tier of each test comes from the ``runtime_store`` parameter (memory and SQLite are unit,
PostgreSQL is integration), as in the rest of the contract suite.
"""

from __future__ import annotations

from datetime import timedelta
from uuid import uuid4

from persistence.ports import HistoryReader, RuntimeStore
from schemas import EventCode, InputPhase, RuntimePhase
from tests.contract.runtime_builders import (
    NOW,
    completed,
    created,
    event,
    new_runtime_id,
    receipt,
    record,
    row,
    step,
)
from worker.core.model import Decision, PutReceipt, PutRuntime, RecordCommand, Runtime


def reader(store: RuntimeStore) -> HistoryReader:
    assert isinstance(store, HistoryReader), f"{type(store).__name__} is no HistoryReader"
    return store


async def test_the_runtime_row_as_stored(runtime_store: RuntimeStore) -> None:
    history = reader(runtime_store)
    runtime_id = await created(runtime_store, record(1))
    assert await history.read_runtime_row(runtime_id) == row(runtime_id, 1)
    running = row(runtime_id, 2, RuntimePhase.RUNNING)
    await runtime_store.commit(
        [
            Decision(
                runtime=Runtime(runtime_id, version=2),
                mutations=(PutRuntime(running, expected_version=1),),
                events=(),
            )
        ]
    )
    assert await history.read_runtime_row(runtime_id) == running
    assert await history.read_runtime_row(new_runtime_id()) is None


async def test_every_receipt_oldest_first(runtime_store: RuntimeStore) -> None:
    history = reader(runtime_store)
    runtime_id = await created(runtime_store)
    run_a, run_b = uuid4(), uuid4()
    # More than the 20 that list_receipts shows by default: the checker needs all of them.
    many = [receipt(runtime_id, run_a, sequence=n, at=n) for n in range(1, 26)]
    late = receipt(runtime_id, run_b, sequence=1, at=100)
    await runtime_store.commit([step(runtime_id, 2, PutReceipt(late), *map(PutReceipt, many))])
    other = await created(runtime_store)
    await runtime_store.commit([step(other, 2, PutReceipt(receipt(other, uuid4())))])
    assert await history.read_receipts(runtime_id) == [*many, late]
    assert await history.read_receipts(new_runtime_id()) == []


async def test_every_command_outcome(runtime_store: RuntimeStore) -> None:
    history = reader(runtime_store)
    runtime_id = await created(runtime_store)
    first, second = completed("stop"), completed("resume")
    await runtime_store.commit(
        [step(runtime_id, 2, RecordCommand(first.command_id, "stop", first, NOW))]
    )
    await runtime_store.commit(
        [
            step(
                runtime_id,
                3,
                RecordCommand(second.command_id, "resume", second, NOW + timedelta(seconds=1)),
            )
        ]
    )
    assert await history.read_commands(runtime_id) == [first, second]
    assert await history.read_commands(new_runtime_id()) == []


async def test_the_whole_outbox_with_sent_marks(runtime_store: RuntimeStore) -> None:
    history = reader(runtime_store)
    runtime_id, other = new_runtime_id(), new_runtime_id()
    mine = [event(runtime_id, EventCode.INPUT_QUEUED) for _ in range(25)]
    theirs = event(other)
    await runtime_store.commit(
        [step(runtime_id, 1, events=tuple(mine[:10])), step(other, 1, events=(theirs,))]
    )
    await runtime_store.commit([step(runtime_id, 2, events=tuple(mine[10:]))])
    entries = await history.read_outbox(runtime_id)
    assert [e.event for e in entries] == mine
    assert [e.position for e in entries] == sorted(e.position for e in entries)
    assert not any(e.sent for e in entries)

    await runtime_store.mark_events_sent([e.position for e in entries[:3]])
    entries = await history.read_outbox(runtime_id)
    assert [e.sent for e in entries] == [True] * 3 + [False] * 22
    assert [e.event for e in await history.read_outbox(other)] == [theirs]


async def test_list_inputs_keeps_terminal_ones(runtime_store: RuntimeStore) -> None:
    history = reader(runtime_store)
    consumed, queued = record(1, phase=InputPhase.CONSUMED), record(2)
    runtime_id = await created(runtime_store, queued, consumed)
    assert await history.list_inputs(runtime_id) == [consumed, queued]
