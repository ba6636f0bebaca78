"""Enumerations whose values are stored in the database and appear on the wire."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Literal

from pydantic import Field

from schemas._base import Frozen


class InputKind(StrEnum):
    """The kind used for policy; peer kinds are derived from the peer convention."""

    PROMPT = "prompt"
    PEER_MESSAGE = "peer_message"
    PEER_REQUEST = "peer_request"
    PEER_RESPONSE_PROGRESS = "peer_response_progress"
    PEER_RESPONSE_TERMINAL = "peer_response_terminal"
    FLOW_STEP = "flow_step"
    EXTERNAL_EVENT = "external_event"
    CONTINUATION = "continuation"
    OPERATION = "operation"


class InputPhase(StrEnum):
    QUEUED = "queued"
    STAGED = "staged"
    APPLIED = "applied"
    APPLIED_PENDING_CONSUMPTION = "applied_pending_consumption"
    CONSUMED = "consumed"
    COALESCED = "coalesced"
    SUPERSEDED = "superseded"
    ABANDONED = "abandoned"

    @property
    def is_terminal(self) -> bool:
        return self in TERMINAL_INPUT_PHASES


TERMINAL_INPUT_PHASES = frozenset(
    {InputPhase.CONSUMED, InputPhase.COALESCED, InputPhase.SUPERSEDED, InputPhase.ABANDONED}
)


class RuntimePhase(StrEnum):
    INITIALIZING = "initializing"
    IDLE = "idle"
    ATTACHED = "attached"
    RUNNING = "running"
    RETIRED = "retired"
    STOPPED = "stopped"
    DESTROYED = "destroyed"


class Lane(StrEnum):
    STEER = "steer"
    QUEUE = "queue"


class AbandonCode(StrEnum):
    RETIRED = "retired"
    RESET = "reset"
    STOPPED = "stopped"
    DESTROYED = "destroyed"
    CANCELLED = "cancelled"
    MAX_ATTEMPTS_EXHAUSTED = "max_attempts_exhausted"
    NEVER_EXECUTED = "never_executed"


SimpleAbandonCode = Literal[
    "retired", "reset", "stopped", "destroyed", "cancelled", "never_executed"
]


class SimpleAbandonReason(Frozen):
    reason: SimpleAbandonCode


class AttemptsExhausted(Frozen):
    reason: Literal["max_attempts_exhausted"] = "max_attempts_exhausted"
    attempts: int = Field(ge=1)


AbandonReason = Annotated[SimpleAbandonReason | AttemptsExhausted, Field(discriminator="reason")]
