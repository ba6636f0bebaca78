"""The one place that settles broker deliveries: ack, requeue, dead-letter.

Policy (what to do with a delivery) is decided elsewhere; this module only carries it out, and
is called only after the store's COMMIT returned (or, for a failure, after it was given up).

| outcome of the delivery                          | settlement                                  |
|--------------------------------------------------|---------------------------------------------|
| committed: accepted, deduplicated, command done  | ack (contiguous ones with ``multiple=True``)|
| permanent failure (malformed, rejected, illegal) | copy to the dead-letter exchange with the   |
|                                                  | reason in ``x-meerkat-error``, then ack     |
| transient failure, deliveries left               | ``reject(requeue=True)``: counts toward the |
|                                                  | queue's delivery limit                      |
| transient failure, last delivery                 | dead-letter with the reason, then ack       |
| cancelled / shutting down, not started           | ``nack(requeue=True)``; never an ack        |

The dead-letter copy is published with publisher confirms *before* the ack, so a crash in
between leaves the original to be redelivered: a message may be dead-lettered twice, never lost.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import aio_pika
from aio_pika.abc import AbstractExchange, AbstractIncomingMessage

ERROR_HEADER = "x-meerkat-error"
ROUTING_KEY_HEADER = "x-meerkat-routing-key"
DELIVERY_COUNT_HEADER = "x-delivery-count"
MAX_REASON_CHARS = 2000


def delivery_count(message: AbstractIncomingMessage) -> int:
    """How many times the broker delivered this message before (quorum queues count returns)."""
    value = (message.headers or {}).get(DELIVERY_COUNT_HEADER, 0)
    if isinstance(value, int):
        return value
    if isinstance(value, str | bytes) and value.isdigit():
        return int(value)
    return 0


async def ack_committed(messages: Sequence[AbstractIncomingMessage]) -> None:
    """Ack committed deliveries; per channel, one ``multiple=True`` ack when they are contiguous.

    Deliveries of one channel arrive with increasing tags and earlier ones are settled before
    later ones, so the highest tag may ack the rest only if no tag in between is missing.
    """
    by_channel: dict[int, list[AbstractIncomingMessage]] = defaultdict(list)
    for message in messages:
        by_channel[id(message.channel)].append(message)
    for group in by_channel.values():
        tags = sorted(m.delivery_tag or 0 for m in group)
        contiguous = len(group) > 1 and tags[-1] - tags[0] == len(group) - 1
        if contiguous:
            last = max(group, key=lambda m: m.delivery_tag or 0)
            await last.ack(multiple=True)
        else:
            for message in group:
                await message.ack()


async def requeue(message: AbstractIncomingMessage) -> None:
    """Give the delivery back; the broker counts it toward the delivery limit."""
    await message.reject(requeue=True)


async def dead_letter(
    message: AbstractIncomingMessage, dead_letter_exchange: AbstractExchange, reason: str
) -> None:
    """Publish a copy with the reason to the dead-letter exchange (confirmed), then ack."""
    headers: dict[str, Any] = dict(message.headers or {})
    headers[ERROR_HEADER] = reason[:MAX_REASON_CHARS]
    headers[ROUTING_KEY_HEADER] = message.routing_key or ""
    copy = aio_pika.Message(
        body=message.body,
        headers=headers,
        content_type=message.content_type,
        content_encoding=message.content_encoding,
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        message_id=message.message_id,
        correlation_id=message.correlation_id,
        reply_to=message.reply_to,
        type=message.type,
        timestamp=message.timestamp,
    )
    await dead_letter_exchange.publish(copy, routing_key=message.routing_key or "")
    await message.ack()


async def ack_one(message: AbstractIncomingMessage) -> None:
    """Ack a single delivery taken off a queue for good (e.g. a dead letter replayed)."""
    await message.ack()


async def release(message: AbstractIncomingMessage) -> None:
    """Return a delivery that was looked at but not processed (listing, shutdown)."""
    await message.nack(requeue=True)
