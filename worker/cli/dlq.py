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
"""

from __future__ import annotations

import contextlib
import hashlib
from dataclasses import asdict, dataclass
from typing import Any

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage
from aiormq.exceptions import AMQPError

from worker.client.wire import DEFAULT_TOPOLOGY, publish_confirmed
from worker.pipeline import settle
from worker.pipeline.parsing import reads_as_command
from worker.pipeline.settle import ERROR_HEADER
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
    }
)
"""Headers the broker or the worker added on the way to the dead queue; a replay drops them."""


@dataclass(frozen=True)
class DeadLetter:
    """What an operator needs to know about one dead-lettered message."""

    message_id: str | None
    message_type: str | None
    runtime_id: str | None
    routing_key: str
    error: str | None
    death_reason: str | None
    first_death_queue: str | None
    death_count: int

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def describe(self) -> str:
        death = self.death_reason or "-"
        if self.first_death_queue:
            death += f" in {self.first_death_queue}"
        return (
            f"{self.message_id or '-'}  {self.message_type or '-'}  "
            f"runtime={self.runtime_id or '-'}  death={death}  error={self.error or '-'}"
        )


async def list_dead(
    channel: AbstractChannel, limit: int | None = None, *, topology: Topology = DEFAULT_TOPOLOGY
) -> list[DeadLetter]:
    """Up to ``limit`` dead-lettered messages, oldest first, leaving them all in the queue."""
    queue = await channel.get_queue(topology.dead_queue, ensure=True)
    held: list[AbstractIncomingMessage] = []
    try:
        while limit is None or len(held) < limit:
            message = await queue.get(no_ack=False, fail=False)
            if message is None:
                break
            held.append(message)
        return [dead_letter(message) for message in held]
    finally:
        for message in held:
            # Closing the channel would return them too; returning them explicitly keeps the
            # caller's channel usable.
            with contextlib.suppress(AMQPError, RuntimeError):
                await settle.release(message)


async def replay_dead(
    channel: AbstractChannel, limit: int | None = None, *, topology: Topology = DEFAULT_TOPOLOGY,
    user_id: str | None = None,
) -> int:
    """Re-publish up to ``limit`` dead-lettered messages, oldest first: inputs to the ingress
    exchange, commands to the commands exchange.

    Each one goes out with its runtime id as routing key, its properties and body unchanged and
    the dead-letter headers removed; it is acked from the dead queue only after the broker has
    confirmed the new copy. A message that dies again while the replay runs comes back to the
    tail of the dead queue; meeting it again means everything older has been replayed, so the
    replay stops there instead of cycling. The channel must have publisher confirms.
    Returns how many were replayed.
    """
    queue = await channel.get_queue(topology.dead_queue, ensure=False)
    ingress = await channel.get_exchange(topology.ingress_exchange, ensure=False)
    commands = await channel.get_exchange(topology.commands_exchange, ensure=False)
    replayed: set[str] = set()
    while limit is None or len(replayed) < limit:
        message = await queue.get(no_ack=False, fail=False)
        if message is None:
            break
        identity = _identity(message)
        if identity in replayed:
            await settle.release(message)
            break
        try:
            exchange = commands if is_command_message(message) else ingress
            await publish_confirmed(exchange, replay_copy(message, user_id),
                                    replay_routing_key(message))
        except BaseException:
            with contextlib.suppress(AMQPError, RuntimeError):
                await settle.release(message)
            raise
        await settle.ack_one(message)
        replayed.add(identity)
    return len(replayed)


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


def _text(value: Any) -> str | None:
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return None if value is None else str(value)
