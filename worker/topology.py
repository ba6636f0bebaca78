"""The broker topology: exchanges, shard queues and the dead-letter path (CONTRACT.md).

Producers publish to the ingress exchange with the runtime id as routing key. The exchange is of
type ``x-consistent-hash``, so the broker, not the producer, picks the shard queue: every queue is
bound with the weight ``"1"`` and one runtime id always hashes onto the same queue for as long as
the set of queues stays the same. That is why the number of shards is fixed per deployment.

Commands go to an exchange of their own, ``<prefix>.commands`` (``fanout``), which has one
exchange-to-exchange binding to the ingress exchange. Broker permissions can then tell the
producers of inputs (write on the ingress exchange) from operators (write on the commands
exchange), and the worker refuses a message whose kind did not come through its exchange
(:mod:`worker.pipeline.authz`). A command keeps its routing key through the fanout hop, so it
hashes onto the same shard queue as its runtime's inputs and is ordered with them by that queue.

Each shard queue is a quorum queue with single-active-consumer (one worker at a time, in order)
and a delivery limit. Behaviour of quorum queues that the worker relies on, as observed on
RabbitMQ 3.10.8 (and pinned by ``tests/integration/test_topology.py``):

- ``x-delivery-limit`` counts *returns*, not deliveries: every ``nack``/``reject`` with
  ``requeue=True`` adds one to the message's ``x-delivery-count`` header, and a message returned
  more than ``x-delivery-limit`` times is dead-lettered. With a limit of N a message is therefore
  delivered at most N + 1 times.
- The broker dead-letters it to ``x-dead-letter-exchange`` with ``x-death`` reason
  ``delivery_limit``, header ``x-first-death-queue`` naming the shard queue, the original routing
  key, and every header the message already carried (so ``x-meerkat-error`` survives).
- ``basic.get`` is refused on quorum queues with single-active-consumer: shard queues can only be
  consumed. The dead queue has no single-active-consumer, so ``dlq`` can ``basic.get`` from it.
- Through the exchange-to-exchange binding, ``basic.deliver`` names the exchange the message was
  *published to*: a command published to ``<prefix>.commands`` arrives on the shard queue with
  ``exchange`` ``<prefix>.commands`` and its routing key unchanged, on the same shard queue and in
  publish order with the inputs of that runtime published to ``<prefix>.ingress`` (whose
  deliveries name ``<prefix>.ingress``). The worker trusts that name: only the broker sets it.
- Binding the other way round (the consistent-hash exchange as the *source*) is refused with 406
  "The binding key must be an integer": the consistent-hash exchange checks the keys of its own
  bindings, not of bindings into it. The binding is ``exchange.bind(destination=ingress,
  source=commands)``, in aio-pika ``await ingress.bind(commands)``.
- A ``user_id`` property that is not the publishing connection's user is refused by the broker
  with 406 PRECONDITION_FAILED (a channel error), so a delivered ``user_id`` names the publisher.
- The dead queue is bounded: ``x-max-length`` with ``x-overflow: drop-head`` drops the oldest
  dead letter when a new one arrives at the bound, so the newest are kept. Changing the bound of
  an existing queue is refused (406 PRECONDITION_FAILED) like any other argument.
- A missing exchange type is a *connection* error (503 COMMAND_INVALID "unknown exchange type"):
  the broker closes the whole connection, not just the channel. ``declare`` turns it into
  ``PluginMissing``; ``check`` probes the plugin on a connection of its own.

The shard count is the one thing a declaration cannot show wrong: declaring 8 shard queues on a
broker that has 16 succeeds, and a worker would then consume half of them. Before declaring,
:meth:`Topology.verify_shard_count` counts the shard queues by passive declares
(:mod:`worker.shard_count`) and raises :class:`ShardCountMismatch` when the count differs.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Any
from uuid import uuid4

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractExchange, ExchangeType
from aiormq.exceptions import (
    AMQPChannelError,
    ChannelNotFoundEntity,
    ChannelPreconditionFailed,
    ConnectionCommandInvalid,
)
from yarl import URL

from worker.config import Settings
from worker.shard_count import MAX_SHARD_QUEUES, settled_shard_count

CONSISTENT_HASH = "x-consistent-hash"
PLUGIN = "rabbitmq_consistent_hash_exchange"
PLUGIN_MISSING = (
    f"the RabbitMQ plugin {PLUGIN} is not enabled; enable it with: rabbitmq-plugins enable {PLUGIN}"
)
SHARD_WEIGHT = "1"
"""Binding key of every shard queue: its weight on the consistent-hash ring."""
MAX_SHARDS = MAX_SHARD_QUEUES


class TopologyError(Exception):
    """The broker's exchanges and queues are not what the worker needs."""


