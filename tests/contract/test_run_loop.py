"""The run loop against every store: a store that is briefly away neither loses a finished run
nor leaves the runtime stuck, and a blob store outage is not counted as a failed attempt."""

from __future__ import annotations

import asyncio

import pytest

from persistence.errors import CommitOutcomeUnknown, StoreUnavailable
from schemas import InputPhase
from tests.contract.driver_fixtures import Harness, new_runtime_id, prompt, retire
from tests.unit.images import inline_image
from worker.core import SessionSnapshot
from worker.runs.executors import RunRequest, RunResult
from worker.runs.executors.echo import execute
from worker.runs.loop import RunLoop


async def _run_to_idle(harness: Harness, loop: RunLoop, runtime_id: str) -> None:
    runtime = await harness.driver.load(runtime_id)
    loop.wake(runtime_id, runtime.signal)
    await asyncio.wait_for(loop.wait_idle(), 60)


async def test_a_boundary_commit_that_fails_briefly_is_retried(harness: Harness) -> None:
    runtime_id = new_runtime_id()
    item = prompt("hello")
    await harness.accept_input(runtime_id, item)
    finished = asyncio.Event()

    async def executor(run: RunRequest) -> RunResult:
        result = await execute(run)
        harness.store.fail_next("commit", times=2)  # the boundary commit fails twice
        finished.set()
        return result

    async with harness.running(executor) as loop:
        await _run_to_idle(harness, loop, runtime_id)

    assert finished.is_set()
    assert (await harness.phases(runtime_id))[item.header.id] is InputPhase.CONSUMED
    assert loop.runs_completed == 1
    stored = await harness.store.get_input(runtime_id, item.header.id)
    assert stored is not None
    assert stored.attempt_count == 1


async def test_a_store_away_through_every_retry_does_not_leave_the_runtime_running(
    harness: Harness,
) -> None:
    runtime_id = new_runtime_id()
    item = prompt("hello")
    await harness.accept_input(runtime_id, item)
    calls = 0

    async def executor(run: RunRequest) -> RunResult:
        nonlocal calls
        calls += 1
        if calls == 1:  # every retry of the first boundary commit fails
            harness.store.fail_next("commit", times=6)
        return await execute(run)

    async with harness.running(executor) as loop:
        await _run_to_idle(harness, loop, runtime_id)

    # The first run was given up to recovery (requeued); the second one committed.
    assert calls == 2
    assert (await harness.phases(runtime_id))[item.header.id] is InputPhase.CONSUMED
    stored = await harness.store.get_input(runtime_id, item.header.id)
    assert stored is not None
    assert stored.attempt_count == 2


async def test_a_store_away_through_every_restore_retry_gives_the_run_up_to_recovery(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The run was staged, then the database went away: its snapshot could not be read through
    every retry, nor could the run be failed. The run is given up to recovery and runs again
    once the store answers, instead of leaving the runtime "running" with nobody running it."""
    runtime_id = new_runtime_id()
    item = prompt("hello")
    await harness.accept_input(runtime_id, item)
    store = harness.store
    real_load_snapshot = store.load_snapshot
    reads = 0

    async def load_snapshot(runtime: str) -> SessionSnapshot | None:
        nonlocal reads
        reads += 1
        if reads <= 5:  # every try of the first restore
            if reads == 5:
                store.fail_next("commit", times=2)  # and the database stays away a while
            raise StoreUnavailable("injected fault: load_snapshot")
        return await real_load_snapshot(runtime)

    monkeypatch.setattr(store, "load_snapshot", load_snapshot)
    async with harness.running(execute) as loop:
        await _run_to_idle(harness, loop, runtime_id)

    assert (await harness.phases(runtime_id))[item.header.id] is InputPhase.CONSUMED
    assert loop.runs_completed == 1
    reloaded = await harness.driver.load(runtime_id)
    assert reloaded.current_run is None


async def test_a_blob_store_outage_while_restoring_images_is_waited_out(
    harness: Harness,
) -> None:
    runtime_id = new_runtime_id()
    item = prompt("look", images=(inline_image(),))
    await harness.accept_input(runtime_id, item)
    harness.blobs.fail_next("get", times=2)

    started = await harness.start_run(runtime_id)

    assert started is not None
    assert harness.blobs.calls["get"] >= 3


async def test_a_stale_cache_during_a_run_keeps_the_run(harness: Harness) -> None:
    runtime_id = new_runtime_id()
    first, second = prompt("first"), prompt("second")
    await harness.accept_input(runtime_id, first)
    started = await harness.start_run(runtime_id)
    assert started is not None
    # Another message's commit dies during COMMIT (it did write): the cache is dropped.
    harness.store.fail_next("commit", when="after", error=CommitOutcomeUnknown("cut"))
    with pytest.raises(CommitOutcomeUnknown):
        await harness.accept_input(runtime_id, second)
    assert harness.driver.cached(runtime_id) is None

    result = await execute(started.request)
    assert await harness.finish_run(runtime_id, started.run_id, result)

    phases = await harness.phases(runtime_id)
    assert phases[first.header.id] is InputPhase.CONSUMED
    assert phases[second.header.id] is InputPhase.QUEUED
    stored = await harness.store.get_input(runtime_id, first.header.id)
    assert stored is not None
    assert stored.attempt_count == 1


async def test_the_cache_forgets_runtimes_at_rest_past_its_cap(harness: Harness) -> None:
    driver = harness.driver
    driver.max_cached_runtimes = 2
    busy, idle_ids = new_runtime_id(), [new_runtime_id() for _ in range(3)]
    await harness.accept_input(busy, prompt("waiting"))  # a queued input: never evicted
    for runtime_id in idle_ids:
        await harness.accept_input(runtime_id, prompt("dropped"))
        await harness.apply_command(runtime_id, retire(abandon_pending=True))  # at rest
    assert driver.cached(busy) is not None
    assert [r for r in idle_ids if driver.cached(r) is not None] == idle_ids[-1:]
    reloaded = await driver.load(idle_ids[0])
    assert reloaded.phase.value == "retired"


async def test_a_backlog_runs_in_order_with_each_finish_staging_the_next_run(
    harness: Harness,
) -> None:
    runtime_id = new_runtime_id()
    items = [prompt(f"p{i}") for i in range(3)]
    for item in items:
        await harness.accept_input(runtime_id, item)
    seen: list[str] = []

    async def executor(run: RunRequest) -> RunResult:
        seen.extend(str(i.header.id) for i in run.inputs)
        return await execute(run)

    commits_before = harness.journal.count("store.commit")
    async with harness.running(executor) as loop:
        await _run_to_idle(harness, loop, runtime_id)

    assert seen == [str(i.header.id) for i in items]  # a prompt runs alone, in order
    assert set((await harness.phases(runtime_id)).values()) == {InputPhase.CONSUMED}
    assert loop.runs_completed == 3
    # one stage, then each finish stages the next: 1 + 3 commits, not 2 per run
    assert harness.journal.count("store.commit") - commits_before == 4
    runtime = await harness.driver.load(runtime_id)
    assert runtime.current_run is None
    assert len(await harness.inner_store.list_receipts(runtime_id)) == 3
