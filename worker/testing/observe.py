"""Watching a deployment from outside, the way a test waits: on what arrives, never on the clock.

- :class:`EventRecorder` consumes ``<prefix>.events`` (a queue of its own bound with ``#``) and
  keeps every event in arrival order. Started before the worker, it misses none.
- :class:`DeadLetterTap` binds a queue of its own to ``<prefix>.dead-letter`` (a fanout
  exchange), so it sees a copy of every message dead-lettered, by the worker or by the broker,
  while the dead queue itself keeps them for :func:`worker.cli.dlq.list_dead`.
- :func:`within` bounds every wait: on timeout it raises :class:`WaitTimeout` (an
  ``AssertionError``, so pytest shows it as a failed expectation) naming what was awaited and
  what had been seen by then.

Waiting is on an ``asyncio.Condition`` notified at each arrival; a predicate is checked against
everything recorded so far, so an event that came before the wait began still counts.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

from aio_pika.abc import AbstractChannel, AbstractIncomingMessage, AbstractQueue
from pydantic import ValidationError

from schemas import EventEnvelope
from worker.cli.dead_letters import DeadLetter
from worker.cli.dlq import dead_letter
from worker.deadline import bounded
from worker.topology import Topology

_T = TypeVar("_T")
_Item = TypeVar("_Item")

DEFAULT_WAIT_SECONDS = 30.0


class WaitTimeout(AssertionError):
    """What a test waited for did not happen in time."""


async def within(seconds: float, what: str, awaitable: Awaitable[_T],
                 seen: Callable[[], str] | None = None) -> _T:
    """``await awaitable``, or :class:`WaitTimeout` after ``seconds`` naming ``what`` (and,
    when given, ``seen()``: what had happened by then)."""
    try:
        return await bounded(awaitable, seconds)
    except TimeoutError:
        detail = f"; seen: {seen()}" if seen is not None else ""
        raise WaitTimeout(f"timed out after {seconds:g}s waiting for {what}{detail}") from None


class _Recorded(Generic[_Item]):
    """Items in arrival order, and waiting for the n-th one that matches."""

    def __init__(self) -> None:
        self.items: list[_Item] = []
        self._arrived = asyncio.Condition()

    async def add(self, item: _Item) -> None:
        async with self._arrived:
            self.items.append(item)
            self._arrived.notify_all()

    def matching(self, matches: Callable[[_Item], bool]) -> list[_Item]:
        return [item for item in self.items if matches(item)]

    async def nth(self, matches: Callable[[_Item], bool], count: int) -> _Item:
        async with self._arrived:
            await self._arrived.wait_for(lambda: len(self.matching(matches)) >= count)
            return self.matching(matches)[count - 1]


class EventRecorder(_Recorded[EventEnvelope]):
    """Every event of the deployment, in arrival order (see the module docstring)."""

    def __init__(self) -> None:
        super().__init__()
        self.unreadable: list[bytes] = []
        """Bodies on the events exchange that are not an event envelope."""
        self._queue: AbstractQueue | None = None

    async def start(self, channel: AbstractChannel, topology: Topology) -> None:
        self._queue = await channel.declare_queue(exclusive=True, auto_delete=True)
        await self._queue.bind(topology.events_exchange, routing_key="#")
        await self._queue.consume(self._on_message, no_ack=True)

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        try:
            event = EventEnvelope.model_validate_json(message.body)
        except ValidationError:
            self.unreadable.append(message.body)
            return
        await self.add(event)

    def codes(self, runtime_id: str | None = None) -> list[str]:
        """The codes seen, in order; only those of ``runtime_id`` when given."""
        return [e.code.value for e in self.items if runtime_id in (None, e.runtime_id)]


class DeadLetterTap(_Recorded[DeadLetter]):
    """A copy of every dead letter of the deployment, in arrival order."""

    async def start(self, channel: AbstractChannel, topology: Topology) -> None:
        queue = await channel.declare_queue(exclusive=True, auto_delete=True)
        await queue.bind(topology.dead_letter_exchange, routing_key="")
        await queue.consume(self._on_message, no_ack=True)

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        await self.add(dead_letter(message))
