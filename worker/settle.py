"""The one place that settles broker deliveries: ack, requeue, dead-letter.

Policy (what to do with a delivery) is decided elsewhere; this module only carries it out, and
is called only after the store's COMMIT returned (or, for a failure, after it was given up).

| outcome of the delivery                          | settlement                                  |
|--------------------------------------------------|---------------------------------------------|
| committed: accepted, deduplicated, command done  | ack (contiguous ones with ``multiple=True``)|
| permanent failure (malformed, rejected, illegal) | copy to the dead-letter exchange with the   |
|                                                  | reason in ``x-meerkat-error``, then ack     |
| failed, attempts left (held and retried here)    | nothing until it is decided again           |
| failed ``MEERKAT_DELIVERY_LIMIT`` times          | dead-letter with the reason, then ack       |
| its channel closed or was released               | nothing: the broker has returned it         |
| looked at but not processed (``dlq list``)       | ``nack(requeue=True)``; never an ack        |

The dead-letter copy is published with publisher confirms *before* the ack, so a crash in
between leaves the original to be redelivered: a message may be dead-lettered twice, never lost.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any, Protocol, TypeVar

import aio_pika
import aiormq.abc
from aio_pika.abc import AbstractExchange, AbstractIncomingMessage

from worker.broker import Link
from worker.metrics import Metrics
from worker.policy import Action, Settlement
from worker.replies import publish_reply

ERROR_HEADER = "x-meerkat-error"
ROUTING_KEY_HEADER = "x-meerkat-routing-key"
MAX_REASON_CHARS = 2000


class Settleable(Protocol):
    """A delivery and the channel it came on (read once: a closed channel cannot be asked)."""

    @property
    def message(self) -> AbstractIncomingMessage: ...

    @property
    def channel(self) -> aiormq.abc.AbstractChannel: ...


S = TypeVar("S", bound=Settleable)


async def ack_committed(deliveries: Sequence[S]) -> list[S]:
    """Ack committed deliveries; per channel, one ``multiple=True`` ack when they are
    contiguous. Returns the deliveries whose ack failed (their channel is gone or broken).

    Deliveries of one channel arrive with increasing tags and earlier ones are settled before
    later ones, so the highest tag may ack the rest only if no tag in between is missing.
    """
    by_channel: dict[int, list[S]] = defaultdict(list)
    for delivery in deliveries:
        by_channel[id(delivery.channel)].append(delivery)
    failed: list[S] = []
    for group in by_channel.values():
        try:
            await _ack_group([d.message for d in group])
        except Exception:
            failed.extend(group)
    return failed


async def _ack_group(group: list[AbstractIncomingMessage]) -> None:
    tags = sorted(m.delivery_tag or 0 for m in group)
    contiguous = len(group) > 1 and tags[-1] - tags[0] == len(group) - 1
    if contiguous:
        last = max(group, key=lambda m: m.delivery_tag or 0)
        await last.ack(multiple=True)
    else:
        for message in group:
            await message.ack()


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


class Decided(Settleable, Protocol):
    @property
    def runtime_id(self) -> str | None: ...


D = TypeVar("D", bound=Decided)


async def settle_batch(
    decided: Sequence[tuple[D, Settlement]], link: Link | None, metrics: Metrics
) -> tuple[list[D], list[D]]:
    """Carry out each settlement: dead letters first (each confirmed, then acked), then the
    acks, then the replies. Returns (settled, lost): a lost delivery could not be settled on
    its channel (gone, or broken by the attempt); the broker will deliver it again."""
    settled: list[D] = []
    lost: list[D] = []
    acks: list[D] = []
    for delivery, settlement in decided:
        if settlement.action is not Action.DEAD_LETTER:
            acks.append(delivery)
            continue
        try:
            if link is None:
                raise ConnectionError("not connected to the broker")
            await dead_letter(delivery.message, link.dead_letters, settlement.reason or "")
        except Exception:
            lost.append(delivery)
            continue
        metrics.messages_dead_lettered.labels(reason=settlement.reason_type).inc()
        settled.append(delivery)
    failed = await ack_committed(acks)
    lost += failed
    unsettled = set(lost)  # deliveries compare by identity
    acked = [d for d in acks if d not in unsettled]
    metrics.messages_acked.inc(len(acked))
    settled += acked
    channel = link.publish_channel if link is not None else None
    for delivery, settlement in decided:
        if settlement.reply is not None and delivery not in unsettled:
            await publish_reply(channel, delivery.message, delivery.runtime_id, settlement.reply)
    return settled, lost
