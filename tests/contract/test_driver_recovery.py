"""Recovery through the driver on every runtime store (DOMAIN.md §9): what a new process makes of
the rows a crashed one left, from every runtime phase that can be stored, and the receipt that
makes a boundary commit happen at most once."""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from uuid import UUID

import pytest

from persistence.errors import ReceiptConflict, VersionConflict
from persistence.ports import RuntimeStore
from schemas import (
    Accepted,
    AttemptsExhausted,
    Durability,
    InputPhase,
    NotReady,
    Rejected,
    RuntimeDestroyed,
    RuntimePhase,
)
from tests.contract.driver_fixtures import (
    Harness,
    destroy,
    new_runtime_id,
    prompt,
    retire,
    run_next,
    stop,
)
from worker.core import (
    MAX_STAGE_ATTEMPTS,
    BoundaryReceipt,
    Decision,
    Mutation,
    PutInput,
    PutReceipt,
    PutRuntime,
    RecoveryReport,
    Runtime,
    commit_boundary,
)
from worker.runs.executors.echo import execute


async def test_a_staged_input_is_requeued_and_the_crashed_run_is_fenced_out(
    harness: Harness,
) -> None:
    runtime_id = new_runtime_id()
    item = prompt()
    await harness.accept_input(runtime_id, item)
    started = await harness.start_run(runtime_id)
    assert started is not None
    result = await execute(started.request)

    restarted = harness.restart()
    runtime = await restarted.driver.load(runtime_id)

    assert runtime.phase is RuntimePhase.IDLE
    record = runtime.inputs[item.header.id]
    assert (record.phase, record.attempt_count, record.recovery_count) == (InputPhase.QUEUED, 1, 1)
    assert restarted.driver.recoveries[runtime_id] == RecoveryReport(1, 1, 0)
    assert await harness.phases(runtime_id) == {item.header.id: InputPhase.QUEUED}
    # The old process may still finish its run: the recovery's version bump refuses it.
    with pytest.raises(VersionConflict):
        await harness.finish_run(runtime_id, started.run_id, result)
    assert await harness.inner_store.list_receipts(runtime_id) == []
    await run_next(restarted, runtime_id)
    assert await harness.phases(runtime_id) == {item.header.id: InputPhase.CONSUMED}


async def _apply_by_hand(store: RuntimeStore, runtime_id: str, phase: InputPhase) -> UUID:
    """Move the staged input of the current run to ``phase`` as a crashed process might have
    left it; returns the run id."""
    stored = await store.load_runtime(runtime_id)
    assert stored.row is not None
    assert stored.row.current_run_id is not None
    (staged,) = stored.inputs
    now = datetime.now(UTC)
    row = dataclasses.replace(stored.row, version=stored.row.version + 1, updated_at=now)
    applied = dataclasses.replace(staged, phase=phase, boundary_sequence=1, updated_at=now)
    mutations: tuple[Mutation, ...] = (
        PutRuntime(row, expected_version=stored.row.version),
        PutInput(applied, insert=False),
    )
    runtime = Runtime(runtime_id, phase=row.phase, version=row.version)
    await store.commit([Decision(runtime=runtime, mutations=mutations, events=())])
    return stored.row.current_run_id


async def _put_receipt(store: RuntimeStore, runtime_id: str, run_id: UUID, input_id: UUID) -> None:
    stored = await store.load_runtime(runtime_id)
    assert stored.row is not None
    now = datetime.now(UTC)
    row = dataclasses.replace(stored.row, version=stored.row.version + 1, updated_at=now)
    receipt = BoundaryReceipt(runtime_id, run_id, 1, (input_id,), "0" * 64, 1, now)
    mutations = (PutRuntime(row, expected_version=stored.row.version), PutReceipt(receipt))
    runtime = Runtime(runtime_id, phase=row.phase, version=row.version)
    await store.commit([Decision(runtime=runtime, mutations=mutations, events=())])


