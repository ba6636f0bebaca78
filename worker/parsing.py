"""Turning a delivery's bytes into a typed message, or a typed reason it is malformed."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

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
)

_RUNTIME_ID = re.compile(RUNTIME_ID_PATTERN)


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
    """A permanent failure: the body cannot be what the contract says."""

    reason: Malformed | TooLarge
    runtime_id: str | None
    """Set when the body still names a readable runtime id (for the rejection event)."""
    is_command: bool


ParsedMessage = ParsedInput | ParsedCommand | Unparseable


def parse_delivery(body: bytes, message_type: str | None, limits: Limits) -> ParsedMessage:
    """Parse by the AMQP ``type`` (or, when absent, by which envelope key the body carries)."""
    if len(body) > limits.max_message_bytes:
        too_large = TooLarge(
            limit="message_bytes", actual=len(body), maximum=limits.max_message_bytes
        )
        return Unparseable(too_large, None, message_type == COMMAND_MESSAGE_TYPE)
    try:
        document = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        return Unparseable(Malformed(detail=f"body is not UTF-8 JSON: {exc}"), None, False)
    is_command = _is_command(message_type, document)
    if message_type not in (None, "", INPUT_MESSAGE_TYPE, COMMAND_MESSAGE_TYPE):
        detail = f"unknown message type {message_type!r}"
        return Unparseable(Malformed(detail=detail), _runtime_id_of(document), is_command)
    try:
        if is_command:
            command = CommandEnvelope.model_validate(document)
            return ParsedCommand(command.runtime_id, command.command)
        envelope = InputEnvelope.model_validate(document)
        return ParsedInput(envelope.runtime_id, envelope.input, len(body))
    except ValidationError as exc:
        return Unparseable(Malformed(detail=_summary(exc)), _runtime_id_of(document), is_command)


def _is_command(message_type: str | None, document: Any) -> bool:
    if message_type == COMMAND_MESSAGE_TYPE:
        return True
    if message_type == INPUT_MESSAGE_TYPE:
        return False
    return isinstance(document, dict) and "command" in document and "input" not in document


def _runtime_id_of(document: Any) -> str | None:
    if isinstance(document, dict):
        value = document.get("runtime_id")
        if isinstance(value, str) and _RUNTIME_ID.fullmatch(value):
            return value
    return None


def _summary(exc: ValidationError, limit: int = 5) -> str:
    """A short, readable account of what failed validation (no input values echoed)."""
    parts = []
    for error in exc.errors(include_input=False, include_url=False)[:limit]:
        where = ".".join(str(p) for p in error["loc"]) or "(body)"
        parts.append(f"{where}: {error['msg']}")
    more = exc.error_count() - limit
    if more > 0:
        parts.append(f"... and {more} more")
    return "schema violation: " + "; ".join(parts)
