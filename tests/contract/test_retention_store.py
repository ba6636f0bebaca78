"""Pruning behaves alike on every store (memory, SQLite, PostgreSQL): what is deleted, what is
never deleted, and what dedupe still recognises inside the window.

The PostgreSQL database is shared by the whole session and a prune is not scoped to a runtime,
so these tests assert on the rows of their own runtimes and read the reports' counts as lower
bounds. The tier of each test comes from the ``runtime_store`` parameter.
"""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import UTC, datetime, timedelta
from uuid import uuid4

import pytest

from persistence.ports import PruneReport, RuntimeStore
from schemas import InputPhase
from tests.contract.runtime_builders import (
    NOW,
    completed,
    created,
    event,
    receipt,
    record,
    snapshot,
    step,
    unsent_ids,
)
from tests.fixtures.postgres import OpenAs
from worker.core.model import PutInput, PutReceipt, PutSnapshot, RecordCommand

LONG_AGO = NOW + timedelta(days=1)
"""A cutoff after every row the builders date (they date everything at ``NOW`` + seconds)."""


def wall_now() -> datetime:
    return datetime.now(UTC)


async def prune_terminal(store: RuntimeStore, before: datetime, batch: int = 1000) -> PruneReport:
    """Prune the rows dated by the builders; leave the outbox alone (its cutoff is the past)."""
    return await store.prune(wall_now(), sent_events_before=NOW, terminal_before=before,
                             batch=batch)


async def test_sent_events_older_than_the_retention_are_deleted(
    runtime_store: RuntimeStore,
) -> None:
    runtime_id = await created(runtime_store)
    old = [event(runtime_id) for _ in range(3)]
    await runtime_store.commit([step(runtime_id, 2, events=tuple(old))])
    old_positions = [o.position for o in await runtime_store.fetch_unsent_events(100_000)
                     if o.event.runtime_id == runtime_id]
    await runtime_store.mark_events_sent(old_positions)
    cutoff = wall_now()
    recent, unsent = event(runtime_id), event(runtime_id)
    await runtime_store.commit([step(runtime_id, 3, events=(recent,))])
    await runtime_store.mark_events_sent(
        [o.position for o in await runtime_store.fetch_unsent_events(100_000)
         if o.event.event_id == recent.event_id]
    )
    await runtime_store.commit([step(runtime_id, 4, events=(unsent,))])

    report = await runtime_store.prune(wall_now(), sent_events_before=cutoff,
                                       terminal_before=NOW)

    assert report.events >= 3
    left = {e.event_id for e in await runtime_store.list_events(runtime_id)}
    assert left == {recent.event_id, unsent.event_id}
    assert unsent.event_id in await unsent_ids(runtime_store)


async def test_unsent_events_are_never_deleted(runtime_store: RuntimeStore) -> None:
    runtime_id = await created(runtime_store)
    waiting = event(runtime_id)
    await runtime_store.commit([step(runtime_id, 2, events=(waiting,))])

    now = wall_now()
    await runtime_store.prune(now, sent_events_before=now, terminal_before=now)

    assert [e.event_id for e in await runtime_store.list_events(runtime_id)] == [waiting.event_id]


async def test_old_terminal_inputs_are_deleted_and_live_ones_never(
    runtime_store: RuntimeStore,
) -> None:
    consumed = record(1, phase=InputPhase.CONSUMED)
    abandoned = record(2, phase=InputPhase.ABANDONED)
    superseded = record(3, phase=InputPhase.SUPERSEDED)
    coalesced = record(4, phase=InputPhase.COALESCED)
    queued, staged = record(5), record(6, phase=InputPhase.STAGED)
    recent = record(9, phase=InputPhase.CONSUMED)
    runtime_id = await created(
        runtime_store, consumed, abandoned, superseded, coalesced, queued, staged, recent
    )
    await runtime_store.commit(
        [step(runtime_id, 2, PutSnapshot(snapshot(runtime_id, uuid4(), 3)))]
    )

    report = await prune_terminal(runtime_store, NOW + timedelta(seconds=8))

    assert report.inputs >= 4
    assert await runtime_store.list_inputs(runtime_id) == [queued, staged, recent]
    loaded = await runtime_store.load_runtime(runtime_id)
    assert loaded.row is not None, "the runtime row is never deleted"
    assert loaded.inputs == (queued, staged)
    assert await runtime_store.load_snapshot(runtime_id) is not None, "nor the snapshot"


