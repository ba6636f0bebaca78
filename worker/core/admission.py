"""Admission: the phase gate, validation, dedupe, coalescing, lanes and the wake signal.

DOMAIN.md §3 orders the checks gate → validation → dedupe. One deliberate refinement: a known
*input id* is recognised before the gate, because it is the same message again (an AMQP
redelivery of something already committed) and must be acked as a duplicate even if the runtime
has since stopped accepting input. An idempotency key names a *different* message, so key dedupe
stays after the gate and validation, as specified.
"""

from __future__ import annotations

import dataclasses
from uuid import UUID

from schemas import (
    DEFAULT_LIMITS,
    Accepted,
    AnyInput,
    BlobImageBlock,
    ContinuationInput,
    Deduplicated,
    EventCode,
    EventEnvelope,
    ExternalEventInput,
    FlowStepInput,
    HandlingMode,
    InlineImageBlock,
    InputKind,
    InputPhase,
    InputRejected,
    Lane,
    Limits,
    NotReady,
    OperationInput,
    PeerInput,
    PromptInput,
    RuntimeDestroyed,
    RuntimePhase,
    blob_id_for,
    input_kind,
    validate_input,
)
from schemas.content import ContentBlock
from worker.core.lifecycle import ACCEPTS_INPUT, InputTrigger, RuntimeTrigger
from worker.core.model import (
    BlobWrite,
    Context,
    Decision,
    HistoryEntry,
    InputRecord,
    Runtime,
    Signal,
)
from worker.core.records import (
    advance,
    event,
    input_event,
    input_puts,
    move_input,
    runtime_put,
    state_changed,
    with_inputs,
)


def ensure_created(runtime: Runtime, ctx: Context) -> tuple[Runtime, list[EventEnvelope]]:
    """A runtime comes into being (``initializing`` → ``idle``) with the first message."""
    if runtime.phase is not RuntimePhase.INITIALIZING or runtime.version != 0:
        return runtime, []
    created = dataclasses.replace(runtime, phase=advance(runtime, RuntimeTrigger.INITIALIZE))
    return created, state_changed(ctx, runtime.runtime_id, runtime.phase, created.phase)


def accept_input(
    runtime: Runtime,
    item: AnyInput,
    ctx: Context,
    *,
    limits: Limits = DEFAULT_LIMITS,
    message_bytes: int | None = None,
    stored_match: UUID | None = None,
) -> Decision:
    """Admit ``item`` or decide it is a duplicate; raise :class:`InputRejected` otherwise.

    ``stored_match`` is the id of an input already in the store with this id or idempotency key
    (the shell looks it up; inputs archived from memory are only known there).
    """
    header = item.header
    if header.id in runtime.inputs:
        return _deduplicated(runtime, item, header.id, ctx)
    if stored_match == header.id:
        return _deduplicated(runtime, item, header.id, ctx)
    _check_gate(runtime)
    validate_input(item, limits, message_bytes=message_bytes)
    if header.idempotency_key is not None:
        known = runtime.find_key(header.idempotency_key)
        if known is not None:
            return _deduplicated(runtime, item, known.input_id, ctx)
    if stored_match is not None:
        return _deduplicated(runtime, item, stored_match, ctx)
    return _admit(runtime, item, ctx)


def _check_gate(runtime: Runtime) -> None:
    if runtime.phase is RuntimePhase.DESTROYED:
        raise InputRejected(RuntimeDestroyed())
    if runtime.phase is RuntimePhase.INITIALIZING and runtime.version == 0:
        return  # created by this very message
    if runtime.phase not in ACCEPTS_INPUT:
        raise InputRejected(NotReady(state=runtime.phase))


def _deduplicated(runtime: Runtime, item: AnyInput, existing: UUID, ctx: Context) -> Decision:
    header = item.header
    data = {"input_id": str(header.id), "existing_id": str(existing)}
    note = event(
        ctx,
        runtime.runtime_id,
        EventCode.INPUT_DEDUPLICATED,
        data,
        causation_id=header.id,
        correlation_id=header.correlation_id,
    )
    return Decision(
        runtime=runtime,
        mutations=(),
        events=(note,),
        outcome=Deduplicated(input_id=header.id, existing_id=existing),
    )


