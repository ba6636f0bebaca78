"""One contract for every runtime store: memory, SQLite and PostgreSQL behave alike.

Decisions are built by hand here, so the suite pins the store's own promises (one transaction per
commit, compare-and-set on the version, unique receipts, keys and command ids, the outbox) apart
from the core that normally produces them. Every test uses fresh runtime ids, so the PostgreSQL
database is shared by the whole session.
"""

from __future__ import annotations

import asyncio
import dataclasses
from uuid import uuid4

import pytest

from persistence.errors import DuplicateRow, ReceiptConflict, StoreError, VersionConflict
from persistence.ports import RuntimeStore
from schemas import EventCode, EventEnvelope, InputPhase, RuntimePhase
from tests.contract.runtime_builders import (
    NOW,
    completed,
    created,
    event,
    new_blob_id,
    new_runtime_id,
    receipt,
    record,
    row,
    snapshot,
    step,
    unsent_ids,
)
from tests.fixtures.postgres import OpenAs
from worker.core.model import (
    Decision,
    DeleteInput,
    PutInput,
    PutReceipt,
    PutRuntime,
    PutSnapshot,
    RecordCommand,
    Runtime,
)


async def test_runtime_and_input_round_trip(runtime_store: RuntimeStore) -> None:
    queued = record(1, key=f"key-{uuid4()}", blob_ids=(new_blob_id(),))
    runtime_id = await created(runtime_store, queued)
    loaded = await runtime_store.load_runtime(runtime_id)
    assert loaded.row == row(runtime_id, 1)
    assert loaded.inputs == (queued,)
    assert loaded.receipts == frozenset()
    assert await runtime_store.get_input(runtime_id, queued.input_id) == queued
    assert await runtime_store.list_inputs(runtime_id) == [queued]


async def test_an_unknown_runtime_loads_empty(runtime_store: RuntimeStore) -> None:
    loaded = await runtime_store.load_runtime(new_runtime_id())
    assert (loaded.row, loaded.inputs, loaded.receipts) == (None, (), frozenset())
    assert await runtime_store.load_snapshot(new_runtime_id()) is None


async def test_terminal_inputs_are_not_loaded_but_still_deduplicate(
    runtime_store: RuntimeStore,
) -> None:
    key = f"key-{uuid4()}"
    consumed = record(1, phase=InputPhase.CONSUMED, key=key)
    abandoned = record(2, phase=InputPhase.ABANDONED)
    queued = record(3)
    runtime_id = await created(runtime_store, queued, abandoned, consumed)
    loaded = await runtime_store.load_runtime(runtime_id)
    assert loaded.inputs == (queued,)
    assert await runtime_store.find_input(runtime_id, consumed.input_id, None) == consumed.input_id
    assert await runtime_store.find_input(runtime_id, uuid4(), key) == consumed.input_id
    assert await runtime_store.find_input(runtime_id, queued.input_id, key) == queued.input_id
    assert await runtime_store.find_input(runtime_id, uuid4(), "other") is None
    assert await runtime_store.find_input(new_runtime_id(), consumed.input_id, key) is None
    assert await runtime_store.get_input(runtime_id, abandoned.input_id) == abandoned
    assert await runtime_store.list_inputs(runtime_id) == [consumed, abandoned, queued]


async def test_a_stale_version_is_refused_and_nothing_is_written(
    runtime_store: RuntimeStore,
) -> None:
    runtime_id = await created(runtime_store)
    for stale in (step(runtime_id, 1), step(runtime_id, 5)):
        late = dataclasses.replace(
            stale,
            mutations=(*stale.mutations, PutInput(record(), insert=True)),
            events=(event(runtime_id),),
        )
        with pytest.raises(VersionConflict) as caught:
            await runtime_store.commit([late])
        assert caught.value.runtime_id == runtime_id
    loaded = await runtime_store.load_runtime(runtime_id)
    assert (loaded.row, loaded.inputs) == (row(runtime_id, 1), ())
    assert await runtime_store.list_events(runtime_id) == []


