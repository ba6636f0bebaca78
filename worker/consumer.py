"""Shard consumers: one channel and one consumer per ingress shard queue this worker owns.

Exactly one consumer per owned shard, made by this module alone: on every new broker link
(:mod:`worker.broker`) each owned shard gets a fresh channel and consumer; when the link goes
down they are forgotten, since the broker has already cancelled them and returned their unacked
deliveries. A shard channel that the broker closes while the link stays up (a channel error) is
re-made after a short backoff.

After a reconnect the committer pauses for :data:`RECONNECT_SETTLE_SECONDS` before deciding
anything, because a restarted broker has been seen to return a message that was unacked at its
stop behind messages published after the restart; the intake puts returned messages first.

Releasing a shard (a hand-over to another worker, or shutdown) keeps per-runtime order: the
committer first stops deciding deliveries of that channel and lets the ones already in a commit
finish and be acked; only then is the channel closed. Closing it, rather than cancelling the
consumer, returns every delivery not yet settled to the head of the queue *before* the broker
makes the next single-active consumer active, so the next owner sees them first, in order.
Cancelling first would let the next owner receive later messages while earlier ones were still
held here.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import Callable
from typing import Protocol

import aiormq.abc
import structlog
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage

from worker.broker import BrokerLink, Link
from worker.faults import NO_FAULTS, FaultPlan
from worker.health import ReadinessError
from worker.pipeline.policy import RECONNECT
from worker.watchdog import Watchdog

log = structlog.get_logger(__name__)

RECONNECT_SETTLE_SECONDS = 1.0
"""After a reconnect, how long deliveries are collected before any is decided: a broker that
restarted returns the messages that were unacked at its stop a moment after consumers attach,
and they must be decided before the later messages of their runtimes."""


class DeliverySink(Protocol):
    """Where deliveries go, and who lets go of a channel's deliveries (the committer)."""

    def submit(self, message: AbstractIncomingMessage) -> None: ...

    async def release(self, channel: aiormq.abc.AbstractChannel, grace: float) -> None: ...

    def abandon(self, channel: aiormq.abc.AbstractChannel) -> None: ...

    def pause_intake(self, seconds: float) -> None: ...


