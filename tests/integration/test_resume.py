"""Work a worker left behind (crashed or stopped with queued or staged inputs) is taken on by
the live workers of its deployment; work a live peer last wrote is left to that peer, and work
of another deployment sharing the database is left to that deployment."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from persistence.blobs import MemoryBlobStore
from persistence.factory import open_runtime_store
from schemas import InputPhase
from tests.integration.conftest import Stack, new_runtime_id
from worker.cli.publish import build_prompt
from worker.driver import RuntimeDriver

pytestmark = pytest.mark.integration


async def _leave_queued_work(postgres_url: str, writer: str, group: str | None = None) -> str:
    """A runtime with one queued input, last written by ``writer`` of deployment ``group``, in
    no worker's memory."""
    store = await open_runtime_store(postgres_url, writer_id=writer, writer_group=group)
    try:
        runtime_id = new_runtime_id()
        envelope = build_prompt(runtime_id, "left behind", [])
        async with RuntimeDriver(store, MemoryBlobStore()).transaction() as transaction:
            await transaction.accept_input(runtime_id, envelope.input)
            await transaction.commit()
        return runtime_id
    finally:
        await store.close()


async def test_work_left_by_a_gone_worker_is_resumed(stack: Stack, postgres_url: str) -> None:
    runtime_id = await _leave_queued_work(postgres_url, "worker-that-crashed")

    assert await stack.worker.resume_left_work() >= 1
    await stack.worker.run_until_idle()

    store = stack.worker.store
    assert store is not None
    [record] = await store.list_inputs(runtime_id)
    assert record.phase is InputPhase.CONSUMED


async def test_work_of_another_deployment_is_left_to_it(stack: Stack, postgres_url: str) -> None:
    ours = await _leave_queued_work(postgres_url, "crashed-here", stack.topology.prefix)
    theirs = await _leave_queued_work(postgres_url, "crashed-there", "another-deployment")

    await stack.worker.resume_left_work()  # one pass lists both, if it lists the other at all
    await stack.worker.run_until_idle()

    store = stack.worker.store
    assert store is not None
    assert [r.phase for r in await store.list_inputs(ours)] == [InputPhase.CONSUMED]
    assert [r.phase for r in await store.list_inputs(theirs)] == [InputPhase.QUEUED]
    assert stack.worker.driver is not None
    assert stack.worker.driver.cached(theirs) is None


async def test_work_of_a_live_peer_is_left_to_it(stack: Stack, postgres_url: str) -> None:
    store, membership = stack.worker.store, stack.worker.membership
    assert store is not None
    assert membership is not None
    await store.heartbeat("live-peer", now=datetime.now(UTC), ttl=timedelta(minutes=5),
                          group=stack.topology.prefix)
    await membership.tick()
    assert "live-peer" in membership.live
    runtime_id = await _leave_queued_work(postgres_url, "live-peer")

    await stack.worker.resume_left_work()

    assert stack.worker.driver is not None
    assert stack.worker.driver.cached(runtime_id) is None
    [record] = await store.list_inputs(runtime_id)
    assert record.phase is InputPhase.QUEUED
    await store.leave("live-peer")
