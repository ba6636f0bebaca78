"""The fault suite: the worker broken the way users break it, each way three times, each run
judged by the history checker (``meerkat-worker verify``).

Every run publishes :data:`~tests.faults.harness.MESSAGES` prompts over
:data:`~tests.faults.harness.RUNTIMES` runtimes as a steady stream, and the fault lands about a
third into it, so that it hits traffic in flight and the rest of the stream meets whatever the
fault left behind (a replacement worker, a reconnected pool, a restarted broker):

- kill points: the worker is started with ``MEERKAT_FAULT=<point>:<N>`` and SIGKILLs itself
  the N-th time it reaches the point; the run's supervisor starts a replacement without it;
- a handover: a worker dies while it releases shards to a worker that joined;
- dependency outages: PostgreSQL restarted or stopped for a while, S3 stopped for a while,
  RabbitMQ restarted (the producer rides it out, as a careful one does), all while the worker
  runs;
- hostile bodies: deeply nested JSON amid valid traffic to the same runtimes.

N is chosen per point from how often a paced stream of this size reaches it (about once per
message for most points; ``after_blob_put`` only for batches with images, one in ten). A fault
that never fires fails the run: it would otherwise pass without having tested anything.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import aio_pika
import pytest

from tests.faults.conftest import RunFactory
from tests.faults.harness import MESSAGES, Dependencies, FaultRun
from tests.faults.traffic import Traffic, deep_array, deep_object
from tests.fixtures.private_rabbitmq import PrivateRabbitMQ
from worker.topology import Topology

pytestmark = [pytest.mark.integration, pytest.mark.faults]

RUNS = [pytest.param(n, id=f"run{n}") for n in (1, 2, 3)]
KILL_POINTS = {
    "after_blob_put": 10,
    "after_commit_before_ack": 60,
    "mid_run": 60,
    "after_boundary_commit": 60,
    "during_outbox_publish": 20,
}
"""N of ``MEERKAT_FAULT=<point>:<N>``: about a third into a paced stream of 300 prompts."""
INJECT_AFTER = MESSAGES // 3
"""Dependency faults and the handover start once this many messages are published."""
HANDOVER_SHARDS = 16
"""A joining worker takes half of them (the assignment is balanced), so some are handed over."""
HANDOVER_SECONDS = 30.0
"""How long the leaving worker has to reach its next heartbeat, and so the handover."""
OUTAGE_SECONDS = 4.0
"""How long a stopped dependency stays down: the length of the fault, not a wait for anything."""



async def _outage(run: FaultRun, stop: Callable[[], None], start: Callable[[], None]) -> None:
    """Stop a dependency a third into the stream, keep publishing, start it again."""
    worker = run.start_worker()
    await run.ready(worker)
    run.stream(run.prompts())
    await run.wait_published(INJECT_AFTER)
    run.note("stopping the dependency")
    await asyncio.to_thread(stop)
    run.outcome.faults_injected += 1
    try:
        # The length of the outage, not a wait for anything: traffic keeps arriving meanwhile.
        await asyncio.sleep(OUTAGE_SECONDS)
    finally:
        await asyncio.to_thread(start)
        run.note("dependency started again")
    await run.wait()


async def _restart(run: FaultRun, restart: Callable[[], None]) -> None:
    """Restart a dependency a third into the stream, which goes on across the restart."""
    worker = run.start_worker()
    await run.ready(worker)
    run.stream(run.prompts())
    await run.wait_published(INJECT_AFTER)
    run.note("restarting the dependency")
    await asyncio.to_thread(restart)
    run.outcome.faults_injected += 1
    run.note("dependency restarted")
    await run.wait()


@pytest.mark.parametrize("run_number", RUNS)
@pytest.mark.parametrize("point", list(KILL_POINTS))
async def test_worker_killed_at_a_fault_point(
    fault_run: RunFactory, point: str, run_number: int
) -> None:
    async with fault_run(f"kill at {point}", run_number, f"kill-{point}") as run:
        faulty = run.start_worker(fault=f"{point}:{KILL_POINTS[point]}")
        await run.ready(faulty)
        run.stream(run.prompts())
        await run.wait()
        run.expect_fault_fired(faulty)
        await run.conclude()


@pytest.mark.parametrize("run_number", RUNS)
async def test_worker_killed_during_handover(fault_run: RunFactory, run_number: int) -> None:
    async with fault_run("kill during_handover", run_number, "kill-during_handover",
                         shards=HANDOVER_SHARDS) as run:
        leaving = run.start_worker(fault="during_handover:1")
        await run.ready(leaving)
        run.stream(run.prompts())
        await run.wait_published(INJECT_AFTER)
        # The joining worker takes shards from the first, which dies while releasing them.
        run.note("starting a second worker")
        joining = run.start_worker()
        await run.ready(joining)
        # The first lets go at its next heartbeat, whether or not the stream is still going.
        await run.wait_fault_fired(HANDOVER_SECONDS)
        await run.wait()
        run.expect_fault_fired(leaving)
        await run.conclude()


@pytest.mark.parametrize("run_number", RUNS)
async def test_postgres_restarted(
    fault_run: RunFactory, dependencies: Dependencies, run_number: int
) -> None:
    async with fault_run("postgres restart", run_number, "postgres-restart") as run:
        await _restart(run, dependencies.postgres.restart)
        await run.conclude()


@pytest.mark.parametrize("run_number", RUNS)
async def test_postgres_stopped_for_a_while(
    fault_run: RunFactory, dependencies: Dependencies, run_number: int
) -> None:
    scenario = f"postgres stop {OUTAGE_SECONDS:g} s"
    async with fault_run(scenario, run_number, "postgres-stop") as run:
        await _outage(run, dependencies.postgres.stop, dependencies.postgres.start)
        await run.conclude()


@pytest.mark.parametrize("run_number", RUNS)
async def test_s3_stopped_for_a_while(
    fault_run: RunFactory, dependencies: Dependencies, run_number: int
) -> None:
    async with fault_run(f"s3 stop {OUTAGE_SECONDS:g} s", run_number, "s3-stop") as run:
        await _outage(run, dependencies.s3.stop, dependencies.s3.start)
        await run.conclude()


@pytest.mark.parametrize("run_number", RUNS)
async def test_rabbitmq_restarted(
    fault_run: RunFactory, private_rabbitmq: PrivateRabbitMQ, run_number: int
) -> None:
    async with fault_run("rabbitmq restart", run_number, "rabbitmq-restart") as run:
        await _restart(run, private_rabbitmq.restart)
        await run.conclude()
        # The worker came back with exactly one consumer on each shard, not two, not none.
        counts = await shard_consumer_counts(private_rabbitmq.amqp_url, run.topology)
        assert counts == [1] * run.topology.shards, counts


async def shard_consumer_counts(amqp_url: str, topology: Topology) -> list[int]:
    connection = await aio_pika.connect(amqp_url)
    try:
        channel = await connection.channel()
        counts = []
        for name in topology.queue_names():
            queue = await channel.declare_queue(name, passive=True)
            counts.append(queue.declaration_result.consumer_count or 0)
        return counts
    finally:
        await connection.close()


@pytest.mark.parametrize("run_number", RUNS)
async def test_deeply_nested_bodies_amid_valid_traffic(
    fault_run: RunFactory, run_number: int
) -> None:
    async with fault_run("deep nesting", run_number, "deep-nesting") as run:
        prompts = run.prompts()
        third = len(prompts) // 3
        traffic: list[Traffic] = [
            *prompts[:third], deep_array(run.runtimes[0]),
            *prompts[third: 2 * third], deep_object(run.runtimes[1]),
            *prompts[2 * third:],
        ]
        worker = run.start_worker()
        await run.ready(worker)
        run.stream(traffic)
        await run.wait()
        await run.conclude()
