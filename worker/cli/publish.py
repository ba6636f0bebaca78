"""Publishing inputs and commands, and waiting for the worker's reply.

Inputs go to the ingress exchange, commands to the commands exchange (which forwards them to the
ingress exchange; the worker refuses a command that did not come through it). Every publish
waits for the broker's confirm and is ``mandatory``: a message the broker cannot route (no shard
queue bound, i.e. the topology was never declared) comes back and raises ``Unroutable`` instead
of vanishing. Replies are awaited on RabbitMQ's direct reply-to, which the worker always
answers (a named reply queue must match ``MEERKAT_REPLY_QUEUE_PREFIX``).
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Awaitable, Callable
from pathlib import Path
from uuid import UUID, uuid4

import aio_pika
from aio_pika.abc import (
    AbstractChannel,
    AbstractConnection,
    AbstractExchange,
    AbstractIncomingMessage,
    DeliveryMode,
)
from aiormq.exceptions import ChannelNotFoundEntity
from pamqp.commands import Basic
from pydantic import TypeAdapter, ValidationError

from schemas import (
    COMMAND_MESSAGE_TYPE,
    INPUT_MESSAGE_TYPE,
    Command,
    CommandEnvelope,
    ContentBlock,
    Durability,
    ImageMediaType,
    InlineImageBlock,
    InputEnvelope,
    InputHeader,
    OperatorSource,
    PromptInput,
    Reply,
    TextBlock,
)
from worker.ids import utcnow, uuid7
from worker.pipeline.authz import DIRECT_REPLY_TO
from worker.topology import Topology, TopologyError

JSON = "application/json"
DEFAULT_TOPOLOGY = Topology()

PublishTarget = AbstractExchange | AbstractChannel
"""The exchange itself, or a channel on which to address it by name."""

PublishRequest = Callable[[AbstractChannel, str, str], Awaitable[object]]
"""Publishes a request on the given channel (direct reply-to needs the request published on the
channel that consumes the replies) with its ``reply_to`` and ``correlation_id``."""


class Unroutable(TopologyError):
    """The broker returned the message: no queue is bound to the exchange."""


class NoReply(Exception):
    """No reply arrived within the timeout."""


# --- envelopes --------------------------------------------------------------------------------


def build_prompt(
    runtime_id: str, text: str, images: list[Path], idempotency_key: str | None = None
) -> InputEnvelope:
    """A durable operator prompt: the text, then each image inline.

    Raises ``ValueError`` for a file that is not a PNG, JPEG, GIF or WebP image, ``OSError``
    when a file cannot be read.
    """
    content: list[ContentBlock] = [TextBlock(text=text)]
    for path in images:
        raw = path.read_bytes()
        content.append(
            InlineImageBlock(
                media_type=image_media_type(raw, path),
                data=base64.b64encode(raw).decode("ascii"),
            )
        )
    header = InputHeader(
        id=uuid7(),
        timestamp=utcnow(),
        source=OperatorSource(),
        durability=Durability.DURABLE,
        idempotency_key=idempotency_key,
    )
    return InputEnvelope(runtime_id=runtime_id, input=PromptInput(header=header, content=content))


_COMMAND = TypeAdapter[Command](Command)


def build_command(
    runtime_id: str, name: str, reason: str | None = None, input_id: UUID | None = None,
    abandon_reason: str | None = None,
) -> CommandEnvelope:
    """A lifecycle command with a fresh id; ``ValueError`` when the fields do not fit ``name``
    (``input_id`` is for ``abandon_input``, ``abandon_reason`` for ``abandon_pending`` and
    ``abandon_input``, where it defaults to ``cancelled``)."""
    fields: dict[str, object] = {"command_type": name, "command_id": uuid7(), "reason": reason}
    if input_id is not None:
        fields["input_id"] = input_id
    if abandon_reason is not None:
        fields["abandon_reason"] = abandon_reason
    try:
        command = _COMMAND.validate_python(fields)
    except ValidationError as exc:
        raise ValueError(f"not a valid {name} command: {_describe(exc)}") from None
    return CommandEnvelope(runtime_id=runtime_id, command=command)


def image_media_type(raw: bytes, path: Path | str = "image") -> ImageMediaType:
    """The media type told by the file's magic number."""
    if raw.startswith(b"\x89PNG\r\n\x1a\n"):
        return ImageMediaType.PNG
    if raw.startswith(b"\xff\xd8\xff"):
        return ImageMediaType.JPEG
    if raw.startswith((b"GIF87a", b"GIF89a")):
        return ImageMediaType.GIF
    if len(raw) >= 12 and raw[:4] == b"RIFF" and raw[8:12] == b"WEBP":
        return ImageMediaType.WEBP
    raise ValueError(f"{path}: not a PNG, JPEG, GIF or WebP image")


