"""Reply outcomes and typed rejection reasons (CONTRACT.md "Reply")."""

from __future__ import annotations

from typing import Annotated, Literal
from uuid import UUID

from pydantic import Field

from schemas._base import Frozen, RuntimeId
from schemas.states import InputPhase, Lane, RuntimePhase


class NotReady(Frozen):
    reject_type: Literal["not_ready"] = "not_ready"
    state: RuntimePhase


class RuntimeDestroyed(Frozen):
    reject_type: Literal["destroyed"] = "destroyed"


class DurabilityViolation(Frozen):
    reject_type: Literal["durability_violation"] = "durability_violation"
    detail: str


class PeerHandlingModeInvalid(Frozen):
    reject_type: Literal["peer_handling_mode_invalid"] = "peer_handling_mode_invalid"
    detail: str


class PeerResponseTerminalInvalid(Frozen):
    reject_type: Literal["peer_response_terminal_invalid"] = "peer_response_terminal_invalid"
    detail: str


class PayloadInvalid(Frozen):
    reject_type: Literal["payload_invalid"] = "payload_invalid"
    detail: str


class TooLarge(Frozen):
    reject_type: Literal["too_large"] = "too_large"
    limit: str
    actual: int
    maximum: int


class ImageInvalid(Frozen):
    reject_type: Literal["image_invalid"] = "image_invalid"
    detail: str


class Malformed(Frozen):
    """The message could not be parsed against the schema (dead-lettered)."""

    reject_type: Literal["malformed"] = "malformed"
    detail: str


class Unauthorized(Frozen):
    """The message did not come the way its kind must come (a command through the commands
    exchange, an input through the ingress exchange), or its publisher is not allowed to send
    that command (``MEERKAT_COMMAND_USERS``). Dead-lettered; nothing is applied."""

    reject_type: Literal["unauthorized"] = "unauthorized"
    detail: str


class IllegalCommand(Frozen):
    reject_type: Literal["illegal_command"] = "illegal_command"
    command_type: str
    state: RuntimePhase
    detail: str


class RuntimeUnknown(Frozen):
    """A command named a runtime that does not exist: no message for it was ever accepted.

    Its own type rather than ``illegal_command``: there is no state to name, and a producer can
    tell a wrong runtime id from a command that came too early.
    """

    reject_type: Literal["runtime_unknown"] = "runtime_unknown"
    command_type: str
    detail: str


RejectReason = Annotated[
    NotReady
    | RuntimeDestroyed
    | DurabilityViolation
    | PeerHandlingModeInvalid
    | PeerResponseTerminalInvalid
    | PayloadInvalid
    | TooLarge
    | ImageInvalid
    | Malformed
    | Unauthorized
    | IllegalCommand
    | RuntimeUnknown,
    Field(discriminator="reject_type"),
]


class Accepted(Frozen):
    outcome_type: Literal["accepted"] = "accepted"
    input_id: UUID
    phase: InputPhase
    lane: Lane | None
    admission_seq: int


class Deduplicated(Frozen):
    outcome_type: Literal["deduplicated"] = "deduplicated"
    input_id: UUID
    existing_id: UUID


class Rejected(Frozen):
    outcome_type: Literal["rejected"] = "rejected"
    reason: RejectReason


class CommandReport(Frozen):
    """Counts of what a lifecycle command changed; absent fields do not apply."""

    inputs_abandoned: int | None = None
    inputs_pending_drain: int | None = None
    inputs_transferred: int | None = None


class CommandCompleted(Frozen):
    outcome_type: Literal["completed"] = "completed"
    command_id: UUID
    command_type: str
    state: RuntimePhase
    report: CommandReport
    deduplicated: bool = False


Outcome = Annotated[
    Accepted | Deduplicated | Rejected | CommandCompleted, Field(discriminator="outcome_type")
]


class Reply(Frozen):
    """Published to ``reply_to`` after the commit."""

    correlation_id: str | None
    runtime_id: RuntimeId | None
    outcome: Outcome
