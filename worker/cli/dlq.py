"""The dead queue: look at dead-lettered messages, and put them back where they were published.

Messages reach the dead queue two ways: the broker dead-letters a shard message returned more
often than the delivery limit (``x-death`` reason ``delivery_limit``), and the worker publishes a
permanently failed message to the dead-letter exchange with the reason in ``x-meerkat-error``.
Either way the routing key is the runtime id the producer published with, which is what a replay
needs to reach the same shard again.

A replayed input goes to the ingress exchange and a replayed command to the commands exchange
(the worker refuses a command from anywhere else, so a command once dead-lettered because it was
published to the ingress exchange is accepted when replayed). The replaying connection is the new
publisher: a copy carries its ``user_id``, if given, and never the original one (the broker would
refuse that).

Listing takes messages with ``basic.get`` without acking and then returns them. On a quorum queue
each return adds one to ``x-delivery-count``; the dead queue has no delivery limit, so that count
only grows and nothing is lost. The dead queue is bounded in length (``x-max-length``, dropping
the oldest), which a listing does not change: it adds no message.

The broker puts a returned message at the tail of a quorum queue (RabbitMQ 3.10), behind the
messages not yet taken. So whatever holds messages to give them back goes through the whole
queue first: the messages given back, in the order they were taken, then make the queue again,
in its order. A listing does so whatever its limit, and so do a replay and a purge that had to
pass a message over: one limited to the messages a :class:`~worker.cli.dead_letters.
DeadLetterFilter` picks, or one that met a message it had replayed. A replay or purge of every
message takes from the head and holds nothing, and stops at its limit. A matching message is
replayed (acked once the broker has confirmed its copy) or purged (acked); the others are held,
unacked, until the command ends, so they stay in the dead queue as they were, in their order.
(A message dead-lettered in the instant between the end of the pass and the return lands before
them.) Should the command die, the broker returns what it held. Nothing is removed that was not
replayed, purged on purpose, or dropped by ``x-max-length``.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage
from aiormq.exceptions import AMQPError

from worker.cli.dead_letters import DeadLetter, DeadLetterFilter
from worker.client.wire import DEFAULT_TOPOLOGY, publish_confirmed
from worker.pipeline import settle
from worker.pipeline.parsing import reads_as_command
from worker.pipeline.settle import DEAD_LETTERED_AT_HEADER, ERROR_HEADER
from worker.pipeline.wire import PARSER_MAX_DEPTH, NotStrictJson, read_strict_json
from worker.topology import Topology

_DEATH_HEADERS = frozenset(
    {
        "x-death",
        "x-delivery-count",
        "x-first-death-exchange",
        "x-first-death-queue",
        "x-first-death-reason",
        "x-last-death-exchange",
        "x-last-death-queue",
        "x-last-death-reason",
        ERROR_HEADER,
        DEAD_LETTERED_AT_HEADER,
    }
)
"""Headers the broker or the worker added on the way to the dead queue; a replay drops them."""

SELECT_ALL = DeadLetterFilter()

Progress = Callable[[int, int | None], None]
"""Told, after each message taken from the dead queue, how many so far and (if known) how many
the queue held at the start."""


@dataclass(frozen=True)
class Sweep:
    """What a replay or purge did."""

    taken: int
    """Messages replayed or purged."""
    passed_over: int
    """Messages that did not match the filter, returned to the dead queue in their order."""


async def list_dead(
    channel: AbstractChannel, limit: int | None = None, *, topology: Topology = DEFAULT_TOPOLOGY,
    select: DeadLetterFilter = SELECT_ALL, progress: Progress | None = None,
) -> list[DeadLetter]:
    """Up to ``limit`` dead-lettered messages that ``select`` picks, oldest first, leaving them
    all in the queue, in their order (so the whole queue is gone through, whatever the limit:
    see the module docstring)."""
    queue = await channel.get_queue(topology.dead_queue, ensure=True)
    total = (await queue.declare()).message_count if progress is not None else None
    now = datetime.now(UTC)
    held: list[AbstractIncomingMessage] = []
    shown: list[DeadLetter] = []
    try:
        while (message := await queue.get(no_ack=False, fail=False)) is not None:
            held.append(message)
            if progress is not None:
                progress(len(held), total)
            if limit is None or len(shown) < limit:
                letter = dead_letter(message)
                if select.matches(letter, now):
                    shown.append(letter)
        return shown
    finally:
        await _give_back(held)


async def replay_dead(
    channel: AbstractChannel, limit: int | None = None, *, topology: Topology = DEFAULT_TOPOLOGY,
    user_id: str | None = None,
) -> int:
    """:func:`replay_selected` of every message; returns how many were replayed."""
    sweep = await replay_selected(channel, limit, topology=topology, user_id=user_id)
    return sweep.taken


async def replay_selected(
    channel: AbstractChannel, limit: int | None = None, *, topology: Topology = DEFAULT_TOPOLOGY,
    user_id: str | None = None, select: DeadLetterFilter = SELECT_ALL,
    progress: Progress | None = None,
) -> Sweep:
    """Re-publish up to ``limit`` dead-lettered messages that ``select`` picks, oldest first:
    inputs to the ingress exchange, commands to the commands exchange.

    Each one goes out with its runtime id as routing key, its properties and body unchanged and
    the dead-letter headers removed; it is acked from the dead queue only after the broker has
    confirmed the new copy. A message that dies again while the replay runs comes back to the
    tail of the dead queue; meeting it again means everything older has been looked at, so the
    replay stops there instead of cycling. The channel must have publisher confirms.
    """
    ingress = await channel.get_exchange(topology.ingress_exchange, ensure=False)
    commands = await channel.get_exchange(topology.commands_exchange, ensure=False)

    async def replay(message: AbstractIncomingMessage) -> None:
        exchange = commands if is_command_message(message) else ingress
        await publish_confirmed(exchange, replay_copy(message, user_id),
                                replay_routing_key(message))
        await settle.ack_one(message)

    return await _sweep(channel, topology, replay, limit=limit, select=select,
                        progress=progress, stop_at_repeat=True)


async def purge_selected(
    channel: AbstractChannel, limit: int | None = None, *, topology: Topology = DEFAULT_TOPOLOGY,
    select: DeadLetterFilter = SELECT_ALL, progress: Progress | None = None,
) -> Sweep:
    """Delete up to ``limit`` dead-lettered messages that ``select`` picks, oldest first."""
    return await _sweep(channel, topology, settle.ack_one, limit=limit, select=select,
                        progress=progress, stop_at_repeat=False)


async def _sweep(
    channel: AbstractChannel, topology: Topology,
    take: Callable[[AbstractIncomingMessage], Awaitable[None]], *,
    limit: int | None, select: DeadLetterFilter, progress: Progress | None,
    stop_at_repeat: bool,
) -> Sweep:
    """Take each matching message off the head of the dead queue with ``take`` (which acks it
    when done) until ``limit`` are taken; hold the others and give them back at the end. Once a
    message is held, the queue is gone through to its end, so that what is given back returns
    in its order (module docstring)."""
    queue = await channel.get_queue(topology.dead_queue, ensure=False)
    total = (await queue.declare()).message_count if progress is not None else None
    now = datetime.now(UTC)
    held: list[AbstractIncomingMessage] = []
    taken: set[str] = set()
    seen = count = passed_over = 0
    taking = True
    try:
        while True:
            taking = taking and (limit is None or count < limit)
            if not taking and not held:
                break  # only the head was taken: the rest is in its order as it is
            message = await queue.get(no_ack=False, fail=False)
            if message is None:
                break
            seen += 1
            if progress is not None:
                progress(seen, total)
            identity = _identity(message)
            # A replayed message back from the dead: everything older has been looked at.
            taking = taking and not (stop_at_repeat and identity in taken)
            matches = select.matches(dead_letter(message), now)
            if not (taking and matches):
                held.append(message)
                if not matches:
                    passed_over += 1
                continue
            try:
                await take(message)
            except BaseException:
                held.append(message)
                raise
            taken.add(identity)
            count += 1
    finally:
        await _give_back(held)
    return Sweep(taken=count, passed_over=passed_over)


async def _give_back(held: list[AbstractIncomingMessage]) -> None:
    """Return the held messages in the order they were taken. Closing the channel would return
    them too; returning them explicitly keeps the caller's channel usable."""
    for message in held:
        with contextlib.suppress(AMQPError, RuntimeError):
            await settle.release(message)


