"""Lifecycle commands through the driver on every runtime store (DOMAIN.md §5, §8, §11): their
effects on queued work, their rollback when the commit fails, and their dedupe by command id."""

from __future__ import annotations

from collections.abc import Callable
from uuid import uuid4

import pytest

from persistence.errors import StoreUnavailable
from schemas import (
    Accepted,
    AnyCommand,
    CancelRun,
    CommandCompleted,
    CommandReport,
    IllegalCommand,
    InputPhase,
    NotReady,
    Recycle,
    Rejected,
    RuntimeDestroyed,
    RuntimePhase,
)
from tests.contract.driver_fixtures import (
    Harness,
    abandon,
    destroy,
    new_runtime_id,
    prompt,
    reset,
    resume,
    retire,
    run_next,
    stop,
)
from worker.runs.executors import RunResult
from worker.runs.executors.echo import execute


def _completed(outcome: object) -> CommandCompleted:
    assert isinstance(outcome, CommandCompleted), outcome
    return outcome


async def _stored_phase(harness: Harness, runtime_id: str) -> RuntimePhase:
    row = (await harness.inner_store.load_runtime(runtime_id)).row
    assert row is not None
    return row.phase


async def _reasons(harness: Harness, runtime_id: str) -> set[str]:
    records = await harness.inner_store.list_inputs(runtime_id)
    return {r.abandon_reason.reason for r in records if r.abandon_reason is not None}


COMMANDS: dict[str, Callable[[], AnyCommand]] = {
    "retire": retire,
    "reset": reset,
    "stop": stop,
    "destroy": destroy,
}


@pytest.mark.parametrize("name", list(COMMANDS))
async def test_a_failed_lifecycle_commit_restores_the_pre_command_state(
    harness: Harness, name: str
) -> None:
    runtime_id = new_runtime_id()
    queued = prompt()
    await harness.accept_input(runtime_id, queued)
    before = harness.driver.cached(runtime_id)
    command = COMMANDS[name]()
    harness.store.fail_next("commit")

    with pytest.raises(StoreUnavailable):
        await harness.apply_command(runtime_id, command)

    assert harness.driver.cached(runtime_id) is before
    assert await _stored_phase(harness, runtime_id) is RuntimePhase.IDLE
    assert await harness.inner_store.find_command(runtime_id, command.command_id) is None
    assert await harness.phases(runtime_id) == {queued.header.id: InputPhase.QUEUED}
    later = prompt()
    assert isinstance(await harness.accept_input(runtime_id, later), Accepted)
    retried = _completed(await harness.apply_command(runtime_id, command))
    assert not retried.deduplicated
    assert await _stored_phase(harness, runtime_id) is retried.state


async def test_a_failed_abandon_leaves_the_input_live(harness: Harness) -> None:
    runtime_id = new_runtime_id()
    item = prompt()
    await harness.accept_input(runtime_id, item)
    command = abandon(item.header.id)
    harness.store.fail_next("commit")

    with pytest.raises(StoreUnavailable):
        await harness.apply_command(runtime_id, command)

    runtime = harness.driver.cached(runtime_id)
    assert runtime is not None
    assert runtime.inputs[item.header.id].phase is InputPhase.QUEUED
    assert await harness.phases(runtime_id) == {item.header.id: InputPhase.QUEUED}
    retried = _completed(await harness.apply_command(runtime_id, command))
    assert retried.report == CommandReport(inputs_abandoned=1)
    assert await harness.phases(runtime_id) == {item.header.id: InputPhase.ABANDONED}


async def test_retire_drains_queued_work_and_refuses_new_input(harness: Harness) -> None:
    runtime_id = new_runtime_id()
    first, second = prompt(), prompt()
    for item in (first, second):
        await harness.accept_input(runtime_id, item)

    retired = _completed(await harness.apply_command(runtime_id, retire()))

    assert retired.state is RuntimePhase.RETIRED
    assert retired.report == CommandReport(inputs_abandoned=0, inputs_pending_drain=2)
    refused = await harness.accept_input(runtime_id, prompt())
    assert refused == Rejected(reason=NotReady(state=RuntimePhase.RETIRED))
    await run_next(harness, runtime_id)
    await run_next(harness, runtime_id)
    assert await harness.start_run(runtime_id) is None
    assert await harness.phases(runtime_id) == {
        first.header.id: InputPhase.CONSUMED,
        second.header.id: InputPhase.CONSUMED,
    }
    assert await _stored_phase(harness, runtime_id) is RuntimePhase.RETIRED


