"""One commit's decisions folded into the fewest writes with the same final result.

Group commit puts the decisions of many deliveries into one transaction; several may touch the
same runtime row (each fenced on the version the previous one produced) or the same input (a
row inserted, then coalesced). Writing each mutation in turn costs one round trip per row.
Folding them keeps every check and ends in the same rows: the runtime row is compared against the
version the *first* decision read and set to the *last* decision's row; an input keeps its final
image, inserted if any decision inserted it; the rest are appended in order.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from uuid import UUID

from persistence.errors import VersionConflict
from schemas import EventEnvelope
from worker.core.model import (
    BoundaryReceipt,
    Decision,
    DeleteInput,
    InputRecord,
    PutInput,
    PutReceipt,
    PutRuntime,
    PutSnapshot,
    RecordCommand,
    RuntimeRow,
    SessionSnapshot,
)


@dataclass
class InputWrite:
    runtime_id: str
    record: InputRecord
    insert: bool


@dataclass
class WritePlan:
    runtimes: dict[str, tuple[RuntimeRow, int]] = field(default_factory=dict)
    """Runtime id → (final row, version the first decision expected), in first-touch order."""
    inputs: dict[tuple[str, UUID], InputWrite] = field(default_factory=dict)
    deletes: list[tuple[str, UUID]] = field(default_factory=list)
    receipts: list[BoundaryReceipt] = field(default_factory=list)
    snapshots: dict[str, SessionSnapshot] = field(default_factory=dict)
    commands: list[tuple[str, RecordCommand]] = field(default_factory=list)
    events: list[EventEnvelope] = field(default_factory=list)
    traces: dict[UUID, str] = field(default_factory=dict)
    """Event id → the ``traceparent`` of the decision that made it (traced decisions only)."""

    @property
    def inserts(self) -> list[InputWrite]:
        return [w for w in self.inputs.values() if w.insert]

    @property
    def updates(self) -> list[InputWrite]:
        return [w for w in self.inputs.values() if not w.insert]


def plan_writes(decisions: Sequence[Decision]) -> WritePlan:
    """Fold ``decisions``; raise VersionConflict when they do not chain on one runtime."""
    plan = WritePlan()
    for decision in decisions:
        runtime_id = decision.runtime_id
        for mutation in decision.mutations:
            match mutation:
                case PutRuntime(row=row, expected_version=expected):
                    _chain_runtime(plan, row, expected)
                case PutInput(record=record, insert=insert):
                    key = (runtime_id, record.input_id)
                    earlier = plan.inputs.get(key)
                    inserted = insert or (earlier is not None and earlier.insert)
                    plan.inputs[key] = InputWrite(runtime_id, record, inserted)
                case DeleteInput(input_id=input_id):
                    earlier = plan.inputs.pop((runtime_id, input_id), None)
                    if earlier is None or not earlier.insert:
                        plan.deletes.append((runtime_id, input_id))
                case PutReceipt(receipt=receipt):
                    plan.receipts.append(receipt)
                case PutSnapshot(snapshot=snapshot):
                    plan.snapshots[runtime_id] = snapshot
                case RecordCommand():
                    plan.commands.append((runtime_id, mutation))
        plan.events.extend(decision.events)
        if decision.trace is not None:
            plan.traces.update((e.event_id, decision.trace) for e in decision.events)
    return plan


def _chain_runtime(plan: WritePlan, row: RuntimeRow, expected: int) -> None:
    earlier = plan.runtimes.get(row.runtime_id)
    if earlier is None:
        plan.runtimes[row.runtime_id] = (row, expected)
        return
    previous_row, first_expected = earlier
    if previous_row.version != expected:
        raise VersionConflict(row.runtime_id, expected)
    plan.runtimes[row.runtime_id] = (row, first_expected)
