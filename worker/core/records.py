"""Small pure helpers shared by the operations: input transitions with history, events."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from typing import Any
from uuid import UUID

from schemas import AbandonReason, EventCode, EventEnvelope, RuntimePhase
from worker.core.lifecycle import (
    InputTrigger,
    RuntimeTrigger,
    next_input_phase,
    next_runtime_phase,
)
from worker.core.model import (
    Context,
    HistoryEntry,
    InputRecord,
    Mutation,
    PutInput,
    PutRuntime,
    Runtime,
)


def move_input(
    record: InputRecord, trigger: InputTrigger, ctx: Context, reason: str, **changes: Any
) -> InputRecord:
    """The record after ``trigger``, with one history entry appended."""
    to_phase = next_input_phase(record.phase, trigger)
    entry = HistoryEntry(at=ctx.now, from_phase=record.phase, to_phase=to_phase, reason=reason)
    return _evolved(
        record, phase=to_phase, updated_at=ctx.now, history=(*record.history, entry), **changes
    )


_RECORD_FIELDS = frozenset(f.name for f in dataclasses.fields(InputRecord))


def _evolved(record: InputRecord, **changes: Any) -> InputRecord:
    """``dataclasses.replace`` for the record, without its cost (it runs ``__init__`` through
    keyword arguments for every field; a run's boundary moves each input three times). The
    record has no ``__post_init__``; unknown field names are refused as ``replace`` would."""
    unknown = changes.keys() - _RECORD_FIELDS
    if unknown:
        raise TypeError(f"InputRecord has no field(s) {sorted(unknown)}")
    evolved = object.__new__(type(record))
    evolved.__dict__.update(record.__dict__)
    evolved.__dict__.update(changes)
    return evolved


def abandon_input(
    record: InputRecord, reason: AbandonReason, ctx: Context, trigger: InputTrigger
) -> InputRecord:
    return move_input(record, trigger, ctx, reason.reason, abandon_reason=reason)


def event(
    ctx: Context,
    runtime_id: str,
    code: EventCode,
    data: Mapping[str, Any],
    *,
    causation_id: UUID | None = None,
    correlation_id: str | None = None,
) -> EventEnvelope:
    # Built without validation: every field comes from values the core made or the parser
    # validated, and the category is the code's by construction (a unit test re-validates).
    return EventEnvelope.model_construct(
        event_id=ctx.new_id(),
        at=ctx.now,
        runtime_id=runtime_id,
        category=code.category,
        code=code,
        data=dict(data),
        causation_id=causation_id,
        correlation_id=correlation_id,
    )


def input_event(
    ctx: Context, runtime_id: str, record: InputRecord, code: EventCode, **data: Any
) -> EventEnvelope:
    """An input lifecycle event, caused by and correlated like the input."""
    body = {"input_id": str(record.input_id), "phase": record.phase.value, **data}
    return event(
        ctx,
        runtime_id,
        code,
        body,
        causation_id=record.input_id,
        correlation_id=record.correlation_id,
    )


def state_changed(
    ctx: Context,
    runtime_id: str,
    before: RuntimePhase,
    after: RuntimePhase,
    causation_id: UUID | None = None,
) -> list[EventEnvelope]:
    """A ``runtime.state_changed`` event when the phase really changed, else nothing."""
    if before is after:
        return []
    data = {"from": before.value, "to": after.value}
    return [
        event(ctx, runtime_id, EventCode.RUNTIME_STATE_CHANGED, data, causation_id=causation_id)
    ]


def with_inputs(runtime: Runtime, records: Iterable[InputRecord], **changes: Any) -> Runtime:
    """A new runtime with ``records`` replacing (or adding) inputs by id."""
    return dataclasses.replace(runtime, inputs=runtime.inputs.updated(records), **changes)


def runtime_put(before: Runtime, after: Runtime, ctx: Context) -> tuple[Runtime, PutRuntime]:
    """Fence ``after`` on the version ``before`` was read at; the new version is one more."""
    bumped = dataclasses.replace(after, version=before.version + 1)
    return bumped, PutRuntime(row=bumped.row(ctx.now), expected_version=before.version)


def input_puts(
    records: Iterable[InputRecord], new_ids: frozenset[UUID] = frozenset()
) -> list[Mutation]:
    return [PutInput(record=r, insert=r.input_id in new_ids) for r in records]


def advance(runtime: Runtime, trigger: RuntimeTrigger) -> RuntimePhase:
    return next_runtime_phase(runtime.phase, trigger, runtime.pre_run_phase)


__all__ = [
    "abandon_input",
    "advance",
    "event",
    "input_event",
    "input_puts",
    "move_input",
    "runtime_put",
    "state_changed",
    "with_inputs",
]
