"""The test kit itself (``worker.testing``): each test's deployment is its own and is removed
afterwards, waits say what they waited for, and a worker stopped in the middle of a run is
replaced by one that finishes it."""

from __future__ import annotations

import asyncio

import aio_pika
import pytest
from aiormq.exceptions import ChannelNotFoundEntity
from minio import Minio
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from persistence.sql.engine import database_url
from schemas import Accepted
from tests.integration.conftest import new_runtime_id
from tests.unit.images import png_bytes
from worker.client import messages
from worker.runs.executors import RunRequest, RunResult
from worker.runs.executors.echo import execute as echo
from worker.testing import (
    Deployment,
    Services,
    WaitTimeout,
    WorkerFactory,
    WorkerHarness,
    open_deployment,
    within,
)

pytestmark = pytest.mark.integration


async def _database_exists(services: Services, url: str) -> bool:
    name = database_url(url).database
    admin = create_async_engine(database_url(services.postgresql.url))
    try:
        async with admin.connect() as conn:
            found = await conn.execute(text("SELECT 1 FROM pg_database WHERE datname = :name"),
                                       {"name": name})
            return found.first() is not None
    finally:
        await admin.dispose()


def _bucket_exists(services: Services, bucket: str) -> bool:
    s3 = services.s3
    client = Minio(s3.endpoint, access_key=s3.access_key, secret_key=s3.secret_key,
                   secure=s3.secure)
    return bool(client.bucket_exists(bucket))


async def test_each_deployment_is_its_own_and_is_removed_afterwards(
    meerkat_services: Services,
) -> None:
    async with open_deployment(meerkat_services) as one, \
            open_deployment(meerkat_services) as other:
        assert one.prefix != other.prefix
        assert one.database_url != other.database_url
        assert one.bucket != other.bucket
        harness_of_one = await _start_and_use(one)
        assert await _database_exists(meerkat_services, one.database_url)
        assert _bucket_exists(meerkat_services, one.bucket)
        await harness_of_one.close()

    assert not await _database_exists(meerkat_services, one.database_url)
    assert not await _database_exists(meerkat_services, other.database_url)
    assert not _bucket_exists(meerkat_services, one.bucket)
    connection = await aio_pika.connect(meerkat_services.rabbitmq.url)
    try:
        channel = await connection.channel()
        with pytest.raises(ChannelNotFoundEntity):
            await channel.declare_exchange(f"{one.prefix}.ingress", passive=True)
    finally:
        await connection.close()


async def _start_and_use(deployment: Deployment) -> WorkerHarness:
    """A worker on the deployment that has stored an image (so its bucket exists)."""
    harness = await WorkerHarness(deployment).start()
    outcome = await harness.request(messages.prompt(new_runtime_id(), "x",
                                                    images=[png_bytes()]))
    assert isinstance(outcome, Accepted)
    return harness


async def test_the_services_say_where_they_came_from(meerkat_services: Services) -> None:
    assert set(meerkat_services.sources) == {"rabbitmq", "postgresql", "s3"}
    assert set(meerkat_services.sources.values()) <= {"environment", "container", "machine",
                                                      "in-process"}


async def test_a_wait_that_times_out_names_what_it_waited_for(
    meerkat_worker: WorkerFactory,
) -> None:
    harness = await meerkat_worker()
    runtime_id = new_runtime_id()
    await harness.request(messages.prompt(runtime_id, "hello"))

    with pytest.raises(WaitTimeout) as raised:
        await harness.wait_for_event("run.failed", runtime_id=runtime_id, wait_seconds=0.3)

    message = str(raised.value)
    assert f"event run.failed of {runtime_id}" in message
    assert "input.accepted" in message  # what had been seen by then
    with pytest.raises(WaitTimeout, match=r"timed out after 0\.1s waiting for nothing"):
        await within(0.1, "nothing", asyncio.Event().wait())


async def test_an_executor_named_by_its_path(meerkat_worker: WorkerFactory) -> None:
    harness = await meerkat_worker("worker.runs.executors.echo:execute", shards=2)
    runtime_id = new_runtime_id()
    await harness.prompt(runtime_id, "by name")
    completed = await harness.wait_for_event("run.completed", runtime_id=runtime_id)
    assert completed.data["output"]["echo"] == ["by name"]
    assert harness.topology.shards == 2


async def test_a_run_cut_by_a_stop_completes_after_the_restart(
    meerkat_worker: WorkerFactory,
) -> None:
    called = asyncio.Event()
    release = asyncio.Event()
    runs: list[object] = []

    async def blocking(run: RunRequest) -> RunResult:
        runs.append(run.run_id)
        called.set()
        await release.wait()
        return await echo(run)

    harness = await meerkat_worker(blocking, shutdown_grace_seconds=0.5)
    runtime_id = new_runtime_id()
    await harness.prompt(runtime_id, "survive a restart")
    await within(30, "the executor to be called", called.wait())

    await harness.stop()  # the executor is abandoned after the grace period
    release.set()
    await harness.restart()

    completed = await harness.wait_for_event("run.completed", runtime_id=runtime_id)
    await harness.run_until_idle()
    assert completed.data["output"]["echo"] == ["survive a restart"]
    assert len(runs) == 2
    report = await harness.inspect(runtime_id)
    assert report["inputs_by_phase"] == {"consumed": 1}
    assert report["state"] == "idle"


async def test_messages_sent_while_no_worker_runs_are_counted(
    meerkat_worker: WorkerFactory,
) -> None:
    harness = await meerkat_worker()
    runtime_id = new_runtime_id()
    await harness.prompt(runtime_id, "before")
    await harness.run_until_idle()
    await harness.stop()
    await harness.prompt(runtime_id, "while stopped")
    await harness.restart()

    await harness.run_until_idle()

    report = await harness.inspect(runtime_id)
    assert report["inputs_by_phase"] == {"consumed": 2}