class PluginMissing(TopologyError):
    def __init__(self) -> None:
        super().__init__(PLUGIN_MISSING)


class ShardCountMismatch(TopologyError):
    """The broker has another number of shard queues than ``MEERKAT_SHARDS`` says."""

    def __init__(self, topology: Topology, declared: int) -> None:
        last = f"{topology.ingress_exchange}.{declared - 1:02d}"
        super().__init__(
            f"the broker has {declared} shard queues ({topology.shard_queue(0)} to {last}) "
            f"but MEERKAT_SHARDS is {topology.shards}; set MEERKAT_SHARDS={declared} "
            "(the shard count is fixed per deployment)"
        )
        self.declared = declared


@dataclass(frozen=True)
class Topology:
    """Names and arguments of every exchange and queue; ``prefix`` namespaces all of them."""

    shards: int = 16
    delivery_limit: int = 5
    prefix: str = "meerkat"
    dead_letter_max_length: int = 100_000
    """``x-max-length`` of the dead queue; past it the broker drops the oldest dead letter."""

    def __post_init__(self) -> None:
        if not 1 <= self.shards <= MAX_SHARDS:
            raise ValueError(f"shards must be 1..{MAX_SHARDS}, not {self.shards}")
        if self.delivery_limit < 1:
            raise ValueError(f"delivery_limit must be at least 1, not {self.delivery_limit}")
        if not self.prefix:
            raise ValueError("the name prefix must not be empty")
        if self.dead_letter_max_length < 1:
            raise ValueError(
                f"dead_letter_max_length must be at least 1, not {self.dead_letter_max_length}"
            )

    @classmethod
    def from_settings(cls, settings: Settings) -> Topology:
        """The deployment's topology from ``worker.config.Settings``."""
        return cls(shards=settings.shards, delivery_limit=settings.broker_delivery_limit,
                   prefix=settings.topology_prefix,
                   dead_letter_max_length=settings.dead_letter_max_length)

    @property
    def ingress_exchange(self) -> str:
        return f"{self.prefix}.ingress"

    @property
    def commands_exchange(self) -> str:
        return f"{self.prefix}.commands"

    @property
    def dead_letter_exchange(self) -> str:
        return f"{self.prefix}.dead-letter"

    @property
    def dead_queue(self) -> str:
        return f"{self.prefix}.dead"

    @property
    def events_exchange(self) -> str:
        return f"{self.prefix}.events"

    def shard_queue(self, shard: int) -> str:
        if not 0 <= shard < self.shards:
            raise ValueError(f"shard {shard} is outside 0..{self.shards - 1}")
        return f"{self.ingress_exchange}.{shard:02d}"

    def queue_names(self) -> list[str]:
        """The shard queues in shard order: what the consumers consume."""
        return [self.shard_queue(k) for k in range(self.shards)]

    def exchange_names(self) -> list[str]:
        return [self.ingress_exchange, self.commands_exchange, self.dead_letter_exchange,
                self.events_exchange]

    def all_queue_names(self) -> list[str]:
        return [*self.queue_names(), self.dead_queue]

    def shard_arguments(self) -> dict[str, Any]:
        return {
            "x-queue-type": "quorum",
            "x-single-active-consumer": True,
            "x-delivery-limit": self.delivery_limit,
            "x-dead-letter-exchange": self.dead_letter_exchange,
        }

    def dead_queue_arguments(self) -> dict[str, Any]:
        # drop-head: when full, the oldest dead letter goes and the newest is kept (a quorum
        # queue knows drop-head and reject-publish; refusing new dead letters would lose the
        # ones an operator most likely wants to see).
        return {
            "x-queue-type": "quorum",
            "x-max-length": self.dead_letter_max_length,
            "x-overflow": "drop-head",
        }

    def exchange_types(self) -> dict[str, str]:
        return {
            self.ingress_exchange: CONSISTENT_HASH,
            self.commands_exchange: ExchangeType.FANOUT.value,
            self.dead_letter_exchange: ExchangeType.FANOUT.value,
            self.events_exchange: ExchangeType.TOPIC.value,
        }

    def queue_arguments(self) -> dict[str, dict[str, Any]]:
        arguments = {name: self.shard_arguments() for name in self.queue_names()}
        arguments[self.dead_queue] = self.dead_queue_arguments()
        return arguments

    async def declare(self, channel: AbstractChannel) -> None:
        """Declare everything; declaring an existing, equal topology changes nothing.

        Raises ``PluginMissing`` when the broker lacks the consistent-hash exchange type (the
        broker has then closed the channel's connection) and ``TopologyError`` when an exchange
        exists with another type or a queue with other arguments (another delivery limit or
        queue type, say). The shard count is not checked here: see
        :meth:`verify_shard_count`.
        """
        try:
            ingress = await _declare_exchange(channel, self.ingress_exchange, CONSISTENT_HASH)
        except ConnectionCommandInvalid as exc:
            if "exchange type" in str(exc):
                raise PluginMissing from exc
            raise
        commands = await _declare_exchange(channel, self.commands_exchange, ExchangeType.FANOUT)
        await ingress.bind(commands, routing_key="")
        dead_letter = await _declare_exchange(
            channel, self.dead_letter_exchange, ExchangeType.FANOUT
        )
        try:
            dead = await channel.declare_queue(
                self.dead_queue, durable=True, arguments=self.dead_queue_arguments()
            )
        except ChannelPreconditionFailed as exc:
            raise TopologyError(
                f"queue {self.dead_queue} was declared with other arguments: "
                f"{_reply_text(exc)}; meerkat-worker topology check lists every difference "
                "(the README's contract notes say how to re-declare the dead queue)"
            ) from exc
        await dead.bind(dead_letter, routing_key="")
        await _declare_exchange(channel, self.events_exchange, ExchangeType.TOPIC)
        for name in self.queue_names():
            try:
                shard = await channel.declare_queue(
                    name, durable=True, arguments=self.shard_arguments()
                )
            except ChannelPreconditionFailed as exc:
                raise TopologyError(
                    f"queue {name} was declared with other arguments: {_reply_text(exc)}; "
                    "meerkat-worker topology check lists every difference (the README's "
                    "contract notes say how to re-declare the shard queues)"
                ) from exc
            await shard.bind(ingress, routing_key=SHARD_WEIGHT)

    async def verify_shard_count(self, connection: AbstractConnection) -> None:
        """Raise :class:`ShardCountMismatch` when the broker holds another number of shard
        queues than :attr:`shards` (nothing declared yet passes)."""
        declared = await settled_shard_count(connection, self._queue_name, self.shards)
        if declared is not None:
            raise ShardCountMismatch(self, declared)

    def _queue_name(self, shard: int) -> str:
        return f"{self.ingress_exchange}.{shard:02d}"

    async def check(self, connection: AbstractConnection) -> list[str]:
        """Human-readable problems with the broker's topology; empty when all is in place.

        Looks without creating: each exchange and queue is first declared passively, then, if it
        exists, declared again with the expected type or arguments, which the broker refuses
        (406) when they differ. Bindings are not visible over AMQP and are not checked; the
        shard count is, by :meth:`verify_shard_count` (a differing count is one problem, not
        one per missing queue). Every failed declare closes its channel, so the work runs on a
        connection of its own to the same broker: a robust connection would reopen each
        closed channel.
        """
        url = _url_of(connection)
        problems: list[str] = []
        plugin = await exchange_type_available_at(url, CONSISTENT_HASH)
        if not plugin:
            problems.append(PLUGIN_MISSING)
        inspector = await aio_pika.connect(url)
        try:
            shards = self
            try:
                await self.verify_shard_count(inspector)
            except ShardCountMismatch as exc:
                problems.append(str(exc))
                shards = replace(self, shards=min(exc.declared, self.shards))
            for name, kind in self.exchange_types().items():
                # Re-declaring with an unknown type would close the whole connection.
                compare = plugin or kind != CONSISTENT_HASH
                problems += await _inspect(
                    inspector, f"exchange {name}", _exchange_declaration(name, kind), compare
                )
            for name, arguments in shards.queue_arguments().items():
                problems += await _inspect(
                    inspector, f"queue {name}", _queue_declaration(name, arguments), compare=True
                )
        finally:
            await inspector.close()
        return problems


