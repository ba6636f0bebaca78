"""Work a worker left behind (crashed or stopped with queued or staged inputs) is taken on by
the live workers of its deployment; work a live peer last wrote is left to that peer, and work
of another deployment sharing the database is left to that deployment."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from persistence.blobs import MemoryBlobStore
from persistence.factory import open_runtime_store
from schemas import InputPhase
from tests.integration.conftest import new_runtime_id
from worker.app import Worker
from worker.client import messages
from worker.driver import RuntimeDriver
from worker.testing import WorkerFactory, WorkerHarness

pytestmark = pytest.mark.integration


@pytest.fixture
async def harness(meerkat_worker: WorkerFactory) -> WorkerHarness:
    return await meerkat_worker()


def running(harness: WorkerHarness) -> Worker:
    assert harness.worker is not None
    return harness.worker


def database_of(harness: WorkerHarness) -> str:
    return harness.settings.database_url.get_secret_value()


async def _leave_queued_work(postgres_url: str, writer: str, group: str | None = None) -> str:
    """A runtime with one queued input, last written by ``writer`` of deployment ``group``, in
    no worker's memory."""
    store = await open_runtime_store(postgres_url, writer_id=writer, writer_group=group)
    try:
        runtime_id = new_runtime_id()
        envelope = messages.prompt(runtime_id, "left behind")
        async with RuntimeDriver(store, MemoryBlobStore()).transaction() as transaction:
            await transaction.accept_input(runtime_id, envelope.input)
            await transaction.commit()
        return runtime_id
    finally:
        await store.close()


async def test_work_left_by_a_gone_worker_is_resumed(harness: WorkerHarness) -> None:
    runtime_id = await _leave_queued_work(database_of(harness), "worker-that-crashed")

    assert await running(harness).resume_left_work() >= 1
    await harness.run_until_idle()

    store = running(harness).store
    assert store is not None
    [record] = await store.list_inputs(runtime_id)
    assert record.phase is InputPhase.CONSUMED


async def test_work_of_another_deployment_is_left_to_it(harness: WorkerHarness) -> None:
    database = database_of(harness)
    ours = await _leave_queued_work(database, "crashed-here", harness.topology.prefix)
    theirs = await _leave_queued_work(database, "crashed-there", "another-deployment")

    worker = running(harness)
    await worker.resume_left_work()  # one pass lists both, if it lists the other at all
    await harness.run_until_idle()

    store = worker.store
    assert store is not None
    assert [r.phase for r in await store.list_inputs(ours)] == [InputPhase.CONSUMED]
    assert [r.phase for r in await store.list_inputs(theirs)] == [InputPhase.QUEUED]
    assert worker.driver is not None
    assert worker.driver.cached(theirs) is None


async def test_work_of_a_live_peer_is_left_to_it(harness: WorkerHarness) -> None:
    worker = running(harness)
    store, membership = worker.store, worker.membership
    assert store is not None
    assert membership is not None
    await store.heartbeat("live-peer", now=datetime.now(UTC), ttl=timedelta(minutes=5),
                          group=harness.topology.prefix)
    await membership.tick()
    assert "live-peer" in membership.live
    runtime_id = await _leave_queued_work(database_of(harness), "live-peer")

    await worker.resume_left_work()

    assert worker.driver is not None
    assert worker.driver.cached(runtime_id) is None
    [record] = await store.list_inputs(runtime_id)
    assert record.phase is InputPhase.QUEUED
    await store.leave("live-peer")
