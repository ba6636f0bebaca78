"""The data the core decides over: runtime and input state, row mutations, decisions.

Everything here is an immutable value. An operation of the core takes a :class:`Runtime` and
returns a :class:`Decision` holding a *new* runtime; the old one is never touched, so the shell can
keep it as the rollback image until its commit has returned.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import IntEnum
from typing import Any
from uuid import UUID

from schemas import CommandCompleted, EventEnvelope, Lane, Outcome, RuntimePhase
from worker.core.inputs import EMPTY_INPUTS, InputTable, as_table
from worker.core.inputs import HistoryEntry as HistoryEntry
from worker.core.inputs import InputRecord as InputRecord

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


@dataclass(frozen=True, slots=True)
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


@dataclass(frozen=True, slots=True)
class Runtime:
    """The in-memory runtime a driver holds.

    ``version`` is the stored row's version this state was derived from (0: not stored yet).
    ``inputs`` holds the live inputs plus terminal ones decided since the last commit; the shell
    archives terminal ones once they are durable (the store keeps their rows for dedupe). It is
    an :class:`~worker.core.inputs.InputTable` (a mapping given here becomes one), persistent,
    so a decision over a long queue costs what it costs over a short one.
    """

    runtime_id: str
    phase: RuntimePhase = RuntimePhase.INITIALIZING
    version: int = 0
    pre_run_phase: RuntimePhase | None = None
    current_run: RunState | None = None
    next_admission_seq: int = 1
    signal: Signal = Signal.NONE
    inputs: InputTable = field(default_factory=lambda: EMPTY_INPUTS)

    def __post_init__(self) -> None:
        if type(self.inputs) is not InputTable:
            object.__setattr__(self, "inputs", as_table(self.inputs))

    def live_inputs(self) -> list[InputRecord]:
        """The inputs that are not terminal, in admission order."""
        if not self.inputs.live_count:
            return []
        return [r for r in self.inputs.in_admission_order() if not r.is_terminal]

    def has_live_inputs(self) -> bool:
        return self.inputs.live_count > 0

    def lane(self, lane: Lane) -> list[InputRecord]:
        """Queued inputs waiting in ``lane``, in admission order."""
        return list(self.inputs.queued(lane))

    def waiting(self, lane: Lane) -> Iterator[InputRecord]:
        """:meth:`lane`, lazily: a batch reads only the head of a long lane."""
        return self.inputs.queued(lane)

    def find_key(self, idempotency_key: str) -> InputRecord | None:
        return self.inputs.key_owner(idempotency_key)

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