async def _declare_exchange(
    channel: AbstractChannel, name: str, kind: str | ExchangeType
) -> AbstractExchange:
    try:
        return await channel.declare_exchange(name, kind, durable=True)
    except ChannelPreconditionFailed as exc:
        raise TopologyError(
            f"exchange {name} was declared otherwise: {_reply_text(exc)}; meerkat-worker "
            "topology check lists every difference (delete the exchange and run meerkat-worker "
            "topology declare)"
        ) from exc


Declaration = Callable[[AbstractChannel, bool], Awaitable[object]]
"""Declares one exchange or queue on a channel, passively or not."""


def _exchange_declaration(name: str, kind: str) -> Declaration:
    async def declare(channel: AbstractChannel, passive: bool) -> object:
        return await channel.declare_exchange(name, kind, durable=True, passive=passive)

    return declare


def _queue_declaration(name: str, arguments: dict[str, Any]) -> Declaration:
    async def declare(channel: AbstractChannel, passive: bool) -> object:
        return await channel.declare_queue(
            name, durable=True, arguments=arguments, passive=passive
        )

    return declare


async def _inspect(
    connection: AbstractConnection, what: str, declare: Declaration, compare: bool
) -> list[str]:
    """The problem with one exchange or queue, if any. Each declare gets a fresh channel because
    the broker closes the channel on which a declare fails."""
    for passive in (True, False) if compare else (True,):
        channel = await connection.channel()
        try:
            await declare(channel, passive)
        except ChannelNotFoundEntity:
            return [f"{what} is missing; declare it with: meerkat-worker topology declare"]
        except ChannelPreconditionFailed as exc:
            return [f"{what} differs from the expected declaration: {_reply_text(exc)}"]
        finally:
            await _close_quietly(channel)
    return []


