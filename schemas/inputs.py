"""The input envelope: header, the six input kinds and their bodies (DOMAIN.md §2)."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any, Literal
from uuid import UUID

from pydantic import Field

from schemas._base import Frozen, Key, RuntimeId, StrictBool, StrictInt, Timestamp
from schemas.content import Content, ContentBlock


class Durability(StrEnum):
    DURABLE = "durable"
    EPHEMERAL = "ephemeral"
    DERIVED = "derived"


class HandlingMode(StrEnum):
    QUEUE = "queue"
    STEER = "steer"


class OperatorSource(Frozen):
    type: Literal["operator"] = "operator"


class PeerSource(Frozen):
    type: Literal["peer"] = "peer"
    peer_id: str = Field(min_length=1)
    runtime_id: RuntimeId | None = None


class FlowSource(Frozen):
    type: Literal["flow"] = "flow"
    flow_id: str = Field(min_length=1)
    step_index: StrictInt = Field(ge=0)


class SystemSource(Frozen):
    type: Literal["system"] = "system"


class ExternalSource(Frozen):
    type: Literal["external"] = "external"
    source_name: str = Field(min_length=1)


InputSource = Annotated[
    OperatorSource | PeerSource | FlowSource | SystemSource | ExternalSource,
    Field(discriminator="type"),
]


class Visibility(Frozen):
    transcript_eligible: StrictBool = True
    operator_eligible: StrictBool = True


class InputHeader(Frozen):
    id: UUID
    timestamp: Timestamp
    source: InputSource
    durability: Durability
    visibility: Visibility = Visibility()
    idempotency_key: Key | None = None
    supersession_key: Key | None = None
    correlation_id: Key | None = None


class TurnMetadata(Frozen):
    handling_mode: HandlingMode | None = None
    labels: dict[str, str] = Field(default_factory=dict)


class PromptInput(Frozen):
    input_type: Literal["prompt"] = "prompt"
    header: InputHeader
    content: Content
    turn_metadata: TurnMetadata | None = None


class PeerMessage(Frozen):
    convention_type: Literal["message"] = "message"


class PeerRequest(Frozen):
    convention_type: Literal["request"] = "request"
    request_id: str = Field(min_length=1)
    intent: str


class PeerResponseProgress(Frozen):
    convention_type: Literal["response_progress"] = "response_progress"
    request_id: str = Field(min_length=1)
    phase: str


class PeerResponseTerminal(Frozen):
    """`request_id` and `status` are checked by admission so a bad one is a typed rejection."""

    convention_type: Literal["response_terminal"] = "response_terminal"
    request_id: str
    status: str


PeerConvention = Annotated[
    PeerMessage | PeerRequest | PeerResponseProgress | PeerResponseTerminal,
    Field(discriminator="convention_type"),
]


class PeerInput(Frozen):
    input_type: Literal["peer"] = "peer"
    header: InputHeader
    convention: PeerConvention = PeerMessage()
    content: Content
    payload: Any | None = None
    handling_mode: HandlingMode | None = None


class FlowStepInput(Frozen):
    input_type: Literal["flow_step"] = "flow_step"
    header: InputHeader
    step_id: str = Field(min_length=1)
    content: Content


class ExternalEventInput(Frozen):
    input_type: Literal["external_event"] = "external_event"
    header: InputHeader
    event_type: str = Field(min_length=1)
    payload: Any
    blocks: list[ContentBlock] | None = None
    handling_mode: HandlingMode = HandlingMode.QUEUE


class ContinuationInput(Frozen):
    input_type: Literal["continuation"] = "continuation"
    header: InputHeader
    reason: str
    handling_mode: HandlingMode = HandlingMode.QUEUE
    request_id: str | None = None


class OperationInput(Frozen):
    input_type: Literal["operation"] = "operation"
    header: InputHeader
    operation_id: str = Field(min_length=1)
    event: Any


Input = Annotated[
    PromptInput
    | PeerInput
    | FlowStepInput
    | ExternalEventInput
    | ContinuationInput
    | OperationInput,
    Field(discriminator="input_type"),
]


class InputEnvelope(Frozen):
    """Body of an AMQP message of type ``meerkat.input.v1``."""

    runtime_id: RuntimeId
    input: Input
