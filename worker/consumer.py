"""Shard consumers: one channel per ingress shard queue, each feeding the group committer.

Every worker consumes every shard queue; the queues are single-active-consumer, so the broker
lets exactly one consumer of a shard receive at a time and promotes a standby when it goes away.

After a reconnect the robust connection restores channels and consumers by itself, but it has
been seen to leave a queue with no consumer after a broker restart (aio-pika issue 231). So
after every reconnect, and on every readiness check, each shard is verified and re-consumed if
its consumer is gone.
"""

from __future__ import annotations

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

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        self._committer.submit(message)

    async def start(self) -> None:
        for name in self._queue_names:
            await self._consume(name)
        self._connection.reconnect_callbacks.add(self._after_reconnect)

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
        """Re-consume any shard whose consumer vanished; returns how many were restored."""
        restored = 0
        for name in self._queue_names:
            queue = self._queues.get(name)
            channel = self._channels.get(name)
            if queue is None or channel is None or channel.is_closed or name not in self._tags:
                log.warning("consumer_missing", queue=name)
                await self._consume(name)
                restored += 1
        return restored

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
        for name, tag in list(self._tags.items()):
            queue = self._queues.get(name)
            if queue is not None:
                try:
                    await queue.cancel(tag)
                except Exception as exc:
                    log.warning("consumer_cancel_failed", queue=name, error=repr(exc))
        self._tags.clear()

    async def close(self) -> None:
        for channel in self._channels.values():
            if not channel.is_closed:
                await channel.close()
        self._channels.clear()
