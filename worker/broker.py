"""The broker link: one AMQP connection, owned and re-made by the worker itself.

The worker does not use aio-pika's robust connection. A robust connection restores channels and
consumers behind the worker's back: after a broker restart it has been seen to leave a shard with
two consumers, or with none, and the deliveries received on a channel before it died look like
any other. Instead, a :class:`BrokerLink` task connects, declares the topology, opens one publish
channel (publisher confirms) and tells its listeners the link is up. When the connection closes,
for whatever reason, every channel of it is gone with it: the listeners are told the link is
down (the consumers forget their channels; deliveries of those channels are dropped by the
committer, because the broker returns every unacked message to its queue, in order), and the
task connects again with backoff. Each link carries a generation number, so nothing made on an
old link is ever mistaken for part of the new one.

A publish channel that closes on its own (a channel error) takes the whole connection down with
it: a half-working link would be worse than a short outage. With several broker addresses
(a cluster, :mod:`worker.connect`), each reconnect starts at the address after the one the lost
link was on.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import structlog
from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractExchange

from worker.connect import Addresses, BrokerTimeout, connect_broker
from worker.deadline import bounded
from worker.faults import NO_FAULTS, FaultInjected, FaultPlan
from worker.health import ReadinessError
from worker.pipeline.policy import RECONNECT
from worker.topology import Topology

log = structlog.get_logger(__name__)

CONNECT_TIMEOUT_SECONDS = 30.0
"""The default bound on one connection attempt, handshake and declarations included: a broker
that accepts TCP but never speaks AMQP must not hang the worker (``MEERKAT_CONNECT_TIMEOUT_SECONDS``
sets it)."""


@dataclass(frozen=True)
class Link:
    """One live connection and what the worker made on it."""

    generation: int
    connection: AbstractConnection
    publish_channel: AbstractChannel
    dead_letters: AbstractExchange
    events: AbstractExchange

    @property
    def is_up(self) -> bool:
        return not self.connection.is_closed and not self.publish_channel.is_closed


LinkListener = Callable[[Link], Awaitable[None]]


class BrokerLink:
    def __init__(
        self, url: str, topology: Topology, *, faults: FaultPlan = NO_FAULTS,
        connect_timeout: float = CONNECT_TIMEOUT_SECONDS,
    ) -> None:
        self._addresses = Addresses(url)
        self._connect_timeout = connect_timeout
        self._topology = topology
        self._faults = faults
        self._generation = 0
        self._link: Link | None = None
        self._changed = asyncio.Condition()
        self._on_up: list[LinkListener] = []
        self._on_down: list[LinkListener] = []

    def on_up(self, listener: LinkListener) -> None:
        self._on_up.append(listener)

    def on_down(self, listener: LinkListener) -> None:
        self._on_down.append(listener)

    @property
    def link(self) -> Link | None:
        """The live link, or None while connecting."""
        link = self._link
        return link if link is not None and link.is_up else None

    async def wait_up(self) -> Link:
        """The live link, waiting for one if the broker is away."""
        async with self._changed:
            await self._changed.wait_for(lambda: self.link is not None)
        link = self.link
        assert link is not None
        return link

    async def connect_once(self) -> Link:
        """Connect, check the shard count, declare the topology, open the publish channel
        (raises on failure: :class:`~worker.connect.BrokerTimeout` when the broker does not
        answer in time, :class:`~worker.topology.TopologyError` when its topology is wrong)."""
        connection = await connect_broker(self._addresses, self._connect_timeout)
        try:
            link = await bounded(self._set_up(connection), self._connect_timeout)
        except BaseException as exc:
            with contextlib.suppress(Exception):
                await connection.close()
            if isinstance(exc, TimeoutError):
                raise BrokerTimeout(
                    f"the broker took more than {self._connect_timeout:g}s to declare the "
                    "topology (MEERKAT_CONNECT_TIMEOUT_SECONDS)"
                ) from None
            raise
        return link

    async def _set_up(self, connection: AbstractConnection) -> Link:
        await self._topology.verify_shard_count(connection)
        setup = await connection.channel()
        await self._topology.declare(setup)
        await setup.close()
        publish = await connection.channel(publisher_confirms=True)
        dead_letters = await publish.get_exchange(self._topology.dead_letter_exchange)
        events = await publish.get_exchange(self._topology.events_exchange)
        self._generation += 1
        return Link(self._generation, connection, publish, dead_letters, events)

    async def run(self, first: Link | None = None) -> None:
        """Keep a link up for as long as the worker runs (a supervised task); ``first`` is a
        link already made by :meth:`connect_once` at start-up."""
        attempt = 0
        while True:
            try:
                link = first or await self.connect_once()
            except Exception as exc:
                attempt += 1
                log.warning("broker_connect_failed", attempt=attempt, error=repr(exc))
                await asyncio.sleep(RECONNECT.delay(attempt))
                continue
            first = None
            try:
                await self._faults.reach("broker_session")
                await self._serve(link)
                attempt = 0
            except FaultInjected:
                raise
            except Exception as exc:
                # A listener failed on the new link (after a broker restart a quorum queue
                # may not have a leader yet): start afresh, backing off.
                attempt += 1
                log.warning("broker_link_setup_failed", attempt=attempt, error=repr(exc))
                await asyncio.sleep(RECONNECT.delay(attempt))
            finally:
                with contextlib.suppress(Exception):
                    await link.connection.close()

    async def _serve(self, link: Link) -> None:
        log.info("broker_connected", generation=link.generation)
        lost = asyncio.get_running_loop().create_future()

        def mark_lost(*_: object) -> None:
            if not lost.done():
                lost.set_result(None)

        link.connection.close_callbacks.add(mark_lost)
        link.publish_channel.close_callbacks.add(mark_lost)
        try:
            for listener in self._on_up:  # consumers are consuming once the link is shown up
                await listener(link)
            await self._set(link)
            await lost
        finally:
            await self._set(None)
            log.warning("broker_connection_lost", generation=link.generation)
            for listener in self._on_down:
                with contextlib.suppress(Exception):
                    await listener(link)
            with contextlib.suppress(Exception):
                await link.connection.close()

    async def _set(self, link: Link | None) -> None:
        async with self._changed:
            self._link = link
            self._changed.notify_all()

    async def message_count(self, queue: str) -> int:
        """Ready messages in ``queue``, by a passive declare on a channel of its own (a missing
        queue closes the channel it was asked on; the publish channel must not be that one).
        Raises when the link is down or the queue does not exist."""
        link = self.link
        if link is None:
            raise ReadinessError("not connected to the broker")
        channel = await link.connection.channel()
        try:
            declared = await channel.declare_queue(queue, passive=True)
            return declared.declaration_result.message_count or 0
        finally:
            if not channel.is_closed:
                with contextlib.suppress(Exception):
                    await channel.close()

    async def readiness(self) -> None:
        if self.link is None:
            raise ReadinessError("not connected to the broker")

    async def close(self) -> None:
        link, self._link = self._link, None
        if link is not None:
            with contextlib.suppress(Exception):
                await link.connection.close()