async def test_dedupe_holds_inside_the_window_and_ends_after_it(
    runtime_store: RuntimeStore,
) -> None:
    key = f"key-{uuid4()}"
    consumed = record(1, phase=InputPhase.CONSUMED, key=key)
    runtime_id = await created(runtime_store, consumed)
    outcome = completed()
    await runtime_store.commit([step(runtime_id, 2, RecordCommand(
        outcome.command_id, outcome.command_type, outcome, NOW + timedelta(seconds=1)
    ))])

    # Inside the window: the input was updated and the command recorded after the cutoff.
    await prune_terminal(runtime_store, NOW)
    assert await runtime_store.find_input(runtime_id, consumed.input_id, None) == consumed.input_id
    assert await runtime_store.find_input(runtime_id, uuid4(), key) == consumed.input_id
    assert await runtime_store.find_command(runtime_id, outcome.command_id) == outcome

    report = await prune_terminal(runtime_store, LONG_AGO)

    assert report.inputs >= 1
    assert report.commands >= 1
    assert await runtime_store.find_input(runtime_id, consumed.input_id, key) is None
    assert await runtime_store.find_command(runtime_id, outcome.command_id) is None


async def test_a_receipt_stays_while_one_of_its_inputs_is_live(
    runtime_store: RuntimeStore,
) -> None:
    run_id = uuid4()
    applied = record(1, phase=InputPhase.APPLIED, run=(run_id, 1))
    consumed = record(2, phase=InputPhase.CONSUMED, run=(run_id, 1))
    runtime_id = await created(runtime_store, applied, consumed)
    needed = dataclasses.replace(receipt(runtime_id, run_id, 1),
                                 contributing_input_ids=(applied.input_id, consumed.input_id))
    done = dataclasses.replace(receipt(runtime_id, uuid4(), 1),
                               contributing_input_ids=(consumed.input_id,))
    await runtime_store.commit([step(runtime_id, 2, PutReceipt(needed), PutReceipt(done))])

    first = await prune_terminal(runtime_store, LONG_AGO)

    assert first.receipts >= 1
    assert await runtime_store.list_receipts(runtime_id) == [needed]
    assert (await runtime_store.load_runtime(runtime_id)).receipts == {(run_id, 1)}

    finished = dataclasses.replace(applied, phase=InputPhase.CONSUMED)
    await runtime_store.commit([step(runtime_id, 3, PutInput(finished, insert=False))])
    await prune_terminal(runtime_store, LONG_AGO)

    assert await runtime_store.list_receipts(runtime_id) == []
    assert await runtime_store.list_inputs(runtime_id) == []


async def test_small_batches_delete_everything_and_walk_past_kept_receipts(
    runtime_store: RuntimeStore,
) -> None:
    live = record(1)
    old = [record(seq, phase=InputPhase.CONSUMED) for seq in range(2, 7)]
    runtime_id = await created(runtime_store, live, *old)
    kept = [dataclasses.replace(receipt(runtime_id, uuid4(), 1, at=at),
                                contributing_input_ids=(live.input_id,)) for at in range(3)]
    gone = [receipt(runtime_id, uuid4(), 1, at=at) for at in (3, 4, 5)]
    await runtime_store.commit([step(runtime_id, 2, *(PutReceipt(r) for r in kept + gone))])

    await prune_terminal(runtime_store, LONG_AGO, batch=2)

    assert await runtime_store.list_inputs(runtime_id) == [live]
    stored = await runtime_store.list_receipts(runtime_id, limit=100)
    assert sorted(r.run_id for r in stored) == sorted(r.run_id for r in kept)


async def test_concurrent_prunes_delete_each_row_once(
    runtime_store: RuntimeStore, runtime_store_as: OpenAs
) -> None:
    other = await runtime_store_as("other-pruner")
    old = [record(seq, phase=InputPhase.CONSUMED) for seq in range(1, 31)]
    runtime_id = await created(runtime_store, *old)

    reports = await asyncio.gather(
        prune_terminal(runtime_store, LONG_AGO, batch=4),
        prune_terminal(other, LONG_AGO, batch=4),
    )

    assert sum(r.inputs for r in reports) >= len(old)
    assert await runtime_store.list_inputs(runtime_id) == []
    if not _shared(runtime_store):
        assert sum(r.inputs for r in reports) == len(old), "no row counted twice"


async def test_cutoffs_in_the_future_and_empty_batches_are_refused(
    runtime_store: RuntimeStore,
) -> None:
    now = wall_now()
    later = now + timedelta(seconds=1)
    with pytest.raises(ValueError, match="sent_events_before"):
        await runtime_store.prune(now, sent_events_before=later, terminal_before=now)
    with pytest.raises(ValueError, match="terminal_before"):
        await runtime_store.prune(now, sent_events_before=now, terminal_before=later)
    with pytest.raises(ValueError, match="batch"):
        await runtime_store.prune(now, sent_events_before=now, terminal_before=now, batch=0)


@pytest.mark.unit
def test_a_report_adds_up_and_names_its_tables() -> None:
    total = PruneReport(1, 2, 3, 4) + PruneReport(events=10)
    assert total == PruneReport(11, 2, 3, 4)
    assert total.total == 20
    assert total.counts() == {"event_outbox": 11, "inputs": 2, "boundary_receipts": 3,
                              "processed_commands": 4}


def _shared(store: RuntimeStore) -> bool:
    """Whether other tests' rows may be in this store (the session's PostgreSQL database)."""
    return "postgresql" in repr(store)