class ShardConsumers:
    def __init__(
        self,
        broker: BrokerLink,
        sink: DeliverySink,
        queue_names: list[str],
        *,
        prefetch: int,
        release_timeout: float = 30.0,
        watchdog: Watchdog | None = None,
        faults: FaultPlan = NO_FAULTS,
    ) -> None:
        self._watchdog = watchdog or Watchdog(stall_seconds=60.0)
        self._broker = broker
        self._sink = sink
        self._desired = set(queue_names)
        self._prefetch = prefetch
        self._release_timeout = release_timeout
        self._faults = faults
        self._channels: dict[str, AbstractChannel] = {}
        self._underlay: dict[str, aiormq.abc.AbstractChannel] = {}
        self._link: Link | None = None
        self._link_seen = False
        # Link changes, assignments and re-consumes all change the consumers; one at a time.
        self._changing = asyncio.Lock()
        self._stopped = False
        self._repairs: set[asyncio.Task[None]] = set()
        self._changed = asyncio.Condition()
        broker.on_up(self._link_up)
        broker.on_down(self._link_down)

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        self._watchdog.received()  # first: a delivery stuck below this line is a stall
        try:
            await self._faults.reach("consumer_delivery")
            self._sink.submit(message)
        except Exception as exc:
            # Never left unsettled on a live channel: closing it returns every delivery of
            # the shard to the queue, in order, and the channel is made again.
            log.error("delivery_intake_failed", queue=message.routing_key, error=repr(exc),
                      exc_info=exc)
            # At once, before the close yields: a later delivery of this channel that is
            # already on its way must not be decided ahead of this one, which comes back.
            self._sink.abandon(message.channel)
            self._watchdog.settled()
            with contextlib.suppress(Exception):
                await message.channel.close()

    @property
    def owned(self) -> frozenset[str]:
        """The queues this worker is meant to consume (readiness checks only these)."""
        return frozenset(self._desired)

    @property
    def registered(self) -> int:
        return len(self._channels)

    async def _link_up(self, link: Link) -> None:
        async with self._changing:
            reconnected, self._link = self._link_seen, link
            self._link_seen = True
            if self._stopped:
                return
            if reconnected:  # let late returns of the broker's restart arrive first
                self._sink.pause_intake(RECONNECT_SETTLE_SECONDS)
            for name in sorted(self._desired):
                await self._consume(link, name)

    async def _link_down(self, link: Link) -> None:
        async with self._changing:
            if self._link is link:
                self._link = None
            self._channels.clear()
            self._underlay.clear()

    async def assign(self, queue_names: set[str]) -> None:
        """Consume exactly ``queue_names`` from now on: release the shards no longer owned,
        consume the new ones. Raises when the broker refuses; calling again with the same set
        finishes the job. Does nothing after :meth:`stop`."""
        async with self._changing:
            if self._stopped:
                return
            released = set(self._channels) - queue_names
            self._desired = set(queue_names)
            if released:
                await self._faults.reach("during_handover")
                await self._release(sorted(released))
            link = self._link
            if link is None:
                return  # the next link consumes them
            for name in sorted(queue_names - set(self._channels)):
                await self._consume(link, name)

    async def _consume(self, link: Link, name: str) -> None:
        channel = await link.connection.channel()
        await channel.set_qos(prefetch_count=self._prefetch)
        queue = await channel.get_queue(name, ensure=True)
        underlay = await channel.get_underlay_channel()
        await queue.consume(self._on_message)
        self._channels[name] = channel
        self._underlay[name] = underlay
        channel.close_callbacks.add(lambda *_: self._closed_by_broker(name, channel))
        await self._notify()

    def _closed_by_broker(self, name: str, channel: AbstractChannel) -> None:
        """A shard channel closed while it was still ours: make it again, unless the link
        itself went down (the next link makes every channel)."""
        if self._channels.get(name) is not channel or self._stopped:
            return
        log.warning("shard_channel_closed", queue=name)
        task = asyncio.get_running_loop().create_task(self._repair(name, channel))
        self._repairs.add(task)
        task.add_done_callback(self._repairs.discard)

    async def _repair(self, name: str, channel: AbstractChannel) -> None:
        for attempt in itertools.count(1):
            await asyncio.sleep(RECONNECT.delay(attempt))
            async with self._changing:
                if self._stopped or self._channels.get(name) is not channel:
                    return
                link = self._link
                if link is None or not link.is_up:
                    return
                del self._channels[name]
                self._underlay.pop(name, None)
                try:
                    await self._consume(link, name)
                    return
                except Exception as exc:
                    self._channels[name] = channel  # still ours to repair
                    log.warning("shard_consume_failed", queue=name, error=repr(exc))

    async def _release(self, names: list[str]) -> None:
        """Let the committer finish what it decided on these shards, then close them."""
        channels = [(self._channels.pop(n), self._underlay.pop(n, None)) for n in names]
        await asyncio.gather(*(
            self._sink.release(underlay, self._release_timeout)
            for _, underlay in channels if underlay is not None
        ))
        for channel, _ in channels:
            with contextlib.suppress(Exception):
                await channel.close()
        log.info("shards_released", queues=names)

    async def wait_for(self, condition: Callable[[], bool]) -> None:
        """Until ``condition()`` holds; it is looked at after every change of consumers."""
        async with self._changed:
            await self._changed.wait_for(condition)

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    async def readiness(self) -> None:
        if self._link is None or not self._link.is_up:
            raise ReadinessError("not connected to the broker")
        missing = sorted(n for n in self._desired
                         if n not in self._channels or self._channels[n].is_closed)
        if missing:
            raise ReadinessError(f"no consumer on {', '.join(missing)}")

    async def stop(self) -> None:
        """Stop receiving: every shard is released (its decided deliveries settled first)."""
        async with self._changing:
            self._stopped = True
            await self._release(sorted(self._channels))
        for task in list(self._repairs):
            task.cancel()
