"""Shard consumers: one channel per ingress shard queue, each feeding the group committer.

Without membership every worker consumes every shard queue; the queues are
single-active-consumer, so the broker lets exactly one consumer of a shard receive at a time and
promotes a standby when it goes away. With membership (:mod:`worker.membership`) each worker
consumes only the shards :meth:`ShardConsumers.assign` gives it. Releasing a shard cancels its
consumer but keeps its channel open: the deliveries already received are still with the
committer, which acks them on that channel after their commit (closing it would requeue them).
The channel is reused if the shard comes back and closed with the others at shutdown.

After a reconnect the robust connection restores channels and consumers by itself, but it has
been seen to leave a queue with no consumer after a broker restart (aio-pika issue 231). So
after every reconnect, and on every readiness check, each shard is verified against the broker's
own consumer count and re-consumed if its consumer is gone.
"""

from __future__ import annotations

import asyncio

import structlog
from aio_pika.abc import (
    AbstractChannel,
    AbstractIncomingMessage,
    AbstractQueue,
    AbstractRobustConnection,
)

from worker.committer import Committer
from worker.health import ReadinessError

log = structlog.get_logger(__name__)


class ShardConsumers:
    def __init__(
        self,
        connection: AbstractRobustConnection,
        committer: Committer,
        queue_names: list[str],
        *,
        prefetch: int,
    ) -> None:
        self._connection = connection
        self._committer = committer
        self._queue_names = queue_names
        self._prefetch = prefetch
        self._channels: dict[str, AbstractChannel] = {}
        self._queues: dict[str, AbstractQueue] = {}
        self._tags: dict[str, str] = {}
        # assign() and ensure() both start consumers; one at a time, or a shard gets two.
        self._changing = asyncio.Lock()
        self._stopped = False

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        self._committer.submit(message)

    async def start(self) -> None:
        async with self._changing:
            for name in self._queue_names:
                await self._consume(name)
        self._connection.reconnect_callbacks.add(self._after_reconnect)

    @property
    def owned(self) -> frozenset[str]:
        """The queues this worker is meant to consume (readiness checks only these)."""
        return frozenset(self._queue_names)

    async def assign(self, queue_names: set[str]) -> None:
        """Consume exactly ``queue_names``: start consumers for the new ones, cancel those of
        the released ones. Raises when the broker refuses; calling again with the same set
        finishes the job. Does nothing after :meth:`stop`."""
        async with self._changing:
            if self._stopped:
                return
            self._queue_names = sorted(queue_names)
            for name in sorted(set(self._tags) - queue_names):
                await self._cancel(name)
            for name in self._queue_names:
                if name not in self._tags:
                    await self._consume(name)

    async def _consume(self, name: str) -> None:
        channel = self._channels.get(name)
        if channel is None or channel.is_closed:
            channel = await self._connection.channel()
            await channel.set_qos(prefetch_count=self._prefetch)
            self._channels[name] = channel
        queue = await channel.get_queue(name, ensure=True)
        self._queues[name] = queue
        self._tags[name] = await queue.consume(self._on_message)

    async def _after_reconnect(self, *_: object) -> None:
        try:
            await self.ensure()
        except Exception as exc:
            log.warning("consumer_check_failed", error=repr(exc))

    async def ensure(self) -> int:
        """Re-consume any owned shard whose consumer vanished; returns how many were restored."""
        restored = 0
        async with self._changing:
            if self._stopped:
                return 0
            for name in self._queue_names:
                if await self._consumer_lost(name):
                    log.warning("consumer_missing", queue=name)
                    self._tags.pop(name, None)
                    await self._consume(name)
                    restored += 1
        return restored

    async def _consumer_lost(self, name: str) -> bool:
        """Whether this shard needs a new consumer: nothing registered locally, a closed
        channel, or a queue the broker reports with no consumer at all (issue 231)."""
        queue = self._queues.get(name)
        channel = self._channels.get(name)
        if queue is None or channel is None or channel.is_closed or name not in self._tags:
            return True
        declared = await queue.declare()  # passive: reads the broker's consumer count
        return declared.consumer_count == 0

    async def readiness(self) -> None:
        if self._connection.is_closed:
            raise ReadinessError("broker connection is closed")
        missing = [n for n in self._queue_names if n not in self._tags]
        if missing:
            raise ReadinessError(f"no consumer on {', '.join(missing)}")
        await self.ensure()

    @property
    def registered(self) -> int:
        return len(self._tags)

    async def stop(self) -> None:
        """Stop receiving; deliveries already prefetched stay unacked until their channel
        closes, which returns them to the queue."""
        async with self._changing:
            self._stopped = True
            for name in list(self._tags):
                await self._cancel(name)
        self._tags.clear()

    async def _cancel(self, name: str) -> None:
        """Stop receiving from one shard; its channel stays open for the acks still due."""
        tag = self._tags.pop(name, None)
        queue = self._queues.get(name)
        if tag is None or queue is None:
            return
        try:
            await queue.cancel(tag)
        except Exception as exc:
            log.warning("consumer_cancel_failed", queue=name, error=repr(exc))

    async def close(self) -> None:
        for channel in self._channels.values():
            if not channel.is_closed:
                await channel.close()
        self._channels.clear()
