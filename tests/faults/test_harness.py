"""The fault harness fails a run for the reasons it promises to: a worker that exits on its own,
and a fault that never fires. A harness that let either pass would report a clean table for a
scenario that tested nothing."""

from __future__ import annotations

import asyncio

import pytest

from tests.faults.conftest import RunFactory

pytestmark = [pytest.mark.integration, pytest.mark.faults]


async def test_a_worker_that_exits_on_its_own_fails_the_run(fault_run: RunFactory) -> None:
    async with fault_run("self-test exit", 1, "selftest-exit", in_table=False) as run:
        worker = run.start_worker()
        await run.ready(worker)
        run.stream(run.prompts(40))
        await run.wait_published(10)
        # A clean exit, but nobody asked this worker to leave.
        await asyncio.to_thread(worker.terminate)
        assert not await run.wait()
        assert any("exited unexpectedly with 0" in p and "last" in p
                   for p in run.outcome.problems), run.outcome.problems
        with pytest.raises(AssertionError, match="exited unexpectedly"):
            await run.conclude()


async def test_a_fault_that_never_fires_fails_the_run(fault_run: RunFactory) -> None:
    async with fault_run("self-test no fault", 1, "selftest-nofault", in_table=False) as run:
        # Alone, the worker never hands a shard over: the point is never reached.
        worker = run.start_worker(fault="during_handover:1")
        await run.ready(worker)
        run.stream(run.prompts(40))
        assert await run.wait()
        run.expect_fault_fired(worker)
        with pytest.raises(AssertionError, match="the fault never fired"):
            await run.conclude()
