"""The event envelope published on ``meerkat.events`` (DOMAIN.md §10)."""

from __future__ import annotations

from enum import StrEnum
from typing import Any
from uuid import UUID

from pydantic import AwareDatetime, model_validator

from schemas._base import Frozen, RuntimeId


class EventCategory(StrEnum):
    INPUT = "input_lifecycle"
    RUN = "run_lifecycle"
    RUNTIME = "runtime_state_change"
    COMMAND = "command"


class EventCode(StrEnum):
    INPUT_ACCEPTED = "input.accepted"
    INPUT_DEDUPLICATED = "input.deduplicated"
    INPUT_REJECTED = "input.rejected"
    INPUT_QUEUED = "input.queued"
    INPUT_COALESCED = "input.coalesced"
    INPUT_SUPERSEDED = "input.superseded"
    INPUT_STAGED = "input.staged"
    INPUT_APPLIED = "input.applied"
    INPUT_CONSUMED = "input.consumed"
    INPUT_ABANDONED = "input.abandoned"
    RUN_STARTED = "run.started"
    RUN_COMPLETED = "run.completed"
    RUN_FAILED = "run.failed"
    RUN_CANCELLED = "run.cancelled"
    RUNTIME_STATE_CHANGED = "runtime.state_changed"
    COMMAND_COMPLETED = "command.completed"
    COMMAND_REJECTED = "command.rejected"

    @property
    def category(self) -> EventCategory:
        prefix = self.value.split(".", 1)[0]
        return _CATEGORY_BY_PREFIX[prefix]


_CATEGORY_BY_PREFIX = {
    "input": EventCategory.INPUT,
    "run": EventCategory.RUN,
    "runtime": EventCategory.RUNTIME,
    "command": EventCategory.COMMAND,
}


class EventEnvelope(Frozen):
    event_id: UUID
    at: AwareDatetime
    runtime_id: RuntimeId
    category: EventCategory
    code: EventCode
    data: dict[str, Any]
    causation_id: UUID | None = None
    correlation_id: str | None = None

    @model_validator(mode="after")
    def _category_matches_code(self) -> EventEnvelope:
        if self.category is not self.code.category:
            raise ValueError(
                f"event code {self.code.value} belongs to category {self.code.category.value}, "
                f"not {self.category.value}"
            )
        return self