def _describe(exc: ValidationError) -> str:
    return "; ".join(
        ".".join(str(part) for part in error["loc"]) + ": " + error["msg"]
        if error["loc"]
        else error["msg"]
        for error in exc.errors()
    )


# --- publishing -------------------------------------------------------------------------------


async def publish_input(
    target: PublishTarget,
    envelope: InputEnvelope,
    *,
    reply_to: str | None = None,
    correlation_id: str | None = None,
    topology: Topology = DEFAULT_TOPOLOGY,
) -> None:
    """Publish an input to the ingress exchange with the runtime id as routing key and wait for
    the broker's confirm."""
    message = _message(
        envelope, envelope.input.header.id, INPUT_MESSAGE_TYPE, reply_to, correlation_id
    )
    await publish_confirmed(target, message, envelope.runtime_id, topology=topology)


async def publish_command(
    target: PublishTarget,
    envelope: CommandEnvelope,
    *,
    reply_to: str | None = None,
    correlation_id: str | None = None,
    topology: Topology = DEFAULT_TOPOLOGY,
    user_id: str | None = None,
) -> None:
    """Publish a command to the commands exchange with the runtime id as routing key and wait
    for the broker's confirm. ``user_id``, the publishing connection's broker user, is what
    ``MEERKAT_COMMAND_USERS`` checks (the broker refuses any other)."""
    message = _message(
        envelope, envelope.command.command_id, COMMAND_MESSAGE_TYPE, reply_to, correlation_id,
        user_id,
    )
    await publish_confirmed(target, message, envelope.runtime_id, topology=topology,
                            exchange=topology.commands_exchange)


async def publish_envelope(
    target: PublishTarget,
    envelope: InputEnvelope | CommandEnvelope,
    *,
    reply_to: str | None = None,
    correlation_id: str | None = None,
    topology: Topology = DEFAULT_TOPOLOGY,
    user_id: str | None = None,
) -> None:
    """Publish an input (to the ingress exchange) or a command (to the commands exchange),
    whichever ``envelope`` holds; ``user_id`` is set on commands only."""
    if isinstance(envelope, InputEnvelope):
        await publish_input(target, envelope, reply_to=reply_to, correlation_id=correlation_id,
                            topology=topology)
    else:
        await publish_command(target, envelope, reply_to=reply_to,
                              correlation_id=correlation_id, topology=topology, user_id=user_id)


def message_id_of(envelope: InputEnvelope | CommandEnvelope) -> str:
    """The AMQP ``message_id``: the input id or the command id."""
    if isinstance(envelope, InputEnvelope):
        return str(envelope.input.header.id)
    return str(envelope.command.command_id)


def _message(
    envelope: InputEnvelope | CommandEnvelope,
    message_id: UUID,
    message_type: str,
    reply_to: str | None,
    correlation_id: str | None,
    user_id: str | None = None,
) -> aio_pika.Message:
    """The AMQP message of CONTRACT.md: JSON body, persistent, id and type as properties."""
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

    Raises ``Unroutable`` when the broker returns the message and ``TopologyError`` when the
    exchange does not exist (the broker has then closed the channel).
    """
    if isinstance(target, AbstractExchange):
        destination = target
    else:
        destination = await target.get_exchange(exchange or topology.ingress_exchange,
                                                ensure=False)
    await _publish_mandatory(destination, message, routing_key)


async def _publish_mandatory(
    exchange: AbstractExchange, message: aio_pika.Message, routing_key: str
) -> None:
    try:
        confirm = await exchange.publish(message, routing_key, mandatory=True)
    except ChannelNotFoundEntity as exc:
        raise TopologyError(
            f"exchange {exchange.name} does not exist; "
            "declare the topology with: meerkat-worker topology declare"
        ) from exc
    if isinstance(confirm, Basic.Ack):
        return
    if confirm is None:
        raise TypeError("publishing needs a channel opened with publisher_confirms=True")
    raise Unroutable(
        f"the broker could not route message {message.message_id} (routing key {routing_key!r}) "
        f"from exchange {exchange.name}: no queue is bound to it; "
        "declare the topology with: meerkat-worker topology declare"
    )


# --- request and reply ------------------------------------------------------------------------


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
    Raises ``NoReply`` after ``wait_seconds``, ``ValueError`` for a reply that is not a
    ``Reply``.
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
            body = await asyncio.wait_for(arrived, wait_seconds)
        except TimeoutError:
            raise NoReply(
                f"no reply within {wait_seconds:g}s; is a worker consuming the ingress queues?"
            ) from None
    finally:
        if not channel.is_closed:
            await channel.close()
    try:
        return Reply.model_validate_json(body)
    except ValidationError as exc:
        raise ValueError(f"the reply is not a valid Reply: {_describe(exc)}") from None
