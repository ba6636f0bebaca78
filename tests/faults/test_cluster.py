"""A RabbitMQ node lost under load: the workers fail over to the other nodes of the cluster.

The broker is three clustered nodes (:mod:`tests.fixtures.rabbitmq_cluster`); the shard queues
are quorum queues replicated over the three, their leaders spread over the nodes. The workers
are given the three addresses in ``MEERKAT_AMQP_URL``. A third of the way into a stream, the
first node, the one the workers connected to first and the leader of some of the queues, is
killed (SIGKILL: no orderly hand-over of leadership). The queues it led elect a new leader on
the two left (a majority), the workers reconnect to the next address, and the history checker
finds nothing lost, nothing applied twice and every runtime in order; every input of the stream
is processed, so processing resumed.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import pytest

from tests.faults.harness import Dependencies, FaultRun
from tests.faults.scale import ShardWatch, record
from tests.fixtures.private_postgres import PrivatePostgres
from tests.fixtures.rabbitmq_cluster import RabbitMQCluster, rabbitmq_cluster
from tests.fixtures.stoppable_s3 import StoppableS3

__all__ = ["rabbitmq_cluster"]

pytestmark = [pytest.mark.integration, pytest.mark.faults, pytest.mark.scale]

SHARDS = 8
RUNTIMES = 50
INPUTS = 3_000
PER_SECOND = 100.0
KILL_AT = INPUTS // 3
RESUMED_AFTER = 50
"""Inputs finished after the kill that show processing resumed."""
RESUME_SECONDS = 60.0


@pytest.fixture
def cluster_dependencies(rabbitmq_cluster: RabbitMQCluster, private_postgres: PrivatePostgres,
                         stoppable_s3: StoppableS3) -> Iterator[Dependencies]:
    yield Dependencies(rabbitmq_cluster, private_postgres, stoppable_s3)
    rabbitmq_cluster.ensure_running()


async def wait_resumed(run: FaultRun, finished_at_kill: int) -> float:
    """Seconds until :data:`RESUMED_AFTER` more inputs finished than at the kill."""
    started = time.monotonic()
    while run.finished() < min(finished_at_kill + RESUMED_AFTER, len(run.valid_ids)):
        if time.monotonic() - started > RESUME_SECONDS:
            raise AssertionError(f"gave up after {RESUME_SECONDS:g}s waiting for processing to "
                                 f"resume after the node was lost ({run.finished()} finished)")
        await asyncio.sleep(0.05)
    return time.monotonic() - started


async def test_a_node_lost_under_load_loses_nothing(
    cluster_dependencies: Dependencies, rabbitmq_cluster: RabbitMQCluster
) -> None:
    cluster = rabbitmq_cluster
    doomed = cluster.nodes[0]
    async with FaultRun(cluster_dependencies, "cluster node lost", 1, "cluster-node-lost",
                        SHARDS, in_table=False, runtimes=RUNTIMES,
                        amqp_url=cluster.addresses) as run:
        workers = [run.start_worker() for _ in range(2)]
        await asyncio.gather(*(run.ready(w) for w in workers))
        queues = run.topology.queue_names()
        await asyncio.to_thread(cluster.rebalance)
        replicas = await asyncio.to_thread(cluster.replicas, queues)
        nodes = sorted(node.node for node in cluster.nodes)
        assert {q: sorted(r.members) for q, r in replicas.items()} == {q: nodes for q in queues}
        led = sorted(q for q, r in replicas.items() if r.leader == doomed.node)
        assert led, f"{doomed.node} leads none of {replicas}"
        watch = ShardWatch(run.amqp_url, run.topology)
        await watch.start()
        try:
            run.stream(run.prompts(INPUTS), per_second=PER_SECOND, lanes=4)
            await run.wait_published(KILL_AT)
            finished_at_kill = run.finished()
            killed_at = time.monotonic()
            await asyncio.to_thread(doomed.kill)
            run.note(f"killed {doomed.node}, leader of {len(led)} of {len(queues)} queues")
            resumed = await wait_resumed(run, finished_at_kill)
            finished = await run.wait()
        finally:
            await watch.close()
        after = await asyncio.to_thread(cluster.replicas, queues)
        moved = sorted(q for q in led if after[q].leader != doomed.node)
        handover = watch.handover_seconds(killed_at, queues)
        record("cluster: a node of three killed under load", [
            f"{doomed.node} killed a third into {INPUTS} inputs at {PER_SECOND:g}/s; it led "
            f"{len(led)} of {len(queues)} shard queues, {len(moved)} of them elected a new "
            f"leader",
            f"processing resumed {resumed:.2f} s after the kill ({RESUMED_AFTER} more inputs "
            f"finished); every shard consumed again after at most "
            f"{max(handover.values()):.2f} s",
            f"{run.finished()} of {INPUTS} inputs finished",
        ])
        if len(moved) != len(led):
            run.outcome.problems.append(f"queues still led by the dead node: "
                                        f"{sorted(set(led) - set(moved))}")
        if not finished:
            run.outcome.problems.append("the traffic did not finish (see above)")
        await run.conclude()