async def consistent_hash_available(connection: AbstractConnection) -> bool:
    """Whether the broker knows the ``x-consistent-hash`` exchange type."""
    return await exchange_type_available(connection, CONSISTENT_HASH)


async def exchange_type_available(connection: AbstractConnection, exchange_type: str) -> bool:
    """Whether the broker of this connection knows the exchange type (probed on another
    connection: an unknown type makes the broker close the connection it was asked on)."""
    return await exchange_type_available_at(_url_of(connection), exchange_type)


async def exchange_type_available_at(url: URL, exchange_type: str) -> bool:
    """Declare and delete a throw-away exchange of that type on a connection of its own."""
    probe = await aio_pika.connect(url)
    try:
        channel = await probe.channel()
        name = f"probe.{exchange_type}.{uuid4().hex}"
        try:
            await channel.declare_exchange(name, exchange_type, auto_delete=True)
        except ConnectionCommandInvalid:
            return False
        await channel.exchange_delete(name)
        return True
    finally:
        await probe.close()


def _url_of(connection: AbstractConnection) -> URL:
    if not isinstance(connection, aio_pika.Connection):
        raise TypeError("the broker's URL is needed: pass an aio_pika connection")
    return connection.url


async def _close_quietly(channel: AbstractChannel) -> None:
    if channel.is_closed:
        return
    with contextlib.suppress(AMQPChannelError, RuntimeError):
        await channel.close()


def _reply_text(exc: BaseException) -> str:
    return str(exc.args[0]) if exc.args else type(exc).__name__
