"""How many shard queues a broker holds, found without the management API.

AMQP cannot list an exchange's bindings nor the queues of a vhost, but a passive declare tells
whether one queue exists. Shard queues are numbered ``00`` up, so with ``expected`` shards
configured:

- queue ``expected`` existing means more shards were declared (a deployment of 16 read with
  ``MEERKAT_SHARDS=8`` would consume only half of them): count on upwards until one is missing;
- queue ``expected - 1`` missing while queue ``00`` exists means fewer were declared (declaring
  the rest would put new queues on the hash ring and move runtimes to them): count downwards.

Queue ``00`` missing as well is a broker on which nothing was declared yet (or from which the
queues were deleted): then nothing is known and ``None`` is returned, as when the count fits.
Each failed passive declare closes its channel, so every probe opens a channel of its own.

Fewer queues may also be another worker declaring them at this very moment (several workers of
a new deployment starting at once): a short count is looked at again for up to
:data:`DECLARING_SECONDS` before it is believed.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

from aio_pika.abc import AbstractConnection
from aiormq.exceptions import AMQPChannelError, ChannelNotFoundEntity

MAX_SHARD_QUEUES = 100
"""Shard queue names carry two digits: ``.00`` to ``.99``."""
DECLARING_SECONDS = 5.0
"""How long a short count is looked at again (a concurrent declaration takes well under it)."""
RECHECK_SECONDS = 0.25


async def settled_shard_count(
    connection: AbstractConnection, queue_name: Callable[[int], str], expected: int
) -> int | None:
    """:func:`declared_shard_count`, with a short count looked at again while it may be
    another worker's declaration under way."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + DECLARING_SECONDS
    while True:
        count = await declared_shard_count(connection, queue_name, expected)
        if count is None or count > expected or loop.time() >= deadline:
            return count
        await asyncio.sleep(RECHECK_SECONDS)


async def declared_shard_count(
    connection: AbstractConnection, queue_name: Callable[[int], str], expected: int
) -> int | None:
    """The number of shard queues the broker has when it is not ``expected``, else ``None``
    (also when none is declared). ``queue_name(k)`` names shard queue ``k``."""
    if expected < MAX_SHARD_QUEUES and await queue_exists(connection, queue_name(expected)):
        count = expected + 1
        while count < MAX_SHARD_QUEUES and await queue_exists(connection, queue_name(count)):
            count += 1
        return count
    if await queue_exists(connection, queue_name(expected - 1)):
        return None
    if not await queue_exists(connection, queue_name(0)):
        return None
    count = expected - 1
    while count > 1 and not await queue_exists(connection, queue_name(count - 1)):
        count -= 1
    return count


async def queue_exists(connection: AbstractConnection, name: str) -> bool:
    channel = await connection.channel()
    try:
        await channel.declare_queue(name, passive=True)
    except ChannelNotFoundEntity:
        return False
    finally:
        if not channel.is_closed:
            with contextlib.suppress(AMQPChannelError, RuntimeError):
                await channel.close()
    return True