def _identity(message: AbstractIncomingMessage) -> str:
    return f"{message.message_id}:{hashlib.sha256(message.body).hexdigest()}"


def dead_letter(message: AbstractIncomingMessage) -> DeadLetter:
    headers = message.headers or {}
    deaths = _deaths(headers)
    first = deaths[-1] if deaths else {}
    return DeadLetter(
        message_id=message.message_id,
        message_type=message.type,
        runtime_id=_runtime_id(message.body) or replay_routing_key(message) or None,
        routing_key=message.routing_key or "",
        error=_text(headers.get(ERROR_HEADER)),
        death_reason=_text(headers.get("x-first-death-reason")) or _text(first.get("reason")),
        first_death_queue=_text(headers.get("x-first-death-queue")) or _text(first.get("queue")),
        death_count=sum(int(death.get("count") or 0) for death in deaths),
        dead_lettered_at=_moment(headers.get(DEAD_LETTERED_AT_HEADER))
        or (_moment(deaths[0].get("time")) if deaths else None),
    )


def replay_routing_key(message: AbstractIncomingMessage) -> str:
    """The routing key the producer used: the broker keeps it when it dead-letters."""
    for death in reversed(_deaths(message.headers or {})):
        keys = death.get("routing-keys")
        if isinstance(keys, list) and keys:
            return _text(keys[0]) or ""
    return message.routing_key or ""


