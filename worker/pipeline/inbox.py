"""The inbox: deliveries and run transitions waiting to be decided, in per-runtime order.

Run transitions (a run to stage, a run that ended) come from the run loop and are taken ahead
of deliveries, which they need not be ordered with. Items of a window that must be decided again
(after an outage, a conflict, or a window that was aborted because one it depended on failed)
are put back at the front, in their order; an item flagged ``alone`` is taken as a window of its
own, which is how a failing window is split to find its culprit.

Deliveries arrive from every shard consumer in the order each queue delivered them, and one
runtime's messages all come from one shard, so taking them first-in first-out decides each
runtime's messages in publish order. Two things would break that, and this module is where both
are prevented:

- **A delivery held for a retry.** When a message's own processing fails, it is not given back
  to the broker (that would let the runtime's later messages overtake it, and would spend one
  of the broker's deliveries). It is *held* here until its backoff is over, and every later
  delivery of the same runtime waits behind it, in order. Other runtimes are not held up.
- **A message the broker returns late.** After a broker restart, a message that was delivered
  but unacked when the broker went down can come back *behind* messages published after it. A
  returned message (``redelivered``) is older than every message of its queue not yet
  delivered, so it is put ahead of its runtime's waiting first deliveries; and after a
  reconnect the intake waits a moment (:meth:`Intake.pause`) so that such returns arrive
  before anything of the new link is decided.
- **A delivery whose channel is gone.** The broker returns every unacked delivery of a closed
  channel to its queue and delivers it again on a new one, before later messages. The copy
  held here must then be dropped, never decided or settled: :meth:`Intake.take` discards
  deliveries whose channel closed or was released (a shard handed over or shut down).
"""

from __future__ import annotations

import asyncio
import time
import weakref
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import aiormq.abc
from aio_pika.abc import AbstractIncomingMessage

from worker.deadline import event_set
from worker.pipeline.parsing import ParsedMessage
from worker.pipeline.steps import RunStep

if TYPE_CHECKING:
    from opentelemetry.trace import Span


@dataclass(eq=False)
class Delivery:
    """One delivery, the channel it came on (for settling it, or knowing it is gone) and
    what its body parsed to."""

    message: AbstractIncomingMessage
    channel: aiormq.abc.AbstractChannel
    parsed: ParsedMessage
    alone: bool = False
    """Decide this delivery in a window of its own."""
    conflicts: int = 0
    """Version conflicts met so far, each retried at once."""
    received: float = 0.0
    """When it was received (``time.monotonic``), for ``meerkat_accept_seconds``."""
    trace: Span | None = None
    """Its ``accept`` span, when tracing is on."""

    @property
    def runtime_id(self) -> str | None:
        return self.parsed.runtime_id


Item = Delivery | RunStep

OnDrop = Callable[[Sequence[Item]], None]
"""Told the deliveries dropped because their channel closed or was released."""


