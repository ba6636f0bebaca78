"""Putting envelopes on the wire: the AMQP message, the confirmed publish, request and reply.

Inputs go to ``<prefix>.ingress``, commands to ``<prefix>.commands`` (which forwards them to the
ingress exchange; the worker refuses a command that did not come through it, and an input that
did not come through the ingress exchange). Every publish is ``mandatory`` and waits for the
broker's confirm: a message the broker cannot route (no shard queue bound, i.e. the topology was
never declared) comes back and raises :class:`~worker.client.errors.Unroutable` instead of
vanishing; an exchange that does not exist raises
:class:`~worker.client.errors.ExchangeMissing`. Replies are awaited on RabbitMQ's direct
reply-to, which the worker always answers (a named reply queue must match
``MEERKAT_REPLY_QUEUE_PREFIX``).

These functions take a channel (or an exchange) and leave connecting to the caller; the
:class:`~worker.client.producer.Client` holds a connection and calls them, and so do the command
line, ``dlq replay`` and the benchmarks.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from uuid import UUID, uuid4

import aio_pika
from aio_pika.abc import (
    AbstractChannel,
    AbstractConnection,
    AbstractExchange,
    AbstractIncomingMessage,
    DeliveryMode,
)
from aiormq.exceptions import ChannelNotFoundEntity, DeliveryError, PublishError
from pamqp.commands import Basic
from pydantic import ValidationError

from schemas import COMMAND_MESSAGE_TYPE, INPUT_MESSAGE_TYPE, CommandEnvelope, InputEnvelope, Reply
from worker.client.errors import ExchangeMissing, NoReply, NotConfirmed, UnexpectedReply, Unroutable
from worker.client.messages import describe
from worker.deadline import bounded
from worker.pipeline.authz import DIRECT_REPLY_TO
from worker.topology import Topology

JSON = "application/json"
DEFAULT_TOPOLOGY = Topology()

PublishTarget = AbstractExchange | AbstractChannel
"""The exchange itself, or a channel on which to address it by name."""

PublishRequest = Callable[[AbstractChannel, str, str], Awaitable[object]]
"""Publishes a request on the given channel (direct reply-to needs the request published on the
channel that consumes the replies) with its ``reply_to`` and ``correlation_id``."""


def amqp_message(
    envelope: InputEnvelope | CommandEnvelope,
    *,
    reply_to: str | None = None,
    correlation_id: str | None = None,
    user_id: str | None = None,
) -> aio_pika.Message:
    """The AMQP message of the contract: JSON body, persistent, ``message_id`` = the input or
    command id, ``type`` = ``meerkat.input.v1`` / ``meerkat.command.v1``. ``user_id`` goes on
    commands only (the broker checks it names the publishing connection's user)."""
    message_id: UUID
    if isinstance(envelope, InputEnvelope):
        message_id, message_type, user_id = envelope.input.header.id, INPUT_MESSAGE_TYPE, None
    else:
        message_id, message_type = envelope.command.command_id, COMMAND_MESSAGE_TYPE
    return aio_pika.Message(
        envelope.model_dump_json().encode("utf-8"),
        content_type=JSON,
        delivery_mode=DeliveryMode.PERSISTENT,
        message_id=str(message_id),
        type=message_type,
        reply_to=reply_to,
        correlation_id=correlation_id,
        user_id=user_id,
    )


def exchange_of(envelope: InputEnvelope | CommandEnvelope, topology: Topology) -> str:
    """Where the envelope must be published: the ingress or the commands exchange."""
    if isinstance(envelope, InputEnvelope):
        return topology.ingress_exchange
    return topology.commands_exchange


async def publish_envelope(
    target: PublishTarget,
    envelope: InputEnvelope | CommandEnvelope,
    *,
    reply_to: str | None = None,
    correlation_id: str | None = None,
    topology: Topology = DEFAULT_TOPOLOGY,
    user_id: str | None = None,
) -> None:
    """Publish an input (to the ingress exchange) or a command (to the commands exchange) with
    the runtime id as routing key, and wait for the broker's confirm; ``user_id`` is set on
    commands only. ``target`` may be an exchange: it is then used as it is."""
    message = amqp_message(envelope, reply_to=reply_to, correlation_id=correlation_id,
                           user_id=user_id)
    await publish_confirmed(target, message, envelope.runtime_id, topology=topology,
                            exchange=exchange_of(envelope, topology))


async def publish_input(
    target: PublishTarget,
    envelope: InputEnvelope,
    *,
    reply_to: str | None = None,
    correlation_id: str | None = None,
    topology: Topology = DEFAULT_TOPOLOGY,
) -> None:
    """:func:`publish_envelope` for an input."""
    await publish_envelope(target, envelope, reply_to=reply_to, correlation_id=correlation_id,
                           topology=topology)


async def publish_command(
    target: PublishTarget,
    envelope: CommandEnvelope,
    *,
    reply_to: str | None = None,
    correlation_id: str | None = None,
    topology: Topology = DEFAULT_TOPOLOGY,
    user_id: str | None = None,
) -> None:
    """:func:`publish_envelope` for a command; ``user_id``, the publishing connection's broker
    user, is what ``MEERKAT_COMMAND_USERS`` checks (the broker refuses any other)."""
    await publish_envelope(target, envelope, reply_to=reply_to, correlation_id=correlation_id,
                           topology=topology, user_id=user_id)


async def publish_confirmed(
    target: PublishTarget,
    message: aio_pika.Message,
    routing_key: str,
    *,
    topology: Topology = DEFAULT_TOPOLOGY,
    exchange: str | None = None,
) -> None:
    """Publish ``mandatory`` and wait until the broker has taken it: to ``target`` when it is an
    exchange, else to the exchange named ``exchange`` (by default the ingress exchange).

    Raises ``Unroutable`` when the broker returns the message, ``ExchangeMissing`` when the
    exchange does not exist (the broker has then closed the channel), ``NotConfirmed`` when the
    broker refuses it, and ``TypeError`` on a channel without publisher confirms.
    """
    if isinstance(target, AbstractExchange):
        destination = target
    else:
        destination = await target.get_exchange(exchange or topology.ingress_exchange,
                                                ensure=False)
    try:
        confirm = await destination.publish(message, routing_key, mandatory=True)
    except ChannelNotFoundEntity as exc:
        raise ExchangeMissing(destination.name) from exc
    except PublishError as exc:  # a channel made with on_return_raises=True
        raise Unroutable(message.message_id, destination.name, routing_key) from exc
    except DeliveryError as exc:
        raise NotConfirmed(message.message_id, destination.name) from exc
    if isinstance(confirm, Basic.Ack):
        return
    if confirm is None:
        raise TypeError("publishing needs a channel opened with publisher_confirms=True")
    raise Unroutable(message.message_id, destination.name, routing_key)


async def request_reply(
    connection: AbstractConnection,
    publish: PublishRequest,
    *,
    wait_seconds: float,
    correlation_id: str | None = None,
) -> Reply:
    """Publish a request with RabbitMQ's direct reply-to and wait for the matching reply.

    The replies are consumed (``no_ack``) from the pseudo-queue ``amq.rabbitmq.reply-to`` on a
    channel of their own, and the request is published on that same channel, as direct reply-to
    requires; the broker gives the worker a ``reply_to`` naming this channel. A reply that
    arrives after the timeout finds the channel closed and is dropped by the broker.
    Raises ``NoReply`` after ``wait_seconds``, ``UnexpectedReply`` (a ``ValueError``) for a
    reply that is not a ``Reply``.
    """
    correlation = correlation_id or uuid4().hex
    channel = await connection.channel(publisher_confirms=True)
    try:
        replies = await channel.get_queue(DIRECT_REPLY_TO, ensure=False)
        arrived: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

        async def on_reply(message: AbstractIncomingMessage) -> None:
            # Anything else on this queue would be a stray; only our correlation id counts.
            if message.correlation_id == correlation and not arrived.done():
                arrived.set_result(message.body)

        await replies.consume(on_reply, no_ack=True)
        await publish(channel, DIRECT_REPLY_TO, correlation)
        try:
            body = await bounded(arrived, wait_seconds)
        except TimeoutError:
            raise NoReply(wait_seconds, correlation) from None
    finally:
        if not channel.is_closed:
            await channel.close()
    try:
        return Reply.model_validate_json(body)
    except ValidationError as exc:
        raise UnexpectedReply(f"the reply is not a valid Reply: {describe(exc)}") from None