def is_command_message(message: AbstractIncomingMessage) -> bool:
    """Whether the worker takes the message for a command (by its ``type``, else its body)."""
    try:
        document = read_strict_json(message.body, PARSER_MAX_DEPTH)
    except NotStrictJson:
        document = None
    return reads_as_command(message.type, document)


def replay_copy(message: AbstractIncomingMessage, user_id: str | None = None) -> aio_pika.Message:
    """The message as its producer published it, without what dead-lettering added, with the
    replaying connection's ``user_id``."""
    headers = {k: v for k, v in (message.headers or {}).items() if k not in _DEATH_HEADERS}
    return aio_pika.Message(
        message.body,
        headers=headers,
        content_type=message.content_type,
        content_encoding=message.content_encoding,
        delivery_mode=message.delivery_mode,
        priority=message.priority,
        correlation_id=message.correlation_id,
        reply_to=message.reply_to,
        message_id=message.message_id,
        timestamp=message.timestamp,
        type=message.type,
        app_id=message.app_id,
        user_id=user_id,
    )


def _deaths(headers: dict[str, Any]) -> list[dict[str, Any]]:
    """``x-death`` entries, most recent first (the broker's order)."""
    deaths = headers.get("x-death")
    if not isinstance(deaths, list):
        return []
    return [death for death in deaths if isinstance(death, dict)]


def _runtime_id(body: bytes) -> str | None:
    try:
        document = read_strict_json(body, PARSER_MAX_DEPTH)
    except NotStrictJson:
        return None
    runtime_id = document.get("runtime_id") if isinstance(document, dict) else None
    return runtime_id if isinstance(runtime_id, str) else None


def _moment(value: Any) -> datetime | None:
    """An AMQP timestamp as an aware datetime (a naive one is UTC, as AMQP has no zone)."""
    if isinstance(value, datetime):
        return value if value.tzinfo is not None else value.replace(tzinfo=UTC)
    if isinstance(value, int) and not isinstance(value, bool):
        try:
            return datetime.fromtimestamp(value, UTC)
        except (OverflowError, OSError, ValueError):
            return None
    return None


def _text(value: Any) -> str | None:
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return None if value is None else str(value)
