"""The one place that settles broker deliveries: ack, requeue, dead-letter.

Policy (what to do with a delivery) is decided elsewhere; this module only carries it out, and
is called only after the store's COMMIT returned (or, for a failure, after it was given up).

| outcome of the delivery                          | settlement                                  |
|--------------------------------------------------|---------------------------------------------|
| committed: accepted, deduplicated, command done  | ack (with ``multiple=True`` when safe)      |
| permanent failure (malformed, unauthorized,      | copy to the dead-letter exchange with the   |
| rejected, illegal)                               | reason in ``x-meerkat-error``, then ack     |
| failed, attempts left (held and retried here)    | nothing until it is decided again           |
| failed ``MEERKAT_DELIVERY_LIMIT`` times          | dead-letter with the reason, then ack       |
| its channel closed or was released               | nothing: the broker has returned it         |
| looked at but not processed (``dlq list``)       | ``nack(requeue=True)``; never an ack        |

``ack(multiple=True)`` acknowledges every unacked delivery of the channel up to its tag, so it is
used only when every delivery of that channel still unsettled at or below the tag is being
acked now; a delivery held for a retry, or one of a window still committing, is never swept up by
another window's ack. The :class:`Unsettled` ledger knows, per channel, which tags are out.

The dead-letter copy is published with publisher confirms *before* the ack, so a crash in
between leaves the original to be redelivered: a message may be dead-lettered twice, never lost.

Every delivery settled here is told once, by :mod:`worker.pipeline.settled` (a
``delivery_settled`` log line, the counters by settlement, the end of its ``accept`` span).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import weakref
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from typing import Any, Protocol, TypeVar

import aio_pika
import aiormq.abc
from aio_pika.abc import AbstractExchange, AbstractIncomingMessage

from schemas import Unauthorized
from worker import tracing
from worker.broker import BrokerLink, Link
from worker.core import Decision
from worker.metrics import Metrics
from worker.pipeline.authz import reply_allowed
from worker.pipeline.decide import Window
from worker.pipeline.inbox import Delivery
from worker.pipeline.parsing import ParsedCommand, ParsedInput, ParsedMessage, Unparseable
from worker.pipeline.policy import Action, Settlement, settlement_for
from worker.pipeline.replies import publish_reply
from worker.pipeline.settled import returned, returned_unread, settled_as, told
from worker.pipeline.steps import RunStep, Staged, StepKind, StepResult
from worker.watchdog import Watchdog

ERROR_HEADER = "x-meerkat-error"
ROUTING_KEY_HEADER = "x-meerkat-routing-key"
DEAD_LETTERED_AT_HEADER = "x-meerkat-dead-lettered-at"
"""When the worker dead-lettered the message (an AMQP timestamp): ``dlq`` age filters read it."""
MAX_REASON_CHARS = 2000


class Settleable(Protocol):
    """A delivery and the channel it came on (read once: a closed channel cannot be asked)."""

    @property
    def message(self) -> AbstractIncomingMessage: ...

    @property
    def channel(self) -> aiormq.abc.AbstractChannel: ...


S = TypeVar("S", bound=Settleable)


class Unsettled:
    """Per channel, the delivery tags received and not yet settled."""

    def __init__(self) -> None:
        self._tags: weakref.WeakKeyDictionary[aiormq.abc.AbstractChannel, set[int]] = (
            weakref.WeakKeyDictionary()
        )

    def received(self, channel: aiormq.abc.AbstractChannel, tag: int | None) -> None:
        self._tags.setdefault(channel, set()).add(tag or 0)

    def settled(self, channel: aiormq.abc.AbstractChannel, tags: Iterable[int]) -> None:
        out = self._tags.get(channel)
        if out is not None:
            out.difference_update(tags)

    def only(self, channel: aiormq.abc.AbstractChannel, tags: set[int]) -> bool:
        """Whether ``tags`` are all the unsettled tags of the channel up to their highest."""
        top = max(tags)
        return all(t in tags for t in self._tags.get(channel, ()) if t <= top)


async def ack_committed(deliveries: Sequence[S], unsettled: Unsettled | None = None) -> list[S]:
    """Ack committed deliveries; per channel one ``multiple=True`` ack when no other delivery
    of the channel is out below the highest tag (see the module docstring). Returns the
    deliveries whose ack failed (their channel is gone or broken)."""
    by_channel: dict[int, list[S]] = defaultdict(list)
    for delivery in deliveries:
        by_channel[id(delivery.channel)].append(delivery)
    failed: list[S] = []
    for group in by_channel.values():
        channel = group[0].channel
        tags = {d.message.delivery_tag or 0 for d in group}
        try:
            safe = unsettled.only(channel, tags) if unsettled is not None else _contiguous(tags)
            await _ack_group([d.message for d in group], len(group) > 1 and safe)
        except Exception:
            failed.extend(group)
        if unsettled is not None:
            unsettled.settled(channel, tags)
    return failed


def _contiguous(tags: set[int]) -> bool:
    return max(tags) - min(tags) == len(tags) - 1


async def _ack_group(group: list[AbstractIncomingMessage], multiple: bool) -> None:
    if multiple:
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
    headers[DEAD_LETTERED_AT_HEADER] = datetime.now(UTC)
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


async def settle_batch(
    decided: Sequence[tuple[Delivery, Settlement]], link: Link | None, metrics: Metrics,
    unsettled: Unsettled | None = None, reply_allowed: Callable[[str], bool] = reply_allowed,
) -> tuple[list[Delivery], list[Delivery]]:
    """Carry out each settlement: dead letters first (each confirmed, then acked), then the
    acks, then the replies. Returns (settled, lost): a lost delivery could not be settled on
    its channel (gone, or broken by the attempt); the broker will deliver it again."""
    settled: list[Delivery] = []
    lost: list[Delivery] = []
    acks: list[Delivery] = []
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
        finally:
            if unsettled is not None:
                unsettled.settled(delivery.channel, [delivery.message.delivery_tag or 0])
        metrics.messages_dead_lettered.labels(reason=settlement.reason_type).inc()
        settled.append(delivery)
    failed = await ack_committed(acks, unsettled)
    lost += failed
    gone = set(lost)  # deliveries compare by identity
    acked = [d for d in acks if d not in gone]
    metrics.messages_acked.inc(len(acked))
    settled += acked
    now = time.monotonic()
    for delivery, settlement in decided:
        if delivery in gone:
            continue
        if settlement.action is Action.DEAD_LETTER:
            told(delivery, "dead_lettered", metrics, now, settlement.reason or "",
                 settlement.reason_type)
        else:
            told(delivery, settled_as(settlement), metrics, now)
    channel = link.publish_channel if link is not None else None
    for delivery, settlement in decided:
        if settlement.reply is not None and delivery not in gone:
            await publish_reply(channel, delivery.message, delivery.runtime_id, settlement.reply,
                                allowed=reply_allowed, metrics=metrics, trace=delivery.trace)
    return settled, lost


class Settler:
    """Settles the windows of one committer, and keeps count: deliveries settled for good, the
    unsettled tags of each channel, and when the pipeline is idle."""

    def __init__(
        self, broker: BrokerLink, *, metrics: Metrics, watchdog: Watchdog,
        on_commit: Callable[[], None], on_settled: Callable[[list[Delivery]], None],
        reply_allowed: Callable[[str], bool] = reply_allowed,
    ) -> None:
        self._broker = broker
        self._reply_allowed = reply_allowed
        self._metrics = metrics
        self._watchdog = watchdog
        self._on_commit = on_commit
        self._on_settled = on_settled
        self._unsettled = Unsettled()
        self._changed = asyncio.Condition()
        self._idle = asyncio.Event()
        self._idle.set()
        self.settled = 0
        """Deliveries settled for good: acked after their commit, or dead-lettered."""
        self.failures = 0
        """Windows whose decide-and-commit failed (each then retried)."""
        self.settling = 0
        """Settlements under way outside a window (dead letters of failed items)."""

    def busy(self) -> None:
        """Something entered the pipeline."""
        self._idle.clear()

    def received(self, message: AbstractIncomingMessage, channel: aiormq.abc.AbstractChannel,
                 parsed: ParsedMessage) -> None:
        self._idle.clear()
        kind = {ParsedInput: "input", ParsedCommand: "command"}.get(type(parsed), "malformed")
        if isinstance(parsed, Unparseable) and isinstance(parsed.reason, Unauthorized):
            kind = "unauthorized"
        self._metrics.messages_received.labels(kind=kind).inc()
        self._unsettled.received(channel, message.delivery_tag)

    def dropped(self, deliveries: Sequence[Delivery]) -> None:
        """Deliveries of a closed or released channel, given up (the broker has them back)."""
        if deliveries:
            returned(deliveries, self._metrics)
            self._watchdog.settled(len(deliveries))

    def gone(self, message: AbstractIncomingMessage) -> None:
        """A delivery whose channel had closed before it was read (the broker has it back)."""
        returned_unread(message, self._metrics)
        self._watchdog.settled(1)

    async def committed(self, window: Window) -> None:
        """Answer the window's run steps and settle its deliveries (its COMMIT returned)."""
        self._on_commit()
        deliveries: list[tuple[Delivery, Settlement]] = []
        for item, decision in zip(window.items, window.decisions, strict=True):
            if isinstance(item, RunStep):
                if not item.done.done():
                    item.done.set_result(step_result(item, decision))
            else:
                deliveries.append((item, settlement_for(item.parsed, decision)))
        await self._settle(deliveries)

    async def settle(self, decided: list[tuple[Delivery, Settlement]]) -> None:
        self.settling += 1
        try:
            await self._settle(decided)
        finally:
            self.settling -= 1

    async def _settle(self, decided: list[tuple[Delivery, Settlement]]) -> None:
        if not decided:
            return
        settled, lost = await settle_batch(decided, self._broker.link, self._metrics,
                                           self._unsettled, self._reply_allowed)
        for delivery in lost:  # its channel died, or settling broke it: the broker has it back
            await _close_quietly(delivery.channel)
        self._on_settled(settled)
        self.dropped(lost)
        self._watchdog.settled(len(settled))
        async with self._changed:
            self.settled += len(settled)
            self._changed.notify_all()

    def changed(self, idle: bool) -> None:
        """Something in flight finished; ``idle``: nothing is left to decide or settle."""
        if idle:
            self._idle.set()
        asyncio.get_running_loop().create_task(self._notify())

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    async def wait_for(self, predicate: Callable[[], bool]) -> None:
        async with self._changed:
            await self._changed.wait_for(predicate)

    async def wait_idle(self) -> None:
        await self._idle.wait()

    async def wait_settled(self, count: int) -> None:
        await self.wait_for(lambda: self.settled >= count)


def step_result(step: RunStep, decision: Decision | None) -> StepResult:
    if step.kind is StepKind.FAIL:
        return decision is not None
    if decision is None:
        return None if step.kind is StepKind.STAGE else False
    run = decision.runtime.current_run
    staged_on = step.run_id if step.kind is StepKind.STAGE else step.next_run_id
    if run is None or run.run_id != staged_on:
        assert step.kind is StepKind.FINISH, "a committed stage names its run"
        return True
    inputs = decision.runtime.inputs
    trace = step.trace if step.kind is StepKind.STAGE else (
        tracing.run_staged(step.runtime_id, run.run_id, run.input_ids, time.time_ns(),
                           after=step.trace) if step.trace is not None else None)
    return Staged(run.run_id, tuple(inputs[i].payload for i in run.input_ids), trace)


async def _close_quietly(channel: aiormq.abc.AbstractChannel) -> None:
    if channel.is_closed:
        return
    with contextlib.suppress(Exception):
        await channel.close()
