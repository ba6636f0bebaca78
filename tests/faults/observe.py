"""What a fault run watches from outside the worker: the events exchange and the dead queue.

The event tap is a durable queue of the run's own, bound to the events exchange with ``#`` and
declared before the first publish, whose consumer appends every body to an
:class:`~worker.history.published.EventCapture` file for ``verify``. Durable, not exclusive:
when the broker restarts, an exclusive queue would vanish with its connection and every event
published before the tap reconnected would be missing from the capture, which ``verify`` would
blame on the worker. A durable queue keeps them; the robust connection re-consumes.

A delivery is acked only after its body is written, so a broker restart can only duplicate a
line (events are at least once anyway; the checker goes by event id), never lose one.

:meth:`EventTap.barrier` answers "has the capture caught up?": a marker published straight to
the tap's queue comes out after everything queued before it.

The dead queue is read by message id only (``basic.get`` without ack, then the channel is closed
so the broker takes every message back); bodies are not parsed, since the hostile ones are
built to break parsers.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import aio_pika
from aio_pika.abc import AbstractIncomingMessage, AbstractRobustConnection
from aiormq.exceptions import AMQPError

from worker.history.published import EventCapture
from worker.topology import Topology

BARRIER_TYPE = "meerkat.faults.barrier"
TERMINAL_INPUT_CODES = frozenset(
    {"input.consumed", "input.abandoned", "input.rejected", "input.coalesced",
     "input.superseded"}
)
"""Codes after which an input needs nothing more from the worker."""


def tap_queue_name(topology: Topology) -> str:
    return f"{topology.prefix}.faults-tap"


class EventTap:
    def __init__(self, amqp_url: str, topology: Topology, capture_path: Path) -> None:
        self.amqp_url = amqp_url
        self.topology = topology
        self.queue_name = tap_queue_name(topology)
        self.capture = EventCapture(capture_path)
        self.finished: dict[UUID, str] = {}
        """Input id → the first terminal event code seen for it."""
        self.events_seen = 0
        self._barriers: dict[str, asyncio.Future[None]] = {}
        self._connection: AbstractRobustConnection | None = None

    async def start(self) -> None:
        """Declare the events exchange and the tap queue, and start capturing."""
        # reconnect_interval: the default 5 s would leave the capture behind the worker after
        # a broker restart for no reason.
        self._connection = await aio_pika.connect_robust(self.amqp_url, reconnect_interval=0.5)
        channel = await self._connection.channel()
        # Only the events exchange: the worker declares the rest with arguments (delivery
        # limits) that are its own business; an equal declaration here changes nothing.
        events = self.topology.events_exchange
        await channel.declare_exchange(events, self.topology.exchange_types()[events],
                                       durable=True)
        await channel.set_qos(prefetch_count=1000)
        queue = await channel.declare_queue(self.queue_name, durable=True)
        await queue.bind(self.topology.events_exchange, routing_key="#")
        await queue.consume(self._on_message)

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        # Everything up to the ack is synchronous, so lines land in delivery order even though
        # each delivery is handled by a task of its own.
        if message.type == BARRIER_TYPE:
            waiter = self._barriers.pop(message.message_id or "", None)
            if waiter is not None and not waiter.done():
                waiter.set_result(None)
        else:
            self.capture.append(message.body)
            self.events_seen += 1
            self._note(json.loads(message.body))
        with contextlib.suppress(AMQPError, RuntimeError):
            await message.ack()

    def _note(self, event: Any) -> None:
        if not isinstance(event, dict) or event.get("code") not in TERMINAL_INPUT_CODES:
            return
        data = event.get("data")
        input_id = data.get("input_id") if isinstance(data, dict) else None
        if isinstance(input_id, str):
            self.finished.setdefault(UUID(input_id), str(event["code"]))

    async def barrier(self, wait_seconds: float = 30) -> None:
        """Until every event queued for the tap before now has been written to the capture."""
        assert self._connection is not None
        marker = str(uuid4())
        arrived: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._barriers[marker] = arrived
        channel = await self._connection.channel()
        try:
            await channel.default_exchange.publish(
                aio_pika.Message(b"{}", type=BARRIER_TYPE, message_id=marker), self.queue_name)
        finally:
            await channel.close()
        try:
            await asyncio.wait_for(arrived, wait_seconds)
        except TimeoutError:
            raise AssertionError(f"the event capture did not catch up within {wait_seconds:g}s "
                                 f"(barrier {marker} not seen on {self.queue_name})") from None

    async def close(self) -> None:
        """Stop capturing and delete the tap queue."""
        connection, self._connection = self._connection, None
        self.capture.close()
        if connection is None:
            return
        with contextlib.suppress(AMQPError, RuntimeError, OSError, TimeoutError):
            channel = await connection.channel()
            await channel.queue_delete(self.queue_name)
        with contextlib.suppress(AMQPError, RuntimeError, OSError, TimeoutError):
            await asyncio.wait_for(connection.close(), 10)


async def dead_message_ids(amqp_url: str, topology: Topology) -> list[str | None]:
    """The message ids in the dead queue, every message left in place."""
    connection = await aio_pika.connect(amqp_url)
    try:
        channel = await connection.channel()
        queue = await channel.get_queue(topology.dead_queue, ensure=True)  # passive
        ids: list[str | None] = []
        while (message := await queue.get(no_ack=False, fail=False)) is not None:
            ids.append(message.message_id)
        # Closing the channel hands every unacked message back to the queue at once.
        await channel.close()
        return ids
    finally:
        await connection.close()


async def delete_topology(amqp_url: str, topology: Topology) -> None:
    """Delete every queue and exchange of the run (missing ones are fine)."""
    connection = await aio_pika.connect(amqp_url)
    try:
        channel = await connection.channel()
        for queue in [*topology.all_queue_names(), tap_queue_name(topology)]:
            await channel.queue_delete(queue)
        for exchange in topology.exchange_names():
            await channel.exchange_delete(exchange)
    finally:
        await connection.close()