async def test_retiring_a_running_runtime_retires_it_when_the_run_ends(harness: Harness) -> None:
    runtime_id = new_runtime_id()
    await harness.accept_input(runtime_id, prompt())
    started = await harness.start_run(runtime_id)
    assert started is not None

    retired = _completed(await harness.apply_command(runtime_id, retire()))

    assert retired.state is RuntimePhase.RUNNING
    assert retired.report == CommandReport(inputs_abandoned=0, inputs_pending_drain=1)
    assert await _stored_phase(harness, runtime_id) is RuntimePhase.RUNNING
    assert await harness.fail_run(runtime_id, started.run_id, "executor gave up")
    assert await _stored_phase(harness, runtime_id) is RuntimePhase.RETIRED
    await run_next(harness, runtime_id)  # the requeued input still drains
    assert set((await harness.phases(runtime_id)).values()) == {InputPhase.CONSUMED}


async def test_retire_with_abandon_pending_abandons_queued_work(harness: Harness) -> None:
    runtime_id = new_runtime_id()
    items = [prompt(), prompt()]
    for item in items:
        await harness.accept_input(runtime_id, item)

    retired = _completed(
        await harness.apply_command(runtime_id, retire(abandon_pending=True))
    )

    assert retired.report == CommandReport(inputs_abandoned=2, inputs_pending_drain=0)
    assert set((await harness.phases(runtime_id)).values()) == {InputPhase.ABANDONED}
    assert await _reasons(harness, runtime_id) == {"retired"}
    assert await harness.start_run(runtime_id) is None


async def test_reset_is_refused_while_running(harness: Harness) -> None:
    runtime_id = new_runtime_id()
    item = prompt()
    await harness.accept_input(runtime_id, item)
    started = await harness.start_run(runtime_id)
    assert started is not None
    row_before = (await harness.inner_store.load_runtime(runtime_id)).row

    command = reset()

    refused = await harness.apply_command(runtime_id, command)

    assert isinstance(refused, Rejected)
    assert isinstance(refused.reason, IllegalCommand)
    assert refused.reason.state is RuntimePhase.RUNNING
    assert (await harness.inner_store.load_runtime(runtime_id)).row == row_before
    assert await harness.phases(runtime_id) == {item.header.id: InputPhase.STAGED}
    # A refusal records nothing under the command id: once legal, the same command applies.
    await harness.finish_run(runtime_id, started.run_id, await execute(started.request))
    applied = _completed(await harness.apply_command(runtime_id, command))
    assert (applied.state, applied.deduplicated) == (RuntimePhase.IDLE, False)


async def test_reset_after_retire_accepts_again(harness: Harness) -> None:
    runtime_id = new_runtime_id()
    queued = prompt()
    await harness.accept_input(runtime_id, queued)
    await harness.apply_command(runtime_id, retire())

    after = _completed(await harness.apply_command(runtime_id, reset()))

    assert after.state is RuntimePhase.IDLE
    assert after.report == CommandReport(inputs_abandoned=1)
    assert isinstance(await harness.accept_input(runtime_id, prompt()), Accepted)
    assert (await harness.phases(runtime_id))[queued.header.id] is InputPhase.ABANDONED


async def test_destroy_abandons_everything_and_stays_destroyed_after_a_restart(
    harness: Harness,
) -> None:
    runtime_id = new_runtime_id()
    for item in (prompt(), prompt()):
        await harness.accept_input(runtime_id, item)
    started = await harness.start_run(runtime_id)
    assert started is not None

    destroyed = _completed(await harness.apply_command(runtime_id, destroy()))

    assert destroyed.state is RuntimePhase.DESTROYED
    assert destroyed.report == CommandReport(inputs_abandoned=2)
    assert set((await harness.phases(runtime_id)).values()) == {InputPhase.ABANDONED}
    assert await _reasons(harness, runtime_id) == {"destroyed"}
    result = await harness.accept_input(runtime_id, prompt())
    assert result == Rejected(reason=RuntimeDestroyed())
    late = RunResult(session={"transcript": []}, message_count=0)
    assert not await harness.finish_run(runtime_id, started.run_id, late)
    restarted = harness.restart()
    for process in (harness, restarted):
        assert await process.accept_input(runtime_id, prompt()) == Rejected(
            reason=RuntimeDestroyed()
        )
        assert await process.apply_command(runtime_id, resume()) == Rejected(
            reason=RuntimeDestroyed()
        )
    assert (await restarted.driver.load(runtime_id)).phase is RuntimePhase.DESTROYED
    assert await _stored_phase(harness, runtime_id) is RuntimePhase.DESTROYED
    assert await harness.inner_store.list_receipts(runtime_id) == []