def _admit(runtime: Runtime, item: AnyInput, ctx: Context) -> Decision:
    current, created_events = ensure_created(runtime, ctx)
    kind = input_kind(item)
    lane = lane_for(item, kind)
    stored_payload, blobs = externalize_images(item)
    record = InputRecord(
        input_id=item.header.id,
        kind=kind,
        phase=InputPhase.QUEUED,
        lane=lane,
        admission_seq=current.next_admission_seq,
        durability=item.header.durability,
        payload=stored_payload,
        created_at=ctx.now,
        updated_at=ctx.now,
        idempotency_key=item.header.idempotency_key,
        supersession_key=item.header.supersession_key,
        correlation_id=item.header.correlation_id,
        history=(HistoryEntry(ctx.now, None, InputPhase.QUEUED, "accepted"),),
    )
    rid = runtime.runtime_id
    events = [*created_events]
    events.append(
        input_event(
            ctx,
            rid,
            record,
            EventCode.INPUT_ACCEPTED,
            kind=kind.value,
            lane=lane.value,
            admission_seq=record.admission_seq,
        )
    )
    replaced = _coalesce_or_supersede(current, record, ctx)
    for old in replaced:
        code = (
            EventCode.INPUT_COALESCED
            if old.phase is InputPhase.COALESCED
            else EventCode.INPUT_SUPERSEDED
        )
        events.append(input_event(ctx, rid, old, code, by=str(record.input_id)))
    if kind is InputKind.OPERATION:
        record = move_input(record, InputTrigger.CONSUME_ON_ACCEPT, ctx, "consumed_on_accept")
        events.append(input_event(ctx, rid, record, EventCode.INPUT_CONSUMED))
        signal = current.signal
    else:
        events.append(input_event(ctx, rid, record, EventCode.INPUT_QUEUED, lane=lane.value))
        signal = max(current.signal, admission_signal(current.phase, kind, lane))
    after = with_inputs(
        current,
        [*replaced, record],
        next_admission_seq=current.next_admission_seq + 1,
        signal=signal,
    )
    after, put_runtime = runtime_put(runtime, after, ctx)
    # Built without validation, as events are: every value is the core's own.
    outcome = Accepted.model_construct(
        input_id=record.input_id,
        phase=record.phase,
        lane=None if kind is InputKind.OPERATION else lane,
        admission_seq=record.admission_seq,
    )
    mutations = [
        put_runtime,
        *input_puts(replaced),
        *input_puts([record], frozenset({record.input_id})),
    ]
    return Decision(
        runtime=after,
        mutations=tuple(mutations),
        events=tuple(events),
        outcome=outcome,
        blobs=tuple(blobs),
    )


def lane_for(item: AnyInput, kind: InputKind) -> Lane:
    """The lane an input waits in (DOMAIN.md §3)."""
    if kind is InputKind.PEER_RESPONSE_PROGRESS:
        return Lane.STEER
    mode: HandlingMode | None = None
    if isinstance(item, PromptInput) and item.turn_metadata is not None:
        mode = item.turn_metadata.handling_mode
    elif isinstance(item, PeerInput | ExternalEventInput | ContinuationInput):
        mode = item.handling_mode
    return Lane.STEER if mode is HandlingMode.STEER else Lane.QUEUE


def admission_signal(phase: RuntimePhase, kind: InputKind, lane: Lane) -> Signal:
    """What the run loop should be told about one newly queued input."""
    if kind is InputKind.PEER_RESPONSE_PROGRESS:
        return Signal.NONE
    running = phase is RuntimePhase.RUNNING
    if lane is Lane.STEER:
        return Signal.INTERRUPT if running else Signal.IMMEDIATE
    if running:
        if kind in (InputKind.PEER_MESSAGE, InputKind.PEER_REQUEST):
            return Signal.INTERRUPT
        # A terminal peer response wakes even while running: it is seen when the loop idles.
        return Signal.WAKE if kind is InputKind.PEER_RESPONSE_TERMINAL else Signal.NONE
    return Signal.WAKE


def _coalesce_or_supersede(
    runtime: Runtime, newcomer: InputRecord, ctx: Context
) -> list[InputRecord]:
    """Queued inputs of the same (kind, supersession key) that the newcomer replaces."""
    key = newcomer.supersession_key
    if key is None:
        return []
    if newcomer.kind is InputKind.PEER_RESPONSE_PROGRESS:
        trigger, field = InputTrigger.COALESCE, "aggregate_id"
    elif newcomer.kind is InputKind.EXTERNAL_EVENT:
        trigger, field = InputTrigger.SUPERSEDE, "superseded_by"
    else:
        return []
    return [
        move_input(old, trigger, ctx, trigger.value, **{field: newcomer.input_id})
        for old in runtime.inputs.queued_with_key(newcomer.kind, key)
    ]


def externalize_images(item: AnyInput) -> tuple[AnyInput, list[BlobWrite]]:
    """The input as stored (inline images replaced by blob references) and the blobs to put."""
    writes: list[BlobWrite] = []

    def swap(blocks: list[ContentBlock]) -> list[ContentBlock]:
        out: list[ContentBlock] = []
        for block in blocks:
            if isinstance(block, InlineImageBlock):
                blob_id = blob_id_for(block.media_type.value, block.data)
                writes.append(BlobWrite(blob_id, block.media_type.value, block.data))
                out.append(BlobImageBlock(media_type=block.media_type, blob_id=blob_id))
            else:
                out.append(block)
        return out

    if isinstance(item, PromptInput | PeerInput | FlowStepInput):
        if isinstance(item.content, str):
            return item, []
        stored: AnyInput = item.model_copy(update={"content": swap(item.content)})
        return stored, writes
    if isinstance(item, ExternalEventInput) and item.blocks:
        return item.model_copy(update={"blocks": swap(item.blocks)}), writes
    assert isinstance(item, ExternalEventInput | ContinuationInput | OperationInput)
    return item, []