async def test_a_conflict_in_a_later_decision_rolls_back_the_earlier_ones(
    runtime_store: RuntimeStore,
) -> None:
    first, second = await created(runtime_store), await created(runtime_store)
    good = step(first, 2, PutInput(record(), insert=True), events=(event(first),))
    stale = step(second, 7)
    with pytest.raises(VersionConflict):
        await runtime_store.commit([good, stale])
    loaded = await runtime_store.load_runtime(first)
    assert (loaded.row, loaded.inputs) == (row(first, 1), ())
    assert await runtime_store.list_events(first) == []


async def test_decisions_of_one_commit_apply_in_order(runtime_store: RuntimeStore) -> None:
    runtime_id = await created(runtime_store)
    queued = record(1)
    staged = dataclasses.replace(queued, phase=InputPhase.STAGED, attempt_count=1)
    await runtime_store.commit(
        [
            step(runtime_id, 2, PutInput(queued, insert=True)),
            step(runtime_id, 3, PutInput(staged, insert=False)),
        ]
    )
    loaded = await runtime_store.load_runtime(runtime_id)
    assert (loaded.row, loaded.inputs) == (row(runtime_id, 3), (staged,))


async def test_concurrent_writers_on_one_version_let_exactly_one_win(
    runtime_store: RuntimeStore,
) -> None:
    runtime_id = await created(runtime_store)
    contenders = [step(runtime_id, 2, PutInput(record(), insert=True)) for _ in range(2)]
    results = await asyncio.gather(
        *(runtime_store.commit([d]) for d in contenders), return_exceptions=True
    )
    assert sorted(type(r).__name__ for r in results) == ["NoneType", "VersionConflict"]
    assert len((await runtime_store.load_runtime(runtime_id)).inputs) == 1


async def test_a_duplicate_receipt_writes_nothing_of_its_commit(
    runtime_store: RuntimeStore,
) -> None:
    run_id = uuid4()
    applied = record(1, phase=InputPhase.APPLIED, run=(run_id, 1))
    runtime_id = await created(runtime_store, applied)
    first = receipt(runtime_id, run_id)
    await runtime_store.commit([step(runtime_id, 2, PutReceipt(first))])
    consumed = dataclasses.replace(applied, phase=InputPhase.CONSUMED)
    again = step(
        runtime_id,
        3,
        PutSnapshot(snapshot(runtime_id, run_id, 2)),
        PutInput(consumed, insert=False),
        PutInput(record(2), insert=True),
        PutReceipt(dataclasses.replace(first, message_count=9)),
        events=(event(runtime_id, EventCode.RUN_COMPLETED),),
    )
    with pytest.raises(ReceiptConflict) as caught:
        await runtime_store.commit([again])
    assert isinstance(caught.value, DuplicateRow)
    loaded = await runtime_store.load_runtime(runtime_id)
    assert (loaded.row, loaded.inputs) == (row(runtime_id, 2), (applied,))
    assert await runtime_store.load_snapshot(runtime_id) is None
    assert await runtime_store.list_events(runtime_id) == []
    assert await runtime_store.list_receipts(runtime_id) == [first]


async def test_duplicate_keys_and_ids_are_refused(runtime_store: RuntimeStore) -> None:
    key = f"key-{uuid4()}"
    owner = record(1, key=key)
    runtime_id = await created(runtime_store, owner, record(2), record(3))
    with pytest.raises(DuplicateRow) as by_key:
        await runtime_store.commit([step(runtime_id, 2, PutInput(record(4, key=key), insert=True))])
    assert by_key.value.what == "idempotency key"
    with pytest.raises(DuplicateRow) as by_id:
        await runtime_store.commit([step(runtime_id, 2, PutInput(owner, insert=True))])
    assert by_id.value.what == "input id"
    assert len(await runtime_store.list_inputs(runtime_id)) == 3
    await created(runtime_store, record(1, key=key))  # keys are unique per runtime only