class Inbox:
    def __init__(
        self, *, on_drop: OnDrop = lambda _: None, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._inbox: deque[Item] = deque()
        self._steps: deque[RunStep] = deque()
        self._held: dict[str, deque[Item]] = {}
        """Runtime → its deliveries held behind a failed one (the head is retried first)."""
        self._retry_at: dict[str, float] = {}
        self._released: weakref.WeakSet[aiormq.abc.AbstractChannel] = weakref.WeakSet()
        self._arrived = asyncio.Event()
        self._paused_until = 0.0
        self._on_drop = on_drop
        self._clock = clock

    def put(self, delivery: Delivery) -> None:
        runtime_id = delivery.runtime_id
        if delivery.message.redelivered and runtime_id is not None:
            queue = self._held.get(runtime_id, self._inbox)
            _put_ahead_of_first_deliveries(queue, delivery, runtime_id)
        else:
            self._inbox.append(delivery)
        self._arrived.set()

    def put_step(self, step: RunStep) -> None:
        self._steps.append(step)
        self._arrived.set()

    def put_back(self, items: list[Item]) -> None:
        """Items to decide again before anything newer, in this order (a runtime that is held
        keeps its items behind the held one)."""
        steps = [i for i in items if isinstance(i, RunStep)]
        self._steps.extendleft(reversed(steps))
        front: list[Item] = []
        for item in items:
            if isinstance(item, RunStep):
                continue
            if self.is_held(item.runtime_id):
                self.hold_behind(item)
            else:
                front.append(item)
        self._inbox.extendleft(reversed(front))
        self._arrived.set()

    def pause(self, seconds: float) -> None:
        """Decide nothing for ``seconds`` (after a reconnect: see the module docstring)."""
        self._paused_until = max(self._paused_until, self._clock() + seconds)

    def __len__(self) -> int:
        held = sum(len(q) for q in self._held.values())
        return len(self._inbox) + len(self._steps) + held

    def alive(self, item: Item) -> bool:
        """Whether the item may still be decided (a delivery: and settled on its channel)."""
        if isinstance(item, RunStep):
            return True
        return not item.channel.is_closed and item.channel not in self._released

    def release(self, channel: aiormq.abc.AbstractChannel) -> int:
        """From now on, deliveries of ``channel`` are dropped; returns how many were."""
        self._released.add(channel)
        return self._discard_dead()

    def is_held(self, runtime_id: str | None) -> bool:
        return runtime_id is not None and runtime_id in self._held

    def hold(self, delivery: Item, seconds: float) -> None:
        """Retry ``delivery`` after ``seconds``; its runtime's later deliveries wait behind."""
        runtime_id = delivery.runtime_id
        if runtime_id is None:  # nothing to keep in order with: retry it on its own
            runtime_id = f"\0{id(delivery)}"
        self._held.setdefault(runtime_id, deque()).appendleft(delivery)
        self._retry_at[runtime_id] = self._clock() + seconds
        self._arrived.set()

    def hold_behind(self, delivery: Item) -> None:
        """Queue ``delivery`` behind its runtime's held ones (see :meth:`is_held`)."""
        assert delivery.runtime_id is not None
        self._held[delivery.runtime_id].append(delivery)

    async def take(self, max_batch: int, window: float = 0.0) -> list[Item]:
        """The next window: run transitions first, then held runtimes whose retry is due, then
        the inbox, each runtime's items in order. Waits for at least one item."""
        while True:
            await self._wait_for_work()
            if window > 0 and not self._due():
                await asyncio.sleep(window)  # let the group commit fill
            batch = self._fill(max_batch)
            if batch:
                return batch

    async def _wait_for_work(self) -> None:
        while True:
            paused = self._paused_until - self._clock()
            if paused > 0:
                await asyncio.sleep(paused)
                continue
            if self._inbox or self._steps or self._due():
                return
            self._arrived.clear()
            timeout = None
            if self._retry_at:
                timeout = max(min(self._retry_at.values()) - self._clock(), 0.0)
            await event_set(self._arrived, timeout)

    def _due(self) -> list[str]:
        now = self._clock()
        return [runtime_id for runtime_id, at in self._retry_at.items() if at <= now]

    def _fill(self, max_batch: int) -> list[Item]:
        """Checks each delivery as it leaves (O(window)): a closed channel is noticed here."""
        due = self._due()
        for runtime_id in reversed(due):  # a due runtime's items go first, in their order
            del self._retry_at[runtime_id]
            self._inbox.extendleft(reversed(self._held.pop(runtime_id)))
        batch: list[Item] = []
        if self._take_alone(self._steps, batch):
            return batch
        while self._steps and len(batch) < max_batch and not self._steps[0].alone:
            batch.append(self._steps.popleft())
        dropped: list[Item] = []
        while self._inbox and len(batch) < max_batch:
            item = self._inbox[0]
            if item.alone and batch:
                break
            self._inbox.popleft()
            if not self.alive(item):
                dropped.append(item)
            elif self.is_held(item.runtime_id):
                self.hold_behind(item)
            else:
                batch.append(item)
                if item.alone:
                    break
        if dropped:
            self._on_drop(dropped)
        return batch

    @staticmethod
    def _take_alone(steps: deque[RunStep], batch: list[Item]) -> bool:
        if steps and steps[0].alone:
            batch.append(steps.popleft())
            return True
        return False

    def _discard_dead(self) -> int:
        """A full sweep, for a release (rare); :meth:`_fill` checks the rest on the way out."""
        dropped: list[Item] = []
        if any(not self.alive(d) for d in self._inbox):
            dropped += [d for d in self._inbox if not self.alive(d)]
            self._inbox = deque(d for d in self._inbox if self.alive(d))
        for runtime_id in list(self._held):
            held = self._held[runtime_id]
            kept = [d for d in held if self.alive(d)]
            dropped += [d for d in held if not self.alive(d)]
            if kept:
                self._held[runtime_id] = deque(kept)
            else:
                del self._held[runtime_id]
                self._retry_at.pop(runtime_id, None)
        if dropped:
            self._on_drop(dropped)
        return len(dropped)


def _put_ahead_of_first_deliveries(
    queue: deque[Item], delivery: Delivery, runtime_id: str
) -> None:
    """Insert before the first delivery of the runtime that the broker delivers for the first
    time (it was published later), else at the end."""
    for index, waiting in enumerate(queue):
        first = isinstance(waiting, Delivery) and not waiting.message.redelivered
        if waiting.runtime_id == runtime_id and first:
            queue.insert(index, delivery)
            return
    queue.append(delivery)
