"""Runs (DOMAIN.md §6): take a batch, stage it, then commit its boundary, fail it, or cancel it.

The staged rows are committed *before* the executor is called, so a crash mid-run leaves
``staged`` rows that recovery puts back in their lane. The boundary commit writes the session
snapshot, the receipt and the consumed inputs in one decision.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Iterator, Mapping
from typing import Any
from uuid import UUID

from schemas import AttemptsExhausted, EventCode, InputKind, InputPhase, Lane, RuntimePhase
from worker.core.errors import RunNotCurrent
from worker.core.lifecycle import PROCESSES_QUEUE, InputTrigger, RuntimeTrigger
from worker.core.model import (
    MAX_STAGE_ATTEMPTS,
    BoundaryReceipt,
    Context,
    Decision,
    InputRecord,
    PutInput,
    PutReceipt,
    PutSnapshot,
    RunState,
    Runtime,
    SessionSnapshot,
    Signal,
)
from worker.core.records import (
    abandon_input,
    advance,
    event,
    input_event,
    input_puts,
    move_input,
    runtime_put,
    state_changed,
    with_inputs,
)

BOUNDARY_SEQUENCE = 1
"""A run commits one terminal boundary; its receipt carries this sequence."""

DEFAULT_MAX_BATCH = 64


def next_batch(runtime: Runtime, max_batch: int = DEFAULT_MAX_BATCH) -> list[InputRecord]:
    """The inputs the next run takes: the steer lane first, else the queue lane.

    Steer: the longest prefix of the head's kind. Queue: a prompt runs alone; otherwise the
    longest prefix of the head's execution kind (continuations resume, the rest are content
    turns) that stops before the next prompt.
    """
    steer = runtime.waiting(Lane.STEER)
    first = next(steer, None)
    if first is not None:
        return _prefix(first, steer, lambda r: r.kind is first.kind, max_batch)
    queue = runtime.waiting(Lane.QUEUE)
    head = next(queue, None)
    if head is None:
        return []
    if head.kind is InputKind.PROMPT:
        return [head]
    resumes = head.kind is InputKind.CONTINUATION
    return _prefix(
        head,
        queue,
        lambda r: r.kind is not InputKind.PROMPT and (r.kind is InputKind.CONTINUATION) == resumes,
        max_batch,
    )


def _prefix(
    head: InputRecord, rest: Iterator[InputRecord], same: Any, limit: int
) -> list[InputRecord]:
    """``head`` (which ``same`` accepts), then as many of ``rest`` as ``same`` accepts in a
    row, ``limit`` at most; ``rest`` is read no further than that."""
    if limit < 1:
        return []
    batch = [head]
    for record in rest:
        if not same(record) or len(batch) >= limit:
            break
        batch.append(record)
    return batch


def can_start_run(runtime: Runtime) -> bool:
    return runtime.phase in PROCESSES_QUEUE and bool(next_batch(runtime, 1))


def take_signal(runtime: Runtime) -> tuple[Runtime, Signal]:
    """The run loop takes the accumulated signal; it is cleared (never persisted)."""
    return dataclasses.replace(runtime, signal=Signal.NONE), runtime.signal


def stage_batch(
    runtime: Runtime, ctx: Context, *, run_id: UUID, max_batch: int = DEFAULT_MAX_BATCH
) -> Decision | None:
    """Start a run over the next batch; ``None`` when there is nothing the runtime may run."""
    if runtime.phase not in PROCESSES_QUEUE:
        return None
    batch = next_batch(runtime, max_batch)
    if not batch:
        return None
    phase = advance(runtime, RuntimeTrigger.START_RUN)
    staged = [
        move_input(
            r,
            InputTrigger.STAGE,
            ctx,
            f"staged on run {run_id}",
            attempt_count=r.attempt_count + 1,
            last_run_id=run_id,
        )
        for r in batch
    ]
    run = RunState(run_id=run_id, input_ids=tuple(r.input_id for r in staged), started_at=ctx.now)
    after = with_inputs(
        runtime,
        staged,
        phase=phase,
        pre_run_phase=runtime.phase,
        current_run=run,
        signal=Signal.NONE,
    )
    rid = runtime.runtime_id
    events = [
        event(
            ctx,
            rid,
            EventCode.RUN_STARTED,
            {"run_id": str(run_id), "input_ids": [str(i) for i in run.input_ids]},
            causation_id=run_id,
        )
    ]
    events += [input_event(ctx, rid, r, EventCode.INPUT_STAGED, run_id=str(run_id)) for r in staged]
    events += state_changed(ctx, rid, runtime.phase, phase, run_id)
    after, put_runtime = runtime_put(runtime, after, ctx)
    return Decision(
        runtime=after, mutations=(put_runtime, *input_puts(staged)), events=tuple(events)
    )


def _current_run(runtime: Runtime, run_id: UUID) -> RunState:
    run = runtime.current_run
    if runtime.phase is not RuntimePhase.RUNNING or run is None or run.run_id != run_id:
        raise RunNotCurrent(runtime.runtime_id, run_id)
    return run


def conversation_digest(session: Mapping[str, Any]) -> str:
    """SHA-256 of the session snapshot's canonical JSON."""
    canonical = json.dumps(session, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()


def commit_boundary(
    runtime: Runtime,
    ctx: Context,
    *,
    run_id: UUID,
    session: Mapping[str, Any],
    message_count: int,
    output: Any = None,
    digest: str | None = None,
) -> Decision:
    """The run succeeded: snapshot + receipt + contributors consumed + runtime back, at once.
    ``digest``: :func:`conversation_digest` of ``session``, when the caller made it already."""
    run = _current_run(runtime, run_id)
    if digest is None:
        digest = conversation_digest(session)
    rid = runtime.runtime_id
    contributors = [runtime.inputs[i] for i in run.input_ids]
    consumed: list[InputRecord] = []
    events = []
    for record in contributors:
        applied = move_input(
            record,
            InputTrigger.APPLY,
            ctx,
            f"boundary of run {run_id}",
            boundary_sequence=BOUNDARY_SEQUENCE,
        )
        events.append(input_event(ctx, rid, applied, EventCode.INPUT_APPLIED, run_id=str(run_id)))
        pending = move_input(applied, InputTrigger.AWAIT_CONSUMPTION, ctx, "receipt recorded")
        done = move_input(pending, InputTrigger.CONSUME, ctx, f"run {run_id} committed")
        events.append(input_event(ctx, rid, done, EventCode.INPUT_CONSUMED, run_id=str(run_id)))
        consumed.append(done)
    receipt = BoundaryReceipt(
        rid, run_id, BOUNDARY_SEQUENCE, run.input_ids, digest, message_count, ctx.now
    )
    snapshot = SessionSnapshot(rid, run_id, dict(session), digest, message_count, ctx.now)
    phase = advance(runtime, RuntimeTrigger.END_RUN)
    after = with_inputs(runtime, consumed, phase=phase, pre_run_phase=None, current_run=None)
    events.append(
        event(
            ctx,
            rid,
            EventCode.RUN_COMPLETED,
            {
                "run_id": str(run_id),
                "message_count": message_count,
                "conversation_digest": digest,
                "output": output,
            },
            causation_id=run_id,
        )
    )
    events += state_changed(ctx, rid, runtime.phase, phase, run_id)
    after, put_runtime = runtime_put(runtime, after, ctx)
    mutations = (put_runtime, PutSnapshot(snapshot), PutReceipt(receipt), *input_puts(consumed))
    return Decision(runtime=after, mutations=mutations, events=tuple(events))


def then(first: Decision, second: Decision | None) -> Decision:
    """``second`` (decided on ``first.runtime``) folded into ``first``: one decision, committed
    as one (the runtime row is written once, fenced on the version ``first`` was made from)."""
    if second is None:
        return first
    assert second.runtime_id == first.runtime_id
    return dataclasses.replace(
        first,
        runtime=second.runtime,
        mutations=(*first.mutations, *second.mutations),
        events=(*first.events, *second.events),
        blobs=(*first.blobs, *second.blobs),
    )


def fail_run(runtime: Runtime, ctx: Context, *, run_id: UUID, error: str) -> Decision:
    """The executor failed: each staged input goes back behind the backlog, or is abandoned
    once it has been staged :data:`MAX_STAGE_ATTEMPTS` times."""
    run = _current_run(runtime, run_id)
    rid = runtime.runtime_id
    next_seq = runtime.next_admission_seq
    changed: list[InputRecord] = []
    events = [
        event(
            ctx,
            rid,
            EventCode.RUN_FAILED,
            {"run_id": str(run_id), "error": error},
            causation_id=run_id,
        )
    ]
    for input_id in run.input_ids:
        record = runtime.inputs[input_id]
        if record.attempt_count >= MAX_STAGE_ATTEMPTS:
            reason = AttemptsExhausted(attempts=record.attempt_count)
            moved = abandon_input(record, reason, ctx, InputTrigger.EXHAUST)
            events.append(
                input_event(
                    ctx,
                    rid,
                    moved,
                    EventCode.INPUT_ABANDONED,
                    reason=reason.model_dump(mode="json"),
                )
            )
        else:
            moved = move_input(
                record, InputTrigger.REQUEUE, ctx, f"run {run_id} failed", admission_seq=next_seq
            )
            next_seq += 1
            events.append(
                input_event(ctx, rid, moved, EventCode.INPUT_QUEUED, lane=moved.lane.value)
            )
        changed.append(moved)
    phase = advance(runtime, RuntimeTrigger.END_RUN)
    requeued = any(r.phase is InputPhase.QUEUED for r in changed)
    after = with_inputs(
        runtime,
        changed,
        phase=phase,
        pre_run_phase=None,
        current_run=None,
        next_admission_seq=next_seq,
        signal=max(runtime.signal, Signal.WAKE if requeued else Signal.NONE),
    )
    events += state_changed(ctx, rid, runtime.phase, phase, run_id)
    after, put_runtime = runtime_put(runtime, after, ctx)
    return Decision(
        runtime=after, mutations=(put_runtime, *input_puts(changed)), events=tuple(events)
    )


def archive_terminal(runtime: Runtime, decision: Decision | None = None) -> Runtime:
    """Forget terminal inputs; the store keeps their rows for dedupe. With ``decision`` (the one
    that produced ``runtime``), only the inputs it made terminal are looked at: every terminal
    transition is one of a decision's input puts, so the rest were archived before."""
    if decision is not None:
        ended = [m.record.input_id for m in decision.mutations
                 if isinstance(m, PutInput) and m.record.is_terminal]
        if not ended:
            return runtime
        return dataclasses.replace(runtime, inputs=runtime.inputs.without(ended))
    if runtime.inputs.live_count == len(runtime.inputs):
        return runtime
    ended = [k for k, v in runtime.inputs.items() if v.is_terminal]
    return dataclasses.replace(runtime, inputs=runtime.inputs.without(ended))
