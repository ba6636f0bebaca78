"""The dead queue against a real RabbitMQ: list without removing, replay, the delivery limit."""

from __future__ import annotations

import argparse
import asyncio
import json
from datetime import UTC, datetime, timedelta

import aio_pika
import pytest
from aio_pika.abc import (
    AbstractChannel,
    AbstractIncomingMessage,
    AbstractRobustConnection,
    DeliveryMode,
)
from pydantic import SecretStr

from schemas import INPUT_MESSAGE_TYPE, InputEnvelope
from tests.fixtures.rabbitmq import TopologyFactory
from worker.cli.broker_commands import broker_command
from worker.cli.dlq import list_dead, replay_dead
from worker.cli.dlq_commands import replay, show_dead
from worker.cli.publish import build_prompt, publish_input
from worker.config import Settings
from worker.pipeline.settle import ERROR_HEADER
from worker.topology import SHARD_WEIGHT, Topology

pytestmark = pytest.mark.integration


async def dead_letter(
    channel: AbstractChannel, topology: Topology, runtime_id: str, error: str
) -> InputEnvelope:
    """Dead-letter an input the way the worker does for a permanent failure."""
    envelope = build_prompt(runtime_id, "cannot be processed", [])
    exchange = await channel.get_exchange(topology.dead_letter_exchange, ensure=False)
    await exchange.publish(
        aio_pika.Message(
            envelope.model_dump_json().encode(),
            content_type="application/json",
            delivery_mode=DeliveryMode.PERSISTENT,
            message_id=str(envelope.input.header.id),
            type=INPUT_MESSAGE_TYPE,
            headers={ERROR_HEADER: error, "x-trace": "kept"},
        ),
        routing_key=runtime_id,
    )
    return envelope


async def count(channel: AbstractChannel, queue: str) -> int:
    """Ready messages in the queue, asked of the broker (a robust channel answers a passive
    ``declare_queue`` of a queue it knows from its cache). Exact after confirmed publishes; after
    an ack or nack the quorum queue may not have applied it yet, so those are checked by listing.
    """
    declared = await (await channel.get_queue(queue, ensure=False)).declare()
    return declared.message_count or 0


async def shard_total(channel: AbstractChannel, topology: Topology) -> int:
    return sum([await count(channel, name) for name in topology.queue_names()])


async def first_message(channel: AbstractChannel, queue: str) -> AbstractIncomingMessage:
    """The next message of a queue, consumed (shard queues refuse ``basic.get``)."""
    arrived: asyncio.Future[AbstractIncomingMessage] = asyncio.get_running_loop().create_future()

    async def take(message: AbstractIncomingMessage) -> None:
        await message.ack()
        if not arrived.done():
            arrived.set_result(message)

    consumer = await (await channel.get_queue(queue, ensure=False)).consume(take)
    try:
        return await asyncio.wait_for(arrived, 30)
    finally:
        await (await channel.get_queue(queue, ensure=False)).cancel(consumer)


@pytest.fixture
async def channel(
    amqp_connection: AbstractRobustConnection, topology: Topology
) -> AbstractChannel:
    channel = await amqp_connection.channel()
    await topology.declare(channel)
    return channel


async def test_list_shows_a_dead_letter_and_leaves_it_in_place(
    channel: AbstractChannel, topology: Topology
) -> None:
    envelope = await dead_letter(channel, topology, "rt:dlq-list", "malformed: no runtime_id")

    listings = [await list_dead(channel, 10, topology=topology) for _ in range(3)]

    # Listing again finds the same message: a listing leaves the queue as it was.
    assert listings[0] == listings[1] == listings[2]
    [letter] = listings[0]
    assert letter.message_id == str(envelope.input.header.id)
    assert letter.message_type == INPUT_MESSAGE_TYPE
    assert letter.runtime_id == "rt:dlq-list"
    assert letter.routing_key == "rt:dlq-list"
    assert letter.error == "malformed: no runtime_id"
    assert letter.death_reason is None


async def test_list_stops_at_the_limit(channel: AbstractChannel, topology: Topology) -> None:
    for n in range(3):
        await dead_letter(channel, topology, f"rt:dlq-limit-{n}", "refused")

    assert len(await list_dead(channel, 2, topology=topology)) == 2
    assert len(await list_dead(channel, None, topology=topology)) == 3
    assert len(await list_dead(channel, None, topology=topology)) == 3


async def test_replay_puts_the_message_back_on_its_shard(
    channel: AbstractChannel, topology: Topology
) -> None:
    envelope = await dead_letter(channel, topology, "rt:dlq-replay", "not ready")

    assert await replay_dead(channel, None, topology=topology) == 1

    assert await list_dead(channel, None, topology=topology) == []
    assert await shard_total(channel, topology) == 1
    [shard] = [q for q in topology.queue_names() if await count(channel, q)]
    replayed = await first_message(channel, shard)
    assert replayed.routing_key == "rt:dlq-replay"
    assert replayed.message_id == str(envelope.input.header.id)
    assert replayed.type == INPUT_MESSAGE_TYPE
    assert replayed.content_type == "application/json"
    assert replayed.delivery_mode == DeliveryMode.PERSISTENT
    assert InputEnvelope.model_validate_json(replayed.body) == envelope
    headers = replayed.headers or {}
    assert ERROR_HEADER not in headers
    assert headers.get("x-trace") == "kept"


async def test_replay_takes_at_most_the_limit(
    channel: AbstractChannel, topology: Topology
) -> None:
    for n in range(3):
        await dead_letter(channel, topology, f"rt:dlq-some-{n}", "refused")

    assert await replay_dead(channel, 2, topology=topology) == 2

    assert len(await list_dead(channel, None, topology=topology)) == 1
    assert await shard_total(channel, topology) == 2