async def test_stop_abandons_everything_until_resumed(harness: Harness) -> None:
    runtime_id = new_runtime_id()
    for item in (prompt(), prompt()):
        await harness.accept_input(runtime_id, item)
    assert await harness.start_run(runtime_id) is not None

    stopped = _completed(await harness.apply_command(runtime_id, stop()))

    assert stopped.state is RuntimePhase.STOPPED
    assert stopped.report == CommandReport(inputs_abandoned=2)
    assert set((await harness.phases(runtime_id)).values()) == {InputPhase.ABANDONED}
    assert await _reasons(harness, runtime_id) == {"stopped"}
    refused = await harness.accept_input(runtime_id, prompt())
    assert refused == Rejected(reason=NotReady(state=RuntimePhase.STOPPED))
    resumed = _completed(await harness.restart().apply_command(runtime_id, resume()))
    assert resumed.state is RuntimePhase.IDLE


async def test_a_redelivered_command_answers_its_stored_outcome_after_a_restart(
    harness: Harness,
) -> None:
    runtime_id = new_runtime_id()
    first = prompt()
    await harness.accept_input(runtime_id, first)
    command = reset()
    original = _completed(await harness.apply_command(runtime_id, command))
    restarted = harness.restart()
    later = prompt()
    await restarted.accept_input(runtime_id, later)
    row_before = (await harness.inner_store.load_runtime(runtime_id)).row
    events_before = await harness.event_codes(runtime_id)

    again = await restarted.apply_command(runtime_id, command)

    assert again == original.model_copy(update={"deduplicated": True})
    assert again.report == CommandReport(inputs_abandoned=1)
    assert (await harness.inner_store.load_runtime(runtime_id)).row == row_before
    assert await harness.event_codes(runtime_id) == events_before
    assert await harness.phases(runtime_id) == {
        first.header.id: InputPhase.ABANDONED,
        later.header.id: InputPhase.QUEUED,
    }


async def test_recycle_rebuilds_the_runtime_from_the_store_and_keeps_its_work(
    harness: Harness,
) -> None:
    runtime_id = new_runtime_id()
    items = [prompt(), prompt()]
    for item in items:
        await harness.accept_input(runtime_id, item)

    recycled = _completed(
        await harness.apply_command(runtime_id, Recycle(command_id=uuid4()))
    )

    assert recycled.report == CommandReport(inputs_transferred=2)
    assert harness.driver.cached(runtime_id) is None
    runtime = await harness.driver.load(runtime_id)
    assert [runtime.inputs[i.header.id].phase for i in items] == [InputPhase.QUEUED] * 2
    await run_next(harness, runtime_id)
    await run_next(harness, runtime_id)
    assert set((await harness.phases(runtime_id)).values()) == {InputPhase.CONSUMED}


async def test_cancel_run_abandons_the_staged_inputs_and_discards_the_result(
    harness: Harness,
) -> None:
    runtime_id = new_runtime_id()
    staged, waiting = prompt(), prompt()
    for item in (staged, waiting):
        await harness.accept_input(runtime_id, item)
    started = await harness.start_run(runtime_id)
    assert started is not None

    cancelled = _completed(
        await harness.apply_command(runtime_id, CancelRun(command_id=uuid4()))
    )

    assert (cancelled.state, cancelled.report) == (
        RuntimePhase.IDLE,
        CommandReport(inputs_abandoned=1),
    )
    late = RunResult(session={"transcript": []}, message_count=0)
    assert not await harness.finish_run(runtime_id, started.run_id, late)
    assert await harness.inner_store.list_receipts(runtime_id) == []
    assert await harness.phases(runtime_id) == {
        staged.header.id: InputPhase.ABANDONED,
        waiting.header.id: InputPhase.QUEUED,
    }
