"""``publish_batch`` against the broker: every message arrives once, in order, with its
properties; bodies larger than a frame are split; publishes of aio-pika's own on the same channel
keep their confirms; a broker's nack fails the batch."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime

import aio_pika
import pytest
from aio_pika.abc import AbstractIncomingMessage, AbstractRobustConnection
from aiormq.exceptions import DeliveryError

from worker.batch_publish import Outgoing, publish_batch

pytestmark = pytest.mark.integration

WAIT_SECONDS = 30.0


def outgoing(index: int, body: bytes | None = None) -> Outgoing:
    return Outgoing(
        body=body if body is not None else f'{{"n":{index}}}'.encode(),
        routing_key=f"code.{index % 3}",
        message_id=str(uuid.uuid4()),
        message_type=f"code.{index % 3}",
        timestamp=datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
        headers={"x-runtime-id": f"rt-{index}"},
    )


async def drain(queue: aio_pika.abc.AbstractQueue, count: int) -> list[AbstractIncomingMessage]:
    """The first ``count`` messages of ``queue``, acked, waiting for each by its arrival."""
    got: list[AbstractIncomingMessage] = []
    async with asyncio.timeout(WAIT_SECONDS), queue.iterator() as messages:
        async for message in messages:
            await message.ack()
            got.append(message)
            if len(got) == count:
                break
    return got


async def topic_with_queue(
    connection: AbstractRobustConnection, arguments: dict[str, int | str] | None = None
) -> tuple[aio_pika.abc.AbstractChannel, aio_pika.abc.AbstractExchange, aio_pika.abc.AbstractQueue]:
    """A confirming channel, a topic exchange of a fresh name and a queue bound to all of it."""
    channel = await connection.channel(publisher_confirms=True)
    name = f"batch-{uuid.uuid4().hex[:8]}"
    exchange = await channel.declare_exchange(name, aio_pika.ExchangeType.TOPIC, auto_delete=True)
    queue = await channel.declare_queue(name, exclusive=True, arguments=arguments)
    await queue.bind(exchange, "#")
    return channel, exchange, queue


async def test_a_batch_arrives_whole_in_order_with_its_properties(
    amqp_connection: AbstractRobustConnection,
) -> None:
    channel, exchange, queue = await topic_with_queue(amqp_connection)
    big = b'"' + b"x" * 300_000 + b'"'  # more than one frame (frame_max is 128 KiB)
    batch = [outgoing(i, big if i == 7 else None) for i in range(500)]
    async with asyncio.timeout(WAIT_SECONDS):
        await publish_batch(channel, exchange.name, batch)
    received = await drain(queue, len(batch))
    assert [m.message_id for m in received] == [o.message_id for o in batch]
    assert [m.body for m in received] == [o.body for o in batch]
    assert [m.routing_key for m in received] == [o.routing_key for o in batch]
    first = received[0]
    assert first.type == "code.0"
    assert first.content_type == "application/json"
    assert first.delivery_mode == aio_pika.DeliveryMode.PERSISTENT
    assert first.headers == {"x-runtime-id": "rt-0"}
    assert first.timestamp == datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    await channel.close()


async def test_batches_and_single_publishes_share_a_channel(
    amqp_connection: AbstractRobustConnection,
) -> None:
    channel, exchange, queue = await topic_with_queue(amqp_connection)
    singles = [aio_pika.Message(body=f"s{i}".encode()) for i in range(50)]
    batches = [[outgoing(b * 100 + i) for i in range(100)] for b in range(5)]
    async with asyncio.timeout(WAIT_SECONDS):
        await asyncio.gather(
            *(exchange.publish(m, routing_key="single") for m in singles),
            *(publish_batch(channel, exchange.name, batch) for batch in batches),
        )
    received = await drain(queue, len(singles) + 500)
    bodies = [m.body for m in received]
    sent = [m.body for m in singles] + [o.body for b in batches for o in b]
    assert sorted(bodies) == sorted(sent)
    for batch in batches:  # each batch in its own order
        positions = [bodies.index(o.body) for o in batch]
        assert positions == sorted(positions)
    await channel.close()


async def test_a_nacked_message_fails_the_batch(
    amqp_connection: AbstractRobustConnection,
) -> None:
    arguments: dict[str, int | str] = {"x-max-length": 1, "x-overflow": "reject-publish"}
    channel, exchange, queue = await topic_with_queue(amqp_connection, arguments)
    with pytest.raises(DeliveryError):
        async with asyncio.timeout(WAIT_SECONDS):
            await publish_batch(channel, exchange.name, [outgoing(i) for i in range(3)])
    assert (await drain(queue, 1))[0].body == b'{"n":0}'
    await channel.close()


async def test_an_empty_batch_publishes_nothing(
    amqp_connection: AbstractRobustConnection,
) -> None:
    channel = await amqp_connection.channel(publisher_confirms=True)
    await publish_batch(channel, "nowhere-at-all", [])
    assert not channel.is_closed  # no frame went to the missing exchange
    await channel.close()
