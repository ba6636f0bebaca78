"""``ack(multiple=True)`` is used only when it cannot sweep up a delivery still out: one held for
a retry, or one of a window still committing, on the same channel."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import cast

import aiormq.abc
import pytest
from aio_pika.abc import AbstractIncomingMessage

from worker.pipeline.settle import Unsettled, ack_committed

pytestmark = pytest.mark.unit


@dataclass(eq=False)
class Channel:
    acks: list[tuple[int, bool]] = field(default_factory=list)


@dataclass(eq=False)
class Message:
    """What settling reads of a delivery; ``ack`` records what the broker would be told."""

    delivery_tag: int
    on: Channel

    async def ack(self, multiple: bool = False) -> None:
        self.on.acks.append((self.delivery_tag, multiple))


@dataclass(eq=False)
class Delivered:
    message: AbstractIncomingMessage
    channel: aiormq.abc.AbstractChannel


def received(unsettled: Unsettled, channel: Channel, tags: range) -> list[Delivered]:
    out = []
    for tag in tags:
        unsettled.received(cast(aiormq.abc.AbstractChannel, channel), tag)
        out.append(Delivered(cast(AbstractIncomingMessage, Message(tag, channel)),
                             cast(aiormq.abc.AbstractChannel, channel)))
    return out


async def test_the_only_deliveries_out_up_to_the_highest_tag_are_acked_at_once() -> None:
    unsettled, channel = Unsettled(), Channel()
    deliveries = received(unsettled, channel, range(1, 6))
    assert await ack_committed(deliveries[:3], unsettled) == []
    assert channel.acks == [(3, True)]


async def test_a_delivery_held_below_the_acked_ones_is_not_swept_up() -> None:
    unsettled, channel = Unsettled(), Channel()
    held, *later = received(unsettled, channel, range(1, 5))
    assert await ack_committed(later, unsettled) == []
    assert channel.acks == [(2, False), (3, False), (4, False)]
    assert await ack_committed([held], unsettled) == []
    assert channel.acks[-1] == (1, False)


async def test_once_the_lower_ones_are_settled_the_next_window_is_acked_at_once() -> None:
    unsettled, channel = Unsettled(), Channel()
    deliveries = received(unsettled, channel, range(1, 7))
    await ack_committed(deliveries[3:], unsettled)  # a later window committed first
    await ack_committed(deliveries[:3], unsettled)
    assert channel.acks == [(4, False), (5, False), (6, False), (3, True)]
