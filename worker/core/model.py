"""The data the core decides over: runtime and input state, row mutations, decisions.

Everything here is an immutable value. An operation of the core takes a :class:`Runtime` and
returns a :class:`Decision` holding a *new* runtime; the old one is never touched, so the shell can
keep it as the rollback image until its commit has returned.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import IntEnum
from types import MappingProxyType
from typing import Any
from uuid import UUID

from schemas import (
    AbandonReason,
    AnyInput,
    CommandCompleted,
    Durability,
    EventEnvelope,
    InputKind,
    InputPhase,
    Lane,
    Outcome,
    RuntimePhase,
)

MAX_STAGE_ATTEMPTS = 3
"""A staged input whose run failed this many times is abandoned."""


@dataclass(frozen=True)
class Context:
    """What the pure core may not find out by itself: the time and fresh ids."""

    now: datetime
    new_id: Callable[[], UUID]


class Signal(IntEnum):
    """Post-admission signal to the run loop; the strongest wins until the loop takes it."""

    NONE = 0
    WAKE = 1
    INTERRUPT = 2
    IMMEDIATE = 3


@dataclass(frozen=True)
class HistoryEntry:
    at: datetime
    from_phase: InputPhase | None
    to_phase: InputPhase
    reason: str


@dataclass(frozen=True)
class InputRecord:
    """One input and its lifecycle: exactly one row of the inputs table."""

    input_id: UUID
    kind: InputKind
    phase: InputPhase
    lane: Lane
    admission_seq: int
    durability: Durability
    payload: AnyInput
    """The input as stored: images are blob references, never inline bytes."""
    created_at: datetime
    updated_at: datetime
    attempt_count: int = 0
    idempotency_key: str | None = None
    supersession_key: str | None = None
    correlation_id: str | None = None
    last_run_id: UUID | None = None
    boundary_sequence: int | None = None
    superseded_by: UUID | None = None
    aggregate_id: UUID | None = None
    abandon_reason: AbandonReason | None = None
    recovery_count: int = 0
    history: tuple[HistoryEntry, ...] = ()

    @property
    def is_terminal(self) -> bool:
        return self.phase.is_terminal


@dataclass(frozen=True)
class RunState:
    """The run in progress: its id and the inputs staged onto it, in batch order."""

    run_id: UUID
    input_ids: tuple[UUID, ...]
    started_at: datetime


@dataclass(frozen=True)
class RuntimeRow:
    """The runtime row as stored (process-local phases projected away)."""

    runtime_id: str
    phase: RuntimePhase
    pre_run_phase: RuntimePhase | None
    current_run_id: UUID | None
    next_admission_seq: int
    version: int
    updated_at: datetime


def _frozen_inputs(value: Mapping[UUID, InputRecord] | None = None) -> Mapping[UUID, InputRecord]:
    return MappingProxyType(dict(value or {}))


def thawed_inputs(inputs: Mapping[UUID, InputRecord]) -> dict[UUID, InputRecord]:
    """A mutable copy of a runtime's inputs. The frozen view copies the dict behind it at C
    speed; ``dict(view)`` would go through the mapping protocol, key by key (100 times slower,
    and paid on every decision)."""
    if isinstance(inputs, MappingProxyType):
        return inputs.copy()
    return dict(inputs)


@dataclass(frozen=True)
class Runtime:
    """The in-memory runtime a driver holds.

    ``version`` is the stored row's version this state was derived from (0: not stored yet).
    ``inputs`` holds the live inputs plus terminal ones decided since the last commit; the shell
    archives terminal ones once they are durable (the store keeps their rows for dedupe).
    """

    runtime_id: str
    phase: RuntimePhase = RuntimePhase.INITIALIZING
    version: int = 0
    pre_run_phase: RuntimePhase | None = None
    current_run: RunState | None = None
    next_admission_seq: int = 1
    signal: Signal = Signal.NONE
    inputs: Mapping[UUID, InputRecord] = field(default_factory=_frozen_inputs)

    def live_inputs(self) -> list[InputRecord]:
        return [r for r in self.inputs.values() if not r.is_terminal]

    def lane(self, lane: Lane) -> list[InputRecord]:
        """Queued inputs waiting in ``lane``, in admission order."""
        waiting = [
            r for r in self.inputs.values() if r.phase is InputPhase.QUEUED and r.lane is lane
        ]
        # Ties cannot happen (sequences are unique per runtime); the id (whose numeric order is
        # its text's order) only makes the order total.
        return sorted(waiting, key=lambda r: (r.admission_seq, r.input_id))

    def find_key(self, idempotency_key: str) -> InputRecord | None:
        for record in self.inputs.values():
            if record.idempotency_key == idempotency_key:
                return record
        return None

    def row(self, at: datetime) -> RuntimeRow:
        """The durable projection: ``attached`` is stored as ``idle``."""
        phase = RuntimePhase.IDLE if self.phase is RuntimePhase.ATTACHED else self.phase
        pre_run = self.pre_run_phase
        if pre_run is RuntimePhase.ATTACHED:
            pre_run = RuntimePhase.IDLE
        return RuntimeRow(
            runtime_id=self.runtime_id,
            phase=phase,
            pre_run_phase=pre_run,
            current_run_id=self.current_run.run_id if self.current_run else None,
            next_admission_seq=self.next_admission_seq,
            version=self.version,
            updated_at=at,
        )


@dataclass(frozen=True)
class BoundaryReceipt:
    runtime_id: str
    run_id: UUID
    sequence: int
    contributing_input_ids: tuple[UUID, ...]
    conversation_digest: str
    message_count: int
    committed_at: datetime


@dataclass(frozen=True)
class SessionSnapshot:
    runtime_id: str
    run_id: UUID
    body: Mapping[str, Any]
    digest: str
    message_count: int
    committed_at: datetime


@dataclass(frozen=True)
class BlobWrite:
    """An image to put into the blob store before the commit."""

    blob_id: str
    media_type: str
    data_base64: str


# Row mutations, applied by a store in one transaction, in order.


@dataclass(frozen=True)
class PutRuntime:
    """Insert (``expected_version == 0``) or compare-and-set the runtime row to ``row``."""

    row: RuntimeRow
    expected_version: int


@dataclass(frozen=True)
class PutInput:
    record: InputRecord
    insert: bool


@dataclass(frozen=True)
class DeleteInput:
    input_id: UUID


@dataclass(frozen=True)
class PutReceipt:
    receipt: BoundaryReceipt


@dataclass(frozen=True)
class PutSnapshot:
    snapshot: SessionSnapshot


@dataclass(frozen=True)
class RecordCommand:
    """Dedupe record of a processed command; a redelivery answers with ``outcome`` again."""

    command_id: UUID
    command_type: str
    outcome: CommandCompleted
    at: datetime


Mutation = PutRuntime | PutInput | DeleteInput | PutReceipt | PutSnapshot | RecordCommand


@dataclass(frozen=True)
class RecoveryReport:
    inputs_recovered: int
    inputs_requeued: int
    inputs_discarded: int


@dataclass(frozen=True)
class Decision:
    """What one operation decided: the state to swap in after COMMIT, and what to commit.

    ``mutations`` always start with the runtime row (compare-and-set), so every commit is
    fenced by the version the decision was made from.
    """

    runtime: Runtime
    mutations: tuple[Mutation, ...]
    events: tuple[EventEnvelope, ...]
    outcome: Outcome | None = None
    blobs: tuple[BlobWrite, ...] = ()
    reload_after_commit: bool = False
    recovery: RecoveryReport | None = None
    trace: str | None = None
    """The W3C ``traceparent`` of the span the decision was made in, when tracing is on: stored
    with its events (not in them) and propagated when they are published."""

    @property
    def runtime_id(self) -> str:
        return self.runtime.runtime_id