async def test_rows_need_a_stored_runtime_and_updates_a_stored_input(
    runtime_store: RuntimeStore,
) -> None:
    orphan = Decision(
        runtime=Runtime(new_runtime_id()),
        mutations=(PutInput(record(), insert=True),),
        events=(),
    )
    with pytest.raises(StoreError):
        await runtime_store.commit([orphan])
    runtime_id = await created(runtime_store)
    with pytest.raises(StoreError):
        await runtime_store.commit([step(runtime_id, 2, PutInput(record(), insert=False))])
    assert (await runtime_store.load_runtime(runtime_id)).row == row(runtime_id, 1)


async def test_processed_commands_round_trip(runtime_store: RuntimeStore) -> None:
    runtime_id = await created(runtime_store)
    outcome = completed()
    record_command = RecordCommand(outcome.command_id, outcome.command_type, outcome, NOW)
    await runtime_store.commit([step(runtime_id, 2, record_command)])
    assert await runtime_store.find_command(runtime_id, outcome.command_id) == outcome
    assert await runtime_store.find_command(runtime_id, uuid4()) is None
    assert await runtime_store.find_command(new_runtime_id(), outcome.command_id) is None
    with pytest.raises(DuplicateRow) as caught:
        await runtime_store.commit([step(runtime_id, 3, record_command)])
    assert caught.value.what == "command id"
    assert (await runtime_store.load_runtime(runtime_id)).row == row(runtime_id, 2)


async def test_the_outbox_hands_out_committed_events_in_order(
    runtime_store: RuntimeStore,
) -> None:
    first, second = new_runtime_id(), new_runtime_id()
    e1, e2, e3 = event(first), event(first, EventCode.INPUT_QUEUED), event(second)
    await runtime_store.commit([step(first, 1, events=(e1, e2)), step(second, 1, events=(e3,))])
    unsent = await runtime_store.fetch_unsent_events(100_000)
    mine = [o for o in unsent if o.event.event_id in {e1.event_id, e2.event_id, e3.event_id}]
    assert [o.event for o in mine] == [e1, e2, e3]
    for item in mine:  # what the relay publishes, when the store hands out the stored text
        body = item.body if item.body is not None else item.event.model_dump_json().encode()
        assert EventEnvelope.model_validate_json(body) == item.event
        # what the AMQP properties are made of, read without parsing the body
        assert (item.event_id, item.runtime_id, item.code, item.at) == (
            item.event.event_id, item.event.runtime_id, item.event.code.value, item.event.at)
    assert [o.position for o in mine] == sorted(o.position for o in mine)
    await runtime_store.mark_events_sent([mine[0].position])
    await runtime_store.mark_events_sent([mine[0].position, mine[1].position])  # again: harmless
    still = await unsent_ids(runtime_store)
    assert e3.event_id in still
    assert e1.event_id not in still
    assert e2.event_id not in still
    assert await runtime_store.list_events(first) == [e2, e1]
    assert await runtime_store.list_events(first, limit=1) == [e2]
    assert await runtime_store.list_events(second) == [e3]


async def test_the_outbox_keeps_the_trace_context_each_event_was_committed_under(
    runtime_store: RuntimeStore,
) -> None:
    runtime_id = new_runtime_id()
    traced, also, plain = event(runtime_id), event(runtime_id), event(runtime_id)
    parent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    decision = dataclasses.replace(step(runtime_id, 1, events=(traced, also)), trace=parent)
    await runtime_store.commit([decision, step(runtime_id, 2, events=(plain,))])

    unsent = {o.event.event_id: o for o in await runtime_store.fetch_unsent_events(100_000)}

    assert unsent[traced.event_id].traceparent == parent
    assert unsent[also.event_id].traceparent == parent
    assert unsent[plain.event_id].traceparent is None
    for item in (unsent[traced.event_id], unsent[plain.event_id]):  # the event's JSON is as it was
        body = item.body if item.body is not None else item.event.model_dump_json().encode()
        assert b"traceparent" not in body
        assert EventEnvelope.model_validate_json(body) == item.event
    assert unsent[traced.event_id].event == traced


