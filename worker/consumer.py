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
finish and be acked, and waits (at most ``handover_wait()`` seconds, two heartbeats when
another worker is there to take the shard) until the next owner's consumer is subscribed as a
standby; only then is the channel closed. Closing it, rather than cancelling the
consumer, returns every delivery not yet settled to the head of the queue *before* the broker
makes the next single-active consumer active, so the next owner sees them first, in order.
Cancelling first would let the next owner receive later messages while earlier ones were still
held here. Before the channel is closed, the cached runtimes whose messages came through the
shard are dropped (:class:`CachedRuntimes`): the next owner is about to change them, and a
stale copy here would only meet version conflicts, now or if the shard came back. Inputs they
had queued for a run are run by the next owner when it loads them (or, if no message comes
for them, by this worker's sweep of left work). A runtime whose run this worker is executing
keeps its copy for the run to end; that run's commits may meet the next owner's (a conflict,
retried on a fresh load). It is dropped when the shard is next consumed here.

An assignment consumes the new shards before it releases the old ones: a crashed worker's
shards are taken at once, not after this worker's own hand-overs.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import Awaitable, Callable
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


STANDBY_POLL_SECONDS = 0.02
"""How often a released shard looks for the next owner's consumer before it closes."""
SEEN_PRUNE_AT = 50_000
"""Runtime ids remembered for one shard past which those no longer cached are forgotten."""


class DeliverySink(Protocol):
    """Where deliveries go, and who lets go of a channel's deliveries (the committer)."""

    def submit(self, message: AbstractIncomingMessage) -> None: ...

    async def release(self, channel: aiormq.abc.AbstractChannel, grace: float) -> None: ...

    def abandon(self, channel: aiormq.abc.AbstractChannel) -> None: ...

    def pause_intake(self, seconds: float) -> None: ...


class CachedRuntimes(Protocol):
    """The runtime cache, as far as a hand-over needs it (the driver)."""

    def drop_unless_executing(self, runtime_id: str) -> bool: ...

    def holds(self, runtime_id: str) -> bool: ...


class _NoCache:
    def drop_unless_executing(self, runtime_id: str) -> bool:
        return True

    def holds(self, runtime_id: str) -> bool:
        return False


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
        runtimes: CachedRuntimes | None = None,
        handover_wait: Callable[[], float] = lambda: 0.0,
    ) -> None:
        self._handover_wait = handover_wait
        self._runtimes = runtimes or _NoCache()
        self._seen: dict[str, set[str]] = {}
        """Shard queue → the runtime ids (routing keys) of the deliveries it brought."""
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

    def _receiver(self, name: str) -> Callable[[AbstractIncomingMessage], Awaitable[None]]:
        seen = self._seen.setdefault(name, set())

        async def receive(message: AbstractIncomingMessage) -> None:
            seen.add(message.routing_key or "")
            if len(seen) > SEEN_PRUNE_AT:  # keep only what the cache still holds
                seen.intersection_update(r for r in list(seen) if self._runtimes.holds(r))
            await self._on_message(message)

        return receive

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
            link = self._link
            # New shards first: a dead worker's shards must not wait for this one's releases.
            # Without a link, the next link consumes them.
            for name in sorted(queue_names - set(self._channels)):
                if link is None:
                    break
                self._forget_runtimes(name)  # copies that runs ending here kept since
                await self._consume(link, name)
            if released:
                await self._faults.reach("during_handover")
                await self._release(sorted(released))

    async def _consume(self, link: Link, name: str) -> None:
        channel = await link.connection.channel()
        await channel.set_qos(prefetch_count=self._prefetch)
        queue = await channel.get_queue(name, ensure=True)
        underlay = await channel.get_underlay_channel()
        await queue.consume(self._receiver(name))
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
        """Let the committer finish what it decided on these shards and give the next owners
        a moment to subscribe, then close them."""
        channels = [(self._channels.pop(n), self._underlay.pop(n, None)) for n in names]
        wait = self._handover_wait()
        await asyncio.gather(*(
            self._sink.release(underlay, self._release_timeout)
            for _, underlay in channels if underlay is not None
        ), *(self._standby(name, channel, wait)
             for name, (channel, _) in zip(names, channels, strict=True)))
        for name in names:
            self._forget_runtimes(name)
        for channel, _ in channels:
            with contextlib.suppress(Exception):
                await channel.close()
        log.info("shards_released", queues=names)

    async def _standby(self, name: str, channel: AbstractChannel, seconds: float) -> None:
        """Until the shard has a consumer besides ours (the next owner's standby), for at most
        ``seconds``: closing ours then makes the standby active at once."""
        deadline = asyncio.get_running_loop().time() + seconds
        try:
            while asyncio.get_running_loop().time() < deadline:
                declared = await channel.declare_queue(name, passive=True)
                if (declared.declaration_result.consumer_count or 0) > 1:
                    return
                await asyncio.sleep(STANDBY_POLL_SECONDS)
        except Exception as exc:  # the channel went: nothing to wait for
            log.debug("standby_wait_ended", queue=name, error=repr(exc))

    def _forget_runtimes(self, name: str) -> None:
        """Drop the cached runtimes of a shard; those with a run executing here are kept, for
        the run to end, and remembered, to be dropped the next time."""
        seen = self._seen.get(name)
        if seen:
            seen.difference_update([r for r in seen if self._runtimes.drop_unless_executing(r)])

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