@pytest.mark.parametrize("phase", [InputPhase.APPLIED, InputPhase.APPLIED_PENDING_CONSUMPTION])
@pytest.mark.parametrize("with_receipt", [True, False], ids=["receipt", "no_receipt"])
async def test_an_applied_input_is_consumed_with_its_receipt_and_requeued_without(
    harness: Harness, phase: InputPhase, with_receipt: bool
) -> None:
    runtime_id = new_runtime_id()
    item = prompt()
    await harness.accept_input(runtime_id, item)
    assert await harness.start_run(runtime_id) is not None
    run_id = await _apply_by_hand(harness.inner_store, runtime_id, phase)
    if with_receipt:
        await _put_receipt(harness.inner_store, runtime_id, run_id, item.header.id)

    restarted = harness.restart()
    runtime = await restarted.driver.load(runtime_id)

    expected = InputPhase.CONSUMED if with_receipt else InputPhase.QUEUED
    assert await harness.phases(runtime_id) == {item.header.id: expected}
    assert runtime.phase is RuntimePhase.IDLE
    assert (item.header.id in runtime.inputs) is not with_receipt
    report = restarted.driver.recoveries[runtime_id]
    assert report == RecoveryReport(1, 0 if with_receipt else 1, 0)
    assert (await restarted.start_run(runtime_id) is None) is with_receipt


async def test_ephemeral_inputs_are_discarded_on_recovery(harness: Harness) -> None:
    runtime_id = new_runtime_id()
    durable, ephemeral = prompt(), prompt(durability=Durability.EPHEMERAL)
    for item in (durable, ephemeral):
        await harness.accept_input(runtime_id, item)

    restarted = harness.restart()
    runtime = await restarted.driver.load(runtime_id)

    assert list(runtime.inputs) == [durable.header.id]
    assert await harness.phases(runtime_id) == {durable.header.id: InputPhase.QUEUED}
    assert restarted.driver.recoveries[runtime_id] == RecoveryReport(1, 0, 1)


@dataclasses.dataclass(frozen=True)
class Scenario:
    setup: Callable[[Harness, str], Awaitable[None]]
    recovered: RuntimePhase
    refusal: Rejected | None
    """What new input gets after the restart (None: it is accepted)."""
    runs: bool
    """Whether queued work runs after the restart."""


async def _queued(harness: Harness, runtime_id: str) -> None:
    await harness.accept_input(runtime_id, prompt())


async def _running(harness: Harness, runtime_id: str) -> None:
    await _queued(harness, runtime_id)
    assert await harness.start_run(runtime_id) is not None


async def _running_retired(harness: Harness, runtime_id: str) -> None:
    await _queued(harness, runtime_id)
    await _queued(harness, runtime_id)
    await harness.apply_command(runtime_id, retire())
    assert await harness.start_run(runtime_id) is not None


async def _retired(harness: Harness, runtime_id: str) -> None:
    await _queued(harness, runtime_id)
    await harness.apply_command(runtime_id, retire())


async def _stopped(harness: Harness, runtime_id: str) -> None:
    await _queued(harness, runtime_id)
    await harness.apply_command(runtime_id, stop())


async def _destroyed(harness: Harness, runtime_id: str) -> None:
    await _queued(harness, runtime_id)
    await harness.apply_command(runtime_id, destroy())


def _not_ready(phase: RuntimePhase) -> Rejected:
    return Rejected(reason=NotReady(state=phase))


SCENARIOS = {
    "idle": Scenario(_queued, RuntimePhase.IDLE, None, True),
    "running": Scenario(_running, RuntimePhase.IDLE, None, True),
    "running_from_retired": Scenario(
        _running_retired, RuntimePhase.RETIRED, _not_ready(RuntimePhase.RETIRED), True
    ),
    "retired": Scenario(_retired, RuntimePhase.RETIRED, _not_ready(RuntimePhase.RETIRED), True),
    "stopped": Scenario(_stopped, RuntimePhase.STOPPED, _not_ready(RuntimePhase.STOPPED), False),
    "destroyed": Scenario(
        _destroyed, RuntimePhase.DESTROYED, Rejected(reason=RuntimeDestroyed()), False
    ),
}