async def test_a_duplicate_event_id_writes_nothing(runtime_store: RuntimeStore) -> None:
    runtime_id = await created(runtime_store)
    repeated = event(runtime_id)
    await runtime_store.commit([step(runtime_id, 2, events=(repeated,))])
    with pytest.raises(DuplicateRow) as caught:
        await runtime_store.commit([step(runtime_id, 3, events=(event(runtime_id), repeated))])
    assert caught.value.what == "event id"
    assert await runtime_store.list_events(runtime_id) == [repeated]
    assert (await runtime_store.load_runtime(runtime_id)).row == row(runtime_id, 2)


async def test_a_commit_without_runtime_rows_is_one_transaction(
    runtime_store: RuntimeStore,
) -> None:
    runtime_id = await created(runtime_store)
    repeated = event(runtime_id)
    await runtime_store.commit([step(runtime_id, 2, events=(repeated,))])
    unfenced = Decision(
        runtime=Runtime(runtime_id, version=2),
        mutations=(PutSnapshot(snapshot(runtime_id, uuid4(), 1)),),
        events=(event(runtime_id), repeated),
    )
    with pytest.raises(DuplicateRow):
        await runtime_store.commit([unfenced])
    assert await runtime_store.load_snapshot(runtime_id) is None
    assert await runtime_store.list_events(runtime_id) == [repeated]


async def test_a_load_reports_the_receipts_of_applied_inputs(
    runtime_store: RuntimeStore,
) -> None:
    done, lost, queued_run = uuid4(), uuid4(), uuid4()
    applied = record(1, phase=InputPhase.APPLIED, run=(done, 1))
    pending = record(2, phase=InputPhase.APPLIED_PENDING_CONSUMPTION, run=(done, 2))
    unreceipted = record(3, phase=InputPhase.APPLIED, run=(lost, 1))
    requeued = record(4, phase=InputPhase.QUEUED, run=(queued_run, 1))
    runtime_id = await created(runtime_store, applied, pending, unreceipted, requeued)
    receipts = [
        receipt(runtime_id, run, seq, at)
        for at, (run, seq) in enumerate(((done, 1), (done, 2), (queued_run, 1)))
    ]
    await runtime_store.commit([step(runtime_id, 2, *(PutReceipt(r) for r in receipts))])
    loaded = await runtime_store.load_runtime(runtime_id)
    assert loaded.receipts == frozenset({(done, 1), (done, 2)})
    assert await runtime_store.list_receipts(runtime_id) == receipts[::-1]
    assert await runtime_store.list_receipts(runtime_id, limit=1) == [receipts[2]]


async def test_runtimes_load_at_once_as_each_loads_alone(runtime_store: RuntimeStore) -> None:
    done = uuid4()
    applied = record(1, phase=InputPhase.APPLIED, run=(done, 1))
    with_receipt = await created(runtime_store, applied, record(2))
    await runtime_store.commit([step(with_receipt, 2, PutReceipt(receipt(with_receipt, done)))])
    plain = await created(runtime_store, record(1), record(2, phase=InputPhase.CONSUMED),
                          record(3, phase=InputPhase.STAGED))
    empty = await created(runtime_store)
    missing = new_runtime_id()
    wanted = [plain, with_receipt, empty, missing]

    loaded = await runtime_store.load_runtimes(wanted)

    assert set(loaded) == set(wanted)
    for runtime_id in wanted:
        assert loaded[runtime_id] == await runtime_store.load_runtime(runtime_id), runtime_id
    assert loaded[with_receipt].receipts == frozenset({(done, 1)})
    assert loaded[missing].row is None
    assert await runtime_store.load_runtimes([]) == {}


async def test_the_snapshot_is_replaced_by_the_latest(runtime_store: RuntimeStore) -> None:
    runtime_id = await created(runtime_store)
    run_id = uuid4()
    for version, count in ((2, 1), (3, 5)):
        put = PutSnapshot(snapshot(runtime_id, run_id, count))
        await runtime_store.commit([step(runtime_id, version, put)])
    assert await runtime_store.load_snapshot(runtime_id) == snapshot(runtime_id, run_id, 5)


