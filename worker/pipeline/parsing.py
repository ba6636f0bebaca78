"""Turning a delivery's bytes into a typed message, or a typed reason it is malformed.

The committer parses every delivery before it decides anything, on the task that commits for
the whole process, so parsing must never raise: whatever the bytes, the answer is a
:class:`ParsedInput`, a :class:`ParsedCommand` or an :class:`Unparseable` naming the reason, and
an Unparseable is dead-lettered at once. The checks run cheapest and most fundamental first:

1. the size limit, before any byte is read;
2. strict JSON (:mod:`worker.pipeline.wire`): UTF-8, no NaN/Infinity, no duplicate key, a
   nesting limit; nothing recursive sees the document before this has passed;
3. the AMQP ``type``;
4. the routing key against the body's ``runtime_id``: the broker shards and orders by the routing
   key, so a body that names another runtime would be decided on the wrong shard, outside that
   runtime's order, perhaps by a worker that does not own it;
5. the envelope's schema (pydantic, strict where lax coercion would hide a producer's bug);
6. the AMQP ``message_id`` against the input or command id, the id the producer and the
   dead-letter tools know the message by.

With an :class:`~worker.pipeline.authz.Access` (the worker always passes one), two more checks
refuse with ``unauthorized`` (:mod:`worker.pipeline.authz` holds the rules): the exchange the
message was published to must be the one of its kind (after step 4, as soon as the kind is
known), and a command's publisher (``user_id``) must be on the command's allow-list, if it has
one (after step 6, once the command type is known).

``Unparseable.runtime_id`` says which runtime's event stream records the rejection. It is the
body's ``runtime_id`` when readable, except when the routing key disagrees: then it is the routing
key's runtime (if the key is a valid runtime id, else none). That is the runtime whose shard the
message sits in and whose worker is deciding it; recording the event on the body's runtime
instead would let any publisher write into another runtime's stream from a shard it has no
business on, and would make this worker load a runtime another worker may own.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from pydantic import ValidationError

from schemas import (
    COMMAND_MESSAGE_TYPE,
    INPUT_MESSAGE_TYPE,
    RUNTIME_ID_PATTERN,
    AnyCommand,
    AnyInput,
    CommandEnvelope,
    InputEnvelope,
    Limits,
    Malformed,
    TooLarge,
    Unauthorized,
)
from worker.pipeline.authz import Access
from worker.pipeline.wire import NotStrictJson, read_strict_json

_RUNTIME_ID = re.compile(RUNTIME_ID_PATTERN)
_MAX_SHOWN = 200


@dataclass(frozen=True)
class ParsedInput:
    runtime_id: str
    item: AnyInput
    size: int


@dataclass(frozen=True)
class ParsedCommand:
    runtime_id: str
    command: AnyCommand


@dataclass(frozen=True)
class Unparseable:
    """A permanent failure: the body cannot be what the contract says, or it did not come the
    way it must (``unauthorized``)."""

    reason: Malformed | TooLarge | Unauthorized
    runtime_id: str | None
    """The runtime whose stream records the rejection (see the module docstring), if any."""
    is_command: bool


ParsedMessage = ParsedInput | ParsedCommand | Unparseable


def parse_delivery(
    body: bytes,
    message_type: str | None,
    limits: Limits,
    *,
    routing_key: str | None = None,
    message_id: str | None = None,
    exchange: str | None = None,
    user_id: str | None = None,
    access: Access | None = None,
) -> ParsedMessage:
    """Parse by the AMQP ``type`` (or, when absent, by which envelope key the body carries).

    ``routing_key``, when given, must be the body's ``runtime_id``; ``message_id``, when given
    and not empty, must be the input id or the command id. With ``access``, the message must
    have been published to ``exchange`` for its kind and a command's ``user_id`` must be
    allowed to send it. Never raises.
    """
    try:
        return _parse(body, message_type, limits, routing_key, message_id,
                      _Origin(exchange or "", user_id, access))
    except Exception as exc:  # the last guard: a parser bug must not take the committer down
        detail = f"body could not be parsed ({type(exc).__name__})"
        return Unparseable(Malformed(detail=detail), None, message_type == COMMAND_MESSAGE_TYPE)


def _parse(
    body: bytes,
    message_type: str | None,
    limits: Limits,
    routing_key: str | None,
    message_id: str | None,
    origin: _Origin,
) -> ParsedMessage:
    typed_command = message_type == COMMAND_MESSAGE_TYPE
    if len(body) > limits.max_message_bytes:
        too_large = TooLarge(
            limit="message_bytes", actual=len(body), maximum=limits.max_message_bytes
        )
        return Unparseable(too_large, None, typed_command)
    try:
        document = read_strict_json(body, limits.max_json_depth)
    except NotStrictJson as exc:
        return Unparseable(Malformed(detail=exc.detail), None, typed_command)
    is_command = reads_as_command(message_type, document)
    named = _runtime_id_of(document)
    if routing_key is not None and isinstance(named, str) and named != routing_key:
        detail = (
            f"routing key {_shown(routing_key)} is not the body's runtime_id {_shown(named)}"
        )
        return Unparseable(Malformed(detail=detail), _valid_id(routing_key), is_command)
    recorded = _valid_id(named)
    refusal = origin.exchange_refusal(is_command)
    if refusal is not None:
        return Unparseable(refusal, recorded, is_command)
    if message_type not in (None, "", INPUT_MESSAGE_TYPE, COMMAND_MESSAGE_TYPE):
        detail = f"unknown message type {_shown(message_type)}"
        return Unparseable(Malformed(detail=detail), recorded, is_command)
    try:
        parsed = _validate(document, is_command, len(body))
    except ValidationError as exc:
        return Unparseable(Malformed(detail=_summary(exc)), recorded, is_command)
    mismatch = _message_id_mismatch(parsed, message_id)
    if mismatch is not None:
        return Unparseable(Malformed(detail=mismatch), parsed.runtime_id, is_command)
    if isinstance(parsed, ParsedCommand):
        refusal = origin.user_refusal(parsed.command.command_type)
        if refusal is not None:
            return Unparseable(refusal, parsed.runtime_id, True)
    return parsed


@dataclass(frozen=True)
class _Origin:
    """How the delivery came: the exchange it was published to and its publisher."""

    exchange: str
    user_id: str | None
    access: Access | None

    def exchange_refusal(self, is_command: bool) -> Unauthorized | None:
        if self.access is None:
            return None
        return self.access.origin_refusal(self.exchange, is_command)

    def user_refusal(self, command_type: str) -> Unauthorized | None:
        if self.access is None:
            return None
        return self.access.user_refusal(command_type, self.user_id)


def _validate(document: Any, is_command: bool, size: int) -> ParsedInput | ParsedCommand:
    if is_command:
        command = CommandEnvelope.model_validate(document)
        return ParsedCommand(command.runtime_id, command.command)
    envelope = InputEnvelope.model_validate(document)
    return ParsedInput(envelope.runtime_id, envelope.input, size)


def _message_id_mismatch(parsed: ParsedInput | ParsedCommand, message_id: str | None) -> str | None:
    if not message_id:
        return None
    if isinstance(parsed, ParsedInput):
        own, name = parsed.item.header.id, "input id"
    else:
        own, name = parsed.command.command_id, "command id"
    if message_id == str(own):
        return None  # the usual spelling, without parsing
    try:
        if UUID(message_id) == own:
            return None
    except ValueError:
        pass
    return f"message_id {_shown(message_id)} is not the {name} {own}"


def reads_as_command(message_type: str | None, document: Any) -> bool:
    """Whether a delivery is taken for a command: by its AMQP ``type``, else by its body."""
    if message_type == COMMAND_MESSAGE_TYPE:
        return True
    if message_type == INPUT_MESSAGE_TYPE:
        return False
    return isinstance(document, dict) and "command" in document and "input" not in document


def _runtime_id_of(document: Any) -> object:
    return document.get("runtime_id") if isinstance(document, dict) else None


def _valid_id(value: object) -> str | None:
    if isinstance(value, str) and _RUNTIME_ID.fullmatch(value):
        return value
    return None


def _shown(value: str) -> str:
    """A producer-supplied value quoted for a reason text, cut short if long."""
    return repr(value if len(value) <= _MAX_SHOWN else value[:_MAX_SHOWN] + "...")


def _summary(exc: ValidationError, limit: int = 5) -> str:
    """A short, readable account of what failed validation (no input values echoed)."""
    parts = []
    for error in exc.errors(include_input=False, include_url=False)[:limit]:
        where = ".".join(str(p) for p in error["loc"]) or "(body)"
        # A message may quote a value (a wrong discriminator tag): keep a hostile one short.
        parts.append(f"{where[:_MAX_SHOWN]}: {error['msg'][:_MAX_SHOWN]}")
    more = exc.error_count() - limit
    if more > 0:
        parts.append(f"... and {more} more")
    return "schema violation: " + "; ".join(parts)
