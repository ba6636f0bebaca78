"""Exactly one consumer per owned shard: a shard channel the broker closes is made again."""

from __future__ import annotations

import asyncio

import aio_pika
import pytest

from schemas import Accepted
from tests.integration.conftest import Stack, new_runtime_id
from worker.cli.publish import build_prompt

pytestmark = pytest.mark.integration


async def consumer_counts(stack: Stack) -> dict[str, int]:
    connection = await aio_pika.connect(stack.worker.settings.amqp_url.get_secret_value())
    try:
        channel = await connection.channel()
        counts = {}
        for name in stack.topology.queue_names():
            queue = await channel.declare_queue(name, passive=True)
            assert queue.declaration_result.consumer_count is not None
            counts[name] = queue.declaration_result.consumer_count
        return counts
    finally:
        await connection.close()


async def test_a_shard_channel_closed_by_the_broker_is_consumed_again_once(stack: Stack) -> None:
    consumers = stack.worker.consumers
    assert consumers is not None
    name = sorted(consumers.owned)[0]
    before = consumers._channels[name]
    # An ack of a delivery tag the broker never sent is a channel error: it closes the channel.
    await consumers._underlay[name].basic_ack(delivery_tag=999_999)

    def made_again() -> bool:
        return consumers._channels.get(name) not in (None, before)

    try:
        await asyncio.wait_for(consumers.wait_for(made_again), 30)
    except TimeoutError:
        raise AssertionError(f"{name} was not consumed again within 30s") from None
    await consumers.readiness()
    assert set((await consumer_counts(stack)).values()) == {1}
    reply = await stack.request(build_prompt(new_runtime_id(), "still served", []))
    assert isinstance(reply.outcome, Accepted)
