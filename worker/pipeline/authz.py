"""Who may send what, and where replies may go: the worker's half of broker authorization.

The broker's permissions do most of the work (README "Security"): a producer of inputs may
write only to the ingress exchange, an operator to the commands exchange. The worker checks what
the broker cannot, with the facts the broker vouches for on each delivery:

- **Origin.** ``basic.deliver`` names the exchange the message was published to (the commands
  exchange for a command, even though it reaches the shard queue through the ingress exchange;
  see :mod:`worker.topology`). A command must come through the commands exchange and an input
  through the ingress exchange; anything else (a command published to the ingress exchange, a
  message published straight to a shard queue through the default exchange) is refused. This
  is what makes the broker's write permission on the commands exchange mean something.
- **Publisher.** With ``MEERKAT_COMMAND_USERS`` set, a command type that has an entry (or every
  command, with ``*``) is applied only when the AMQP ``user_id`` property names a listed broker
  user. RabbitMQ refuses a ``user_id`` that is not the publishing connection's user, so the
  property, when present, names the publisher; a command without one is refused.
- **Reply targets.** A reply is published only to a direct reply-to name
  (``amq.rabbitmq.reply-to.``...) or to a queue whose name starts with
  ``MEERKAT_REPLY_QUEUE_PREFIX`` (empty: none), and never to the worker's own queues, so a
  producer cannot make the worker publish into a queue of someone else's.

A refusal is a typed :class:`~schemas.Unauthorized` reason: the delivery is dead-lettered at once
with it in ``x-meerkat-error``, like a body that does not parse. Nothing here does I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from schemas import COMMAND_TYPES, Unauthorized

ANY_COMMAND = "*"
"""The ``MEERKAT_COMMAND_USERS`` key that applies to every command type."""
DIRECT_REPLY_TO = "amq.rabbitmq.reply-to"
"""What a producer sets as ``reply_to`` for RabbitMQ's direct reply-to."""
DIRECT_REPLY_PREFIX = f"{DIRECT_REPLY_TO}."
"""The broker rewrites ``amq.rabbitmq.reply-to`` to a name starting with this."""
_MAX_SHOWN = 200

CommandUsers = Mapping[str, frozenset[str]]
"""Command type (or ``*``) to the broker users allowed to send it."""


def command_users(entries: Mapping[str, list[str] | frozenset[str]]) -> CommandUsers:
    """The allow-list with its keys checked: ``ValueError`` names an unknown command type."""
    unknown = sorted(key for key in entries if key != ANY_COMMAND and key not in COMMAND_TYPES)
    if unknown:
        known = ", ".join(sorted(COMMAND_TYPES))
        raise ValueError(
            f"unknown command type(s) {', '.join(map(repr, unknown))}; "
            f"use one of {known} or {ANY_COMMAND!r}"
        )
    return MappingProxyType({key: frozenset(users) for key, users in entries.items()})


@dataclass(frozen=True)
class Access:
    """The rules of one deployment: its exchange names and its allow-lists."""

    ingress_exchange: str
    commands_exchange: str
    command_users: CommandUsers = field(default_factory=lambda: MappingProxyType({}))
    reply_queue_prefix: str = ""
    own_prefix: str | None = None
    """The deployment's topology prefix: no reply goes to ``<own_prefix>.``... (its own shard
    and dead queues), whatever ``reply_queue_prefix`` allows."""

    def origin_refusal(self, exchange: str, is_command: bool) -> Unauthorized | None:
        """Why a delivery published to ``exchange`` may not be taken as a command (or an
        input), if it may not."""
        wanted = self.commands_exchange if is_command else self.ingress_exchange
        if exchange == wanted:
            return None
        kind = "a command" if is_command else "an input"
        came = f"exchange {_shown(exchange)}" if exchange else "the default exchange"
        return Unauthorized(detail=f"{kind} must be published to {wanted}, not to {came}")

    def user_refusal(self, command_type: str, user_id: str | None) -> Unauthorized | None:
        """Why the publisher ``user_id`` may not send a ``command_type`` command, if it may not."""
        allowed = self.command_users.get(command_type)
        everyone = self.command_users.get(ANY_COMMAND)
        if allowed is None and everyone is None:
            return None
        if user_id and user_id in (allowed or frozenset()) | (everyone or frozenset()):
            return None
        who = f"user {_shown(user_id)}" if user_id else "a publisher with no user_id"
        return Unauthorized(detail=f"{command_type} is not allowed for {who}")

    def reply_allowed(self, reply_to: str) -> bool:
        """Whether a reply may be published to ``reply_to`` through the default exchange."""
        if self.own_prefix and reply_to.startswith(f"{self.own_prefix}."):
            return False
        return reply_allowed(reply_to, self.reply_queue_prefix)


def reply_allowed(reply_to: str, queue_prefix: str = "") -> bool:
    """Direct reply-to, or a queue named with the configured prefix (empty: no queue)."""
    if reply_to.startswith(DIRECT_REPLY_PREFIX):
        return True
    return bool(queue_prefix) and reply_to.startswith(queue_prefix)


def _shown(value: str) -> str:
    return repr(value if len(value) <= _MAX_SHOWN else value[:_MAX_SHOWN] + "...")
