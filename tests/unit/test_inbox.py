"""The inbox hands deliveries out in per-runtime order: a held delivery holds its runtime's
later ones, a returned one goes ahead of first deliveries, a closed channel's are dropped."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, cast
from uuid import uuid4

import aiormq.abc
import pytest
from aio_pika.abc import AbstractIncomingMessage

from schemas import Malformed
from tests.unit.timing import Clock, within
from worker.pipeline.inbox import Delivery, Inbox, Item
from worker.pipeline.parsing import Unparseable
from worker.pipeline.steps import RunStep, StepKind

pytestmark = pytest.mark.unit


@dataclass(eq=False)
class Channel:
    is_closed: bool = False


@dataclass
class Message:
    name: str
    redelivered: bool = False
    headers: dict[str, Any] = field(default_factory=dict)


def delivery(name: str, runtime_id: str | None, channel: Channel, *,
             redelivered: bool = False) -> Delivery:
    parsed = Unparseable(Malformed(detail=name), runtime_id, False)
    return Delivery(cast(AbstractIncomingMessage, Message(name, redelivered)),
                    cast(aiormq.abc.AbstractChannel, channel), parsed)


def names(batch: list[Item]) -> list[str]:
    return [cast(Message, d.message).name for d in batch if isinstance(d, Delivery)]


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def dropped() -> list[int]:
    return []


@pytest.fixture
def intake(clock: Clock, dropped: list[int]) -> Inbox:
    return Inbox(on_drop=lambda items: dropped.append(len(items)), clock=clock)


async def take(intake: Inbox) -> list[str]:
    return names(await within(intake.take(100), "a batch"))


async def test_deliveries_come_out_in_arrival_order(intake: Inbox) -> None:
    channel = Channel()
    for name, runtime in [("a1", "a"), ("b1", "b"), ("a2", "a")]:
        intake.put(delivery(name, runtime, channel))
    assert await take(intake) == ["a1", "b1", "a2"]


async def test_a_held_delivery_holds_its_runtime_and_no_other(
    intake: Inbox, clock: Clock
) -> None:
    channel = Channel()
    failed = delivery("a1", "a", channel)
    intake.hold(failed, seconds=5)
    intake.put(delivery("a2", "a", channel))
    intake.put(delivery("b1", "b", channel))

    assert await take(intake) == ["b1"]
    assert len(intake) == 2
    clock.advance(5)
    assert await take(intake) == ["a1", "a2"]


async def test_a_returned_delivery_goes_ahead_of_its_runtimes_first_deliveries(
    intake: Inbox,
) -> None:
    channel = Channel()
    intake.put(delivery("a7", "a", channel))
    intake.put(delivery("b7", "b", channel))
    intake.put(delivery("a8", "a", channel))
    intake.put(delivery("a5", "a", channel, redelivered=True))
    intake.put(delivery("a6", "a", channel, redelivered=True))
    assert await take(intake) == ["a5", "a6", "a7", "b7", "a8"]


async def test_a_returned_delivery_of_a_held_runtime_waits_with_it(
    intake: Inbox, clock: Clock
) -> None:
    channel = Channel()
    intake.hold(delivery("a2", "a", channel), seconds=5)
    intake.put(delivery("a1", "a", channel, redelivered=True))
    intake.put(delivery("b1", "b", channel))
    assert await take(intake) == ["b1"]
    clock.advance(5)
    assert await take(intake) == ["a1", "a2"]


async def test_deliveries_of_a_closed_or_released_channel_are_dropped(
    intake: Inbox, dropped: list[int]
) -> None:
    old, released, new = Channel(), Channel(), Channel()
    intake.put(delivery("a1", "a", old))
    intake.put(delivery("b1", "b", released))
    intake.put(delivery("a1-again", "a", new))
    old.is_closed = True
    assert intake.release(cast(aiormq.abc.AbstractChannel, released)) == 2  # a full sweep
    intake.put(delivery("b2", "b", released))  # arrived before the channel was closed
    assert await take(intake) == ["a1-again"]
    assert sum(dropped) == 3


async def test_a_pause_defers_the_next_batch(intake: Inbox, clock: Clock) -> None:
    intake.pause(0.05)  # the clock is frozen: the pause is waited out on the event loop
    intake.put(delivery("a1", "a", Channel()))
    clock.advance(1)
    assert await take(intake) == ["a1"]


def step(runtime_id: str) -> RunStep:
    return RunStep(StepKind.FINISH, runtime_id, uuid4())


async def test_run_steps_are_taken_ahead_of_deliveries(intake: Inbox) -> None:
    channel = Channel()
    intake.put(delivery("a1", "a", channel))
    finished = step("b")
    intake.put_step(finished)
    batch = await within(intake.take(100), "a batch")
    assert batch[0] is finished
    assert names(batch) == ["a1"]


async def test_items_put_back_come_before_newer_ones_in_their_order(intake: Inbox) -> None:
    channel = Channel()
    intake.put(delivery("a1", "a", channel))
    intake.put(delivery("b1", "b", channel))
    first = await within(intake.take(100), "a batch")
    intake.put(delivery("a2", "a", channel))
    intake.put_back(first)
    assert await take(intake) == ["a1", "b1", "a2"]


async def test_an_item_to_retry_alone_is_a_window_of_its_own(intake: Inbox) -> None:
    channel = Channel()
    batch = [delivery(name, name[0], channel) for name in ("a1", "b1", "c1")]
    for item in batch:
        item.alone = True
    intake.put_back(list(batch))
    intake.put(delivery("d1", "d", channel))
    assert [await take(intake) for _ in range(3)] == [["a1"], ["b1"], ["c1"]]
    assert await take(intake) == ["d1"]


async def test_an_item_put_back_for_a_held_runtime_waits_behind_the_held_one(
    intake: Inbox, clock: Clock
) -> None:
    channel = Channel()
    intake.hold(delivery("a1", "a", channel), seconds=5)
    intake.put_back([delivery("a2", "a", channel), delivery("b1", "b", channel)])
    assert await take(intake) == ["b1"]
    clock.advance(5)
    assert await take(intake) == ["a1", "a2"]
