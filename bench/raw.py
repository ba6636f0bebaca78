"""The raw baseline: the least a durable consumer must do for each message.

One quorum queue, pre-filled; one consumer with prefetch 512. A delivery goes into a local
queue; the batcher takes the first one it finds, gathers more until it holds 256 or 5 ms have
passed since the first, INSERTs them with one ``executemany`` in one transaction and then acks
the last with ``multiple=True``. Timed from the first delivery to the last commit.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Sequence
from uuid import UUID

import aio_pika
import asyncpg  # type: ignore[import-untyped]
from aio_pika.abc import AbstractIncomingMessage

from bench.errors import BenchFailure
from bench.report import Row
from bench.services import (
    Prefix,
    connect_broker,
    delete_broker_names,
    fresh_database,
    queue_depths,
)
from bench.workload import Message, prompts, publish_to_queue

BATCH = 256
WINDOW_SECONDS = 0.005
PREFETCH = 2 * BATCH

TABLE = """
CREATE TABLE raw_messages (
    message_id uuid PRIMARY KEY,
    routing_key text NOT NULL,
    body jsonb NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now()
)
"""
INSERT = "INSERT INTO raw_messages (message_id, routing_key, body) VALUES ($1, $2, $3)"


async def consume(
    channel: aio_pika.abc.AbstractChannel, queue_name: str, database: asyncpg.Connection,
    expected: int, stall_seconds: float,
) -> tuple[float, float]:
    """Consume ``expected`` messages; returns (first delivery, last commit), monotonic."""
    local: asyncio.Queue[AbstractIncomingMessage] = asyncio.Queue()
    first: list[float] = []

    async def on_message(message: AbstractIncomingMessage) -> None:
        if not first:
            first.append(time.monotonic())
        local.put_nowait(message)

    await channel.set_qos(prefetch_count=PREFETCH)
    queue = await channel.get_queue(queue_name, ensure=False)
    tag = await queue.consume(on_message)
    done = 0
    last_commit = 0.0
    try:
        while done < expected:
            try:
                head = await asyncio.wait_for(local.get(), stall_seconds)
            except TimeoutError:
                raise BenchFailure(
                    f"timed out waiting for raw deliveries: {done} of {expected}, "
                    f"none for {stall_seconds:g}s"
                ) from None
            batch = [head]
            deadline = time.monotonic() + WINDOW_SECONDS
            while len(batch) < BATCH:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                try:
                    batch.append(await asyncio.wait_for(local.get(), left))
                except TimeoutError:
                    break
            rows = [
                (UUID(m.message_id), m.routing_key or "", m.body.decode("utf-8")) for m in batch
            ]
            async with database.transaction():
                await database.executemany(INSERT, rows)
            last_commit = time.monotonic()
            await batch[-1].ack(multiple=True)
            done += len(batch)
    finally:
        await queue.cancel(tag)
    return first[0], last_commit


async def check(
    database: asyncpg.Connection, messages: Sequence[Message],
    connection: aio_pika.abc.AbstractRobustConnection, queue_name: str,
) -> None:
    rows = await database.fetch("SELECT message_id FROM raw_messages")
    stored = {row["message_id"] for row in rows}
    published = {m.input_id for m in messages}
    if len(rows) != len(messages) or stored != published:
        raise BenchFailure(
            f"raw: {len(rows)} rows stored for {len(messages)} published, "
            f"{len(published - stored)} missing, {len(stored - published)} unknown"
        )
    left = (await queue_depths(connection, [queue_name]))[queue_name]
    if left:
        raise BenchFailure(f"raw: {left} message(s) left in {queue_name} after the consumer closed")


async def run_raw(
    *, admin_url: str, amqp_url: str, inputs: int, runtimes: int, stall_seconds: float
) -> Row:
    messages = prompts(inputs, runtimes)
    prefix = Prefix.fresh(shards=0)
    queue_name = f"{prefix.name}.raw"
    connection = await connect_broker(amqp_url)
    try:
        async with fresh_database(admin_url) as url:
            database = await asyncpg.connect(url)
            try:
                await database.execute(TABLE)
                channel = await connection.channel(publisher_confirms=True)
                await channel.declare_queue(
                    queue_name, durable=True, arguments={"x-queue-type": "quorum"}
                )
                await publish_to_queue(channel, queue_name, messages)
                await channel.close()
                consumer = await connection.channel()
                started, finished = await consume(
                    consumer, queue_name, database, len(messages), stall_seconds
                )
                await consumer.close()
                await check(database, messages, connection, queue_name)
            finally:
                await database.close()
    finally:
        with contextlib.suppress(Exception):
            await delete_broker_names(connection, [queue_name], [])
        await connection.close()
    seconds = finished - started
    return Row(
        scenario="raw", description="raw consumer (aio-pika + asyncpg)",
        count=len(messages), seconds=seconds, value=len(messages) / seconds, unit="msg/s",
        details={"batch": BATCH, "window_ms": WINDOW_SECONDS * 1000, "prefetch": PREFETCH},
    )
