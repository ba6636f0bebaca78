"""Hand-built decisions and rows for the runtime store contract: fresh ids every call, so tests
can share one PostgreSQL database."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from uuid import UUID, uuid4

from persistence.ports import RuntimeStore
from schemas import (
    AttemptsExhausted,
    BlobImageBlock,
    CommandCompleted,
    CommandReport,
    Durability,
    EventCode,
    EventEnvelope,
    ImageMediaType,
    InputHeader,
    InputKind,
    InputPhase,
    Lane,
    OperatorSource,
    PromptInput,
    RuntimePhase,
    TextBlock,
)
from worker.core.model import (
    BoundaryReceipt,
    Decision,
    HistoryEntry,
    InputRecord,
    Mutation,
    PutInput,
    PutRuntime,
    Runtime,
    RuntimeRow,
    SessionSnapshot,
)

NOW = datetime(2026, 3, 14, 15, 9, 26, 535897, tzinfo=UTC)


def new_runtime_id() -> str:
    return f"rt:contract:{uuid4()}"


def new_blob_id() -> str:
    return "sha256:" + uuid4().hex + uuid4().hex


def prompt(key: str | None = None, blob_ids: tuple[str, ...] = ()) -> PromptInput:
    images = [BlobImageBlock(media_type=ImageMediaType.PNG, blob_id=b) for b in blob_ids]
    return PromptInput(
        header=InputHeader(
            id=uuid4(),
            timestamp=NOW,
            source=OperatorSource(),
            durability=Durability.DURABLE,
            idempotency_key=key,
        ),
        content=[TextBlock(text="look at this"), *images],
    )


def record(
    seq: int = 1,
    *,
    phase: InputPhase = InputPhase.QUEUED,
    key: str | None = None,
    blob_ids: tuple[str, ...] = (),
    run: tuple[UUID, int] | None = None,
) -> InputRecord:
    payload = prompt(key, blob_ids)
    return InputRecord(
        input_id=payload.header.id,
        kind=InputKind.PROMPT,
        phase=phase,
        lane=Lane.QUEUE,
        admission_seq=seq,
        durability=Durability.DURABLE,
        payload=payload,
        created_at=NOW,
        updated_at=NOW + timedelta(seconds=seq),
        idempotency_key=key,
        last_run_id=None if run is None else run[0],
        boundary_sequence=None if run is None else run[1],
        abandon_reason=AttemptsExhausted(attempts=3) if phase is InputPhase.ABANDONED else None,
        history=(HistoryEntry(NOW, None, InputPhase.QUEUED, "accepted"),),
    )


def row(runtime_id: str, version: int, phase: RuntimePhase = RuntimePhase.IDLE) -> RuntimeRow:
    return RuntimeRow(
        runtime_id=runtime_id,
        phase=phase,
        pre_run_phase=None,
        current_run_id=None,
        next_admission_seq=version + 1,
        version=version,
        updated_at=NOW + timedelta(minutes=version),
    )


def event(runtime_id: str, code: EventCode = EventCode.INPUT_ACCEPTED) -> EventEnvelope:
    return EventEnvelope(
        event_id=uuid4(),
        at=NOW,
        runtime_id=runtime_id,
        category=code.category,
        code=code,
        data={"note": "contract"},
    )


def step(
    runtime_id: str,
    version: int,
    *mutations: Mutation,
    events: tuple[EventEnvelope, ...] = (),
) -> Decision:
    """A decision moving the runtime row from ``version - 1`` to ``version``."""
    fence = PutRuntime(row(runtime_id, version), expected_version=version - 1)
    return Decision(
        runtime=Runtime(runtime_id, version=version),
        mutations=(fence, *mutations),
        events=events,
    )


def receipt(runtime_id: str, run_id: UUID, sequence: int = 1, at: int = 0) -> BoundaryReceipt:
    return BoundaryReceipt(
        runtime_id=runtime_id,
        run_id=run_id,
        sequence=sequence,
        contributing_input_ids=(uuid4(), uuid4()),
        conversation_digest="ab" * 32,
        message_count=4,
        committed_at=NOW + timedelta(seconds=at),
    )


def snapshot(runtime_id: str, run_id: UUID, count: int) -> SessionSnapshot:
    return SessionSnapshot(
        runtime_id=runtime_id,
        run_id=run_id,
        body={"messages": [{"role": "user", "text": "hi"}] * count},
        digest=f"{count:064x}",
        message_count=count,
        committed_at=NOW,
    )


def completed(command_type: str = "retire") -> CommandCompleted:
    return CommandCompleted(
        command_id=uuid4(),
        command_type=command_type,
        state=RuntimePhase.RETIRED,
        report=CommandReport(inputs_abandoned=2),
    )


async def created(store: RuntimeStore, *inputs: InputRecord) -> str:
    runtime_id = new_runtime_id()
    await store.commit([step(runtime_id, 1, *(PutInput(r, insert=True) for r in inputs))])
    return runtime_id


async def unsent_ids(store: RuntimeStore) -> list[UUID]:
    return [o.event.event_id for o in await store.fetch_unsent_events(100_000)]