async def test_replay_stops_when_a_replayed_message_dies_again(
    amqp_connection: AbstractRobustConnection, topology_factory: TopologyFactory
) -> None:
    topology = topology_factory(shards=1)
    channel = await amqp_connection.channel()
    await topology.declare(channel)
    # Route the ingress straight back into the dead queue: every replay dies at once.
    shard = await channel.get_queue(topology.shard_queue(0), ensure=False)
    await shard.unbind(topology.ingress_exchange, SHARD_WEIGHT)
    dead = await channel.get_queue(topology.dead_queue, ensure=False)
    await dead.bind(topology.ingress_exchange, SHARD_WEIGHT)
    for n in range(2):
        await dead_letter(channel, topology, f"rt:dlq-again-{n}", "refused")

    assert await replay_dead(channel, None, topology=topology) == 2

    listed = await list_dead(channel, None, topology=topology)
    assert sorted(letter.runtime_id or "" for letter in listed) == [
        "rt:dlq-again-0",
        "rt:dlq-again-1",
    ]


async def test_a_message_returned_beyond_the_delivery_limit_is_dead_lettered(
    amqp_connection: AbstractRobustConnection, topology_factory: TopologyFactory
) -> None:
    """The broker behaviour the worker's retry policy rests on (RabbitMQ 3.10.8 observed):
    ``x-delivery-limit`` N lets a message be delivered N + 1 times, every ``reject`` or ``nack``
    with requeue counting, then the broker dead-letters it with reason ``delivery_limit``."""
    topology = topology_factory(shards=1, delivery_limit=2)
    channel = await amqp_connection.channel()
    await topology.declare(channel)
    envelope = build_prompt("rt:dlq-limit", "keeps failing", [])
    await publish_input(channel, envelope, topology=topology)

    deliveries: list[object] = []

    async def fail_transiently(message: AbstractIncomingMessage) -> None:
        deliveries.append((message.headers or {}).get("x-delivery-count"))
        if len(deliveries) % 2:
            await message.reject(requeue=True)
        else:
            await message.nack(requeue=True)

    shard = await channel.get_queue(topology.shard_queue(0), ensure=False)
    await shard.consume(fail_transiently)
    dead = await first_message(await amqp_connection.channel(), topology.dead_queue)

    assert deliveries == [None, 1, 2]
    assert InputEnvelope.model_validate_json(dead.body) == envelope
    assert dead.routing_key == "rt:dlq-limit"
    assert dead.message_id == str(envelope.input.header.id)
    headers = dead.headers or {}
    assert headers["x-first-death-reason"] == "delivery_limit"
    assert headers["x-first-death-queue"] == topology.shard_queue(0)


async def test_list_reports_why_and_where_the_broker_dead_lettered(
    amqp_connection: AbstractRobustConnection, topology_factory: TopologyFactory
) -> None:
    topology = topology_factory(shards=1, delivery_limit=1)
    channel = await amqp_connection.channel()
    await topology.declare(channel)
    await publish_input(channel, build_prompt("rt:dlq-why", "x", []), topology=topology)

    async def refuse(message: AbstractIncomingMessage) -> None:
        await message.reject(requeue=True)

    consumer = await (await channel.get_queue(topology.shard_queue(0), ensure=False)).consume(
        refuse
    )
    dead_channel = await amqp_connection.channel()
    await wait_for_dead(dead_channel, topology)
    await (await channel.get_queue(topology.shard_queue(0), ensure=False)).cancel(consumer)

    [letter] = await list_dead(dead_channel, 10, topology=topology)
    assert letter.dead_lettered_at is not None  # the broker's x-death time
    assert abs(datetime.now(UTC) - letter.dead_lettered_at) < timedelta(minutes=5)
    assert letter.death_reason == "delivery_limit"
    assert letter.first_death_queue == topology.shard_queue(0)
    assert letter.runtime_id == "rt:dlq-why"
    assert letter.error is None
    assert letter.death_count == 1


async def wait_for_dead(channel: AbstractChannel, topology: Topology) -> None:
    """Until the dead queue holds a message; it is left there."""
    arrived: asyncio.Future[AbstractIncomingMessage] = asyncio.get_running_loop().create_future()

    async def see(message: AbstractIncomingMessage) -> None:
        if not arrived.done():
            arrived.set_result(message)

    queue = await channel.get_queue(topology.dead_queue, ensure=False)
    consumer = await queue.consume(see)
    message = await asyncio.wait_for(arrived, 30)
    await queue.cancel(consumer)
    await message.nack(requeue=True)


async def test_dlq_commands_list_as_json_then_replay(
    amqp_url: str,
    channel: AbstractChannel,
    topology: Topology,
    capsys: pytest.CaptureFixture[str],
) -> None:
    settings = Settings(amqp_url=SecretStr(amqp_url))
    envelope = await dead_letter(channel, topology, "rt:dlq-cli", "illegal command")

    listing = argparse.Namespace(limit=None, json=True)
    assert await broker_command(show_dead(listing, settings, topology), settings) == 0
    [shown] = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert shown["message_id"] == str(envelope.input.header.id)
    assert shown["error"] == "illegal command"

    listing = argparse.Namespace(limit=None, json=False)
    assert await broker_command(show_dead(listing, settings, topology), settings) == 0
    assert "error=illegal command" in capsys.readouterr().out

    replaying = argparse.Namespace(limit=None)
    assert await broker_command(replay(replaying, settings, topology), settings) == 0
    assert "replayed 1 message(s)" in capsys.readouterr().out
    assert await list_dead(channel, None, topology=topology) == []