async def test_blob_references_follow_the_stored_inputs(runtime_store: RuntimeStore) -> None:
    shared, own = new_blob_id(), new_blob_id()
    kept = record(1, blob_ids=(shared,), phase=InputPhase.CONSUMED)
    dropped = record(2, blob_ids=(shared, own, own))
    runtime_id = await created(runtime_store, kept, dropped)
    assert {shared, own} <= await runtime_store.referenced_blob_ids()
    await runtime_store.commit([step(runtime_id, 2, DeleteInput(dropped.input_id))])
    referenced = await runtime_store.referenced_blob_ids()
    assert shared in referenced
    assert own not in referenced


async def test_a_deleted_input_is_gone(runtime_store: RuntimeStore) -> None:
    key = f"key-{uuid4()}"
    ephemeral, kept = record(1, key=key), record(2)
    runtime_id = await created(runtime_store, ephemeral, kept)
    await runtime_store.commit(
        [step(runtime_id, 2, DeleteInput(ephemeral.input_id), DeleteInput(uuid4()))]
    )
    assert (await runtime_store.load_runtime(runtime_id)).inputs == (kept,)
    assert await runtime_store.get_input(runtime_id, ephemeral.input_id) is None
    assert await runtime_store.find_input(runtime_id, ephemeral.input_id, key) is None


async def test_runtimes_with_pending_work_are_found(runtime_store: RuntimeStore) -> None:
    queued = await created(runtime_store, record(1), record(2, phase=InputPhase.CONSUMED))
    staged = await created(runtime_store, record(1, phase=InputPhase.STAGED))
    settled = await created(runtime_store, record(1, phase=InputPhase.ABANDONED))
    idle = await created(runtime_store)
    running = new_runtime_id()
    await runtime_store.commit(
        [
            Decision(
                runtime=Runtime(running, version=1),
                mutations=(PutRuntime(row(running, 1, RuntimePhase.RUNNING), 0),),
                events=(),
            )
        ]
    )
    pending = set(await runtime_store.runtimes_with_pending_work())
    assert {queued, staged, running} <= pending
    assert not {settled, idle} & pending
    assert len(await runtime_store.runtimes_with_pending_work(limit=1)) == 1



async def test_pending_work_of_live_writers_is_left_to_them(
    runtime_store: RuntimeStore, runtime_store_as: OpenAs
) -> None:
    mine = await created(await runtime_store_as("worker-a"), record(1))
    theirs = await created(await runtime_store_as("worker-b"), record(1))
    nobodys = await created(runtime_store, record(1))

    left = set(await runtime_store.runtimes_with_pending_work(exclude_writers=["worker-b"]))
    assert {mine, nobodys} <= left
    assert theirs not in left
    everything = set(await runtime_store.runtimes_with_pending_work())
    assert {mine, theirs, nobodys} <= everything


async def test_pending_work_of_another_deployment_is_left_to_it(
    runtime_store: RuntimeStore, runtime_store_as: OpenAs
) -> None:
    """Deployments sharing one database (each its own topology prefix) resume only their own
    runtimes, and those written by no deployment (a tool, or before groups were recorded)."""
    ours = await created(await runtime_store_as("worker-a", "blue"), record(1))
    theirs = await created(await runtime_store_as("worker-b", "green"), record(1))
    nobodys = await created(runtime_store, record(1))

    left = set(await runtime_store.runtimes_with_pending_work(group="blue"))
    assert {ours, nobodys} <= left
    assert theirs not in left
    assert theirs in set(await runtime_store.runtimes_with_pending_work(group="green"))
    assert {ours, theirs, nobodys} <= set(await runtime_store.runtimes_with_pending_work())


async def test_an_empty_commit_and_ping_do_nothing(runtime_store: RuntimeStore) -> None:
    await runtime_store.commit([])
    await runtime_store.mark_events_sent([])
    await runtime_store.ping()
