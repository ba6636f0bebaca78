"""Two workers on one topology spread its shards between them, and hand them over when one
joins or leaves without losing a message, applying one twice, or changing a runtime's order.

The heartbeat interval is an hour, so nothing moves unless a test calls ``tick()``: each step of
a handover happens exactly when the test says.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable
from uuid import UUID

import pytest
from aio_pika.abc import AbstractChannel

from schemas import EventEnvelope, InputEnvelope
from tests.fixtures.rabbitmq import TopologyFactory
from tests.integration.conftest import (
    Stack,
    StackFactory,
    assert_applied_exactly_once,
    assert_publish_order,
    new_runtime_id,
)
from worker.assignment import assignment
from worker.cli.dlq import list_dead
from worker.cli.publish import build_prompt
from worker.membership import Membership
from worker.topology import Topology

pytestmark = pytest.mark.integration

HOUR = 3600.0


def split_ids(topology: Topology) -> tuple[str, str]:
    """Two worker ids between which the topology's shards split, each owning some."""
    shards = topology.queue_names()
    for n in itertools.count():
        pair = (f"{topology.prefix}-a{n}", f"{topology.prefix}-b{n}")
        if all(assignment(shards, pair, me) for me in pair):
            return pair
    raise AssertionError("unreachable")


def membership_of(stack: Stack) -> Membership:
    assert stack.worker.membership is not None
    return stack.worker.membership


def consumed_shards(stack: Stack) -> frozenset[str]:
    assert stack.worker.consumers is not None
    return stack.worker.consumers.owned


async def consumer_counts(channel: AbstractChannel, topology: Topology) -> list[int]:
    counts = []
    for name in topology.queue_names():
        declared = await channel.declare_queue(
            name, passive=True, durable=True, arguments=topology.shard_arguments()
        )
        assert declared.declaration_result.consumer_count is not None
        counts.append(declared.declaration_result.consumer_count)
    return counts


async def start_pair(
    stack_factory: StackFactory, topology_factory: TopologyFactory
) -> tuple[Stack, Stack]:
    topology = topology_factory(shards=8)
    first_id, second_id = split_ids(topology)
    first: Stack = await stack_factory(topology=topology, worker_id=first_id,
                                       heartbeat_seconds=HOUR)
    second: Stack = await stack_factory(topology=topology, worker_id=second_id,
                                        heartbeat_seconds=HOUR)
    return first, second


async def test_two_workers_split_the_shards_and_the_survivor_takes_them_all(
    stack_factory: StackFactory, topology_factory: TopologyFactory
) -> None:
    first, second = await start_pair(stack_factory, topology_factory)
    everything = frozenset(first.topology.queue_names())
    assert membership_of(first).owned == everything, "alone at its start, it owned all"

    await membership_of(first).tick()

    mine, theirs = membership_of(first).owned, membership_of(second).owned
    assert mine
    assert theirs
    assert not mine & theirs
    assert mine | theirs == everything
    assert consumed_shards(first) == mine
    assert consumed_shards(second) == theirs
    assert await consumer_counts(first.channel, first.topology) == [1] * len(everything)

    await second.worker.stop()
    await membership_of(first).tick()

    assert membership_of(first).owned == everything
    assert consumed_shards(first) == everything
    assert membership_of(first).live == [membership_of(first).worker_id]
    assert await consumer_counts(first.channel, first.topology) == [1] * len(everything)


def consumed(input_id: UUID) -> Callable[[EventEnvelope], bool]:
    def matches(event: EventEnvelope) -> bool:
        return event.code.value == "input.consumed" and event.data["input_id"] == str(input_id)

    return matches


async def publish_batch(stack: Stack, runtimes: list[str], start: int,
                        count: int) -> list[InputEnvelope]:
    envelopes = [build_prompt(runtimes[i % len(runtimes)], f"m{i}", [])
                 for i in range(start, start + count)]
    for envelope in envelopes:
        await stack.publish(envelope)
    return envelopes


async def test_messages_published_across_a_join_and_a_leave_are_applied_exactly_once(
    stack_factory: StackFactory, topology_factory: TopologyFactory
) -> None:
    topology = topology_factory(shards=8)
    first_id, second_id = split_ids(topology)
    first: Stack = await stack_factory(topology=topology, worker_id=first_id,
                                       heartbeat_seconds=HOUR)
    runtimes = [new_runtime_id() for _ in range(24)]
    batch = len(runtimes) * 2

    published = await publish_batch(first, runtimes, 0, batch)
    second: Stack = await stack_factory(topology=topology, worker_id=second_id,
                                        heartbeat_seconds=HOUR)
    # The join: the first lets go of the second's shards while messages keep coming.
    joined, _ = await asyncio.gather(
        publish_batch(first, runtimes, batch, batch), membership_of(first).tick()
    )
    published += joined
    # The leave: the first drains and stops while messages keep coming.
    left, _ = await asyncio.gather(
        publish_batch(first, runtimes, 2 * batch, batch), first.worker.stop()
    )
    published += left
    assert await membership_of(second).tick() == frozenset(topology.queue_names())
    # Every runtime gets one more message, which also wakes any run the first left undone.
    published += await publish_batch(first, runtimes, 3 * batch, len(runtimes))

    for envelope in published:
        await first.wait_for_event(consumed(envelope.input.header.id))
    await asyncio.wait_for(second.worker.run_until_idle(), 60)
    assert second.worker.store is not None
    await assert_applied_exactly_once(second.worker.store, runtimes, published)
    await assert_publish_order(second.worker.store, runtimes, published)
    assert await list_dead(first.channel, limit=10, topology=topology) == []


async def test_a_worker_without_membership_consumes_every_shard(
    stack_factory: StackFactory,
) -> None:
    stack: Stack = await stack_factory(membership=False)
    assert stack.worker.membership is None
    assert consumed_shards(stack) == frozenset(stack.topology.queue_names())
    assert await consumer_counts(stack.channel, stack.topology) == [1] * stack.topology.shards


async def test_one_relay_of_the_two_publishes_each_event_once(
    stack_factory: StackFactory, topology_factory: TopologyFactory
) -> None:
    first, second = await start_pair(stack_factory, topology_factory)
    await membership_of(first).tick()  # both consume, both commit events
    runtimes = [new_runtime_id() for _ in range(16)]
    published = await publish_batch(first, runtimes, 0, len(runtimes) * 3)
    for envelope in published:
        await first.wait_for_event(consumed(envelope.input.header.id))
    relays = [first.worker.outbox, second.worker.outbox]
    leaders = [relay.leading for relay in relays if relay is not None]
    assert sorted(leaders, key=bool) == [False, True], leaders
    ids = [e.event_id for e in first.events if e.runtime_id in set(runtimes)]
    assert len(ids) == len(set(ids)), "an event was published twice"