@pytest.mark.parametrize("name", list(SCENARIOS))
async def test_recovery_from_every_stored_phase(harness: Harness, name: str) -> None:
    scenario = SCENARIOS[name]
    runtime_id = new_runtime_id()
    await scenario.setup(harness, runtime_id)
    before = (await harness.inner_store.load_runtime(runtime_id)).row
    assert before is not None

    restarted = harness.restart()
    runtime = await restarted.driver.load(runtime_id)

    assert runtime.phase is scenario.recovered
    assert runtime.current_run is None
    after = (await harness.inner_store.load_runtime(runtime_id)).row
    assert after is not None
    assert (after.phase, after.version, after.current_run_id) == (
        scenario.recovered,
        before.version + 1,
        None,
    )
    assert all(r.phase is not InputPhase.STAGED for r in runtime.inputs.values())
    outcome = await restarted.accept_input(runtime_id, prompt())
    if scenario.refusal is None:
        assert isinstance(outcome, Accepted)
    else:
        assert outcome == scenario.refusal
    if scenario.runs:
        await run_next(restarted, runtime_id)
    else:
        assert await restarted.start_run(runtime_id) is None


async def test_a_receipt_conflict_writes_nothing(harness: Harness) -> None:
    runtime_id = new_runtime_id()
    item = prompt()
    await harness.accept_input(runtime_id, item)
    started = await harness.start_run(runtime_id)
    assert started is not None
    staged = harness.driver.cached(runtime_id)
    assert staged is not None
    result = await execute(started.request)
    assert await harness.finish_run(runtime_id, started.run_id, result)
    committed = harness.driver.cached(runtime_id)
    assert committed is not None
    store = harness.inner_store
    before = (
        (await store.load_runtime(runtime_id)).row,
        await store.list_inputs(runtime_id),
        await store.list_receipts(runtime_id),
        await store.load_snapshot(runtime_id),
        await harness.event_codes(runtime_id),
    )
    # The same run's boundary once more: the driver itself refuses (the run is over) ...
    assert not await harness.finish_run(runtime_id, started.run_id, result)
    # ... and a boundary decided on a stale copy, fenced on the current version so that only
    # the receipt can refuse it, is refused whole: the snapshot written before it is undone.
    replay = commit_boundary(
        dataclasses.replace(staged, version=committed.version),
        harness.driver.context(),
        run_id=started.run_id,
        session={"transcript": ["replayed"]},
        message_count=99,
    )
    with pytest.raises(ReceiptConflict):
        await harness.store.commit([replay])

    assert harness.driver.cached(runtime_id) is committed
    after = (
        (await store.load_runtime(runtime_id)).row,
        await store.list_inputs(runtime_id),
        await store.list_receipts(runtime_id),
        await store.load_snapshot(runtime_id),
        await harness.event_codes(runtime_id),
    )
    assert after == before
    assert len(before[2]) == 1


async def test_an_input_whose_runs_keep_crashing_the_worker_is_abandoned(
    harness: Harness,
) -> None:
    runtime_id = new_runtime_id()
    item = prompt()
    await harness.accept_input(runtime_id, item)
    process = harness

    for _ in range(MAX_STAGE_ATTEMPTS):
        assert await process.start_run(runtime_id) is not None
        process = process.restart()  # the worker dies mid-run
        await process.driver.load(runtime_id)

    stored = await harness.inner_store.get_input(runtime_id, item.header.id)
    assert stored is not None
    assert stored.phase is InputPhase.ABANDONED
    assert stored.abandon_reason == AttemptsExhausted(attempts=MAX_STAGE_ATTEMPTS)
    assert await process.start_run(runtime_id) is None


async def test_a_window_of_runtimes_is_loaded_in_one_read_and_recovered_as_alone(
    harness: Harness,
) -> None:
    crashed = new_runtime_id()
    await harness.accept_input(crashed, prompt("in a run when the worker died"))
    assert await harness.start_run(crashed) is not None
    settled = new_runtime_id()
    await harness.accept_input(settled, prompt("queued"))
    fresh = new_runtime_id()
    after = harness.restart()  # a new process: nothing cached

    async with after.driver.transaction() as transaction:
        await transaction.prefetch([crashed, settled, fresh, crashed])
        loads = [entry for entry in after.journal if entry.startswith("store.load_runtime")]
        assert loads == ["store.load_runtimes"]
        requeued = after.driver.cached(crashed)
        assert requeued is not None
        assert requeued.current_run is None
        assert [r.phase for r in requeued.inputs.values()] == [InputPhase.QUEUED]
        assert after.driver.cached(settled) is not None
        await transaction.accept_input(fresh, prompt("a new runtime"))
        await transaction.commit()
    assert set((await after.phases(crashed)).values()) == {InputPhase.QUEUED}
    assert set((await after.phases(fresh)).values()) == {InputPhase.QUEUED}
