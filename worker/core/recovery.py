"""Recovery normalization (DOMAIN.md §9): what a cold load makes of the stored rows.

Every cold load (worker start, shard takeover, after a version conflict) runs this and commits
the result once, fenced by the row's version, so any other process still holding an older copy
of the runtime fails its next compare-and-set and reloads.

Unlike the Rust original, ``retired``, ``stopped`` and ``destroyed`` survive a reload: with many
replicas a reload happens all the time, and a destroyed runtime must stay destroyed. One further
choice: a ``staged`` input that has already been staged :data:`MAX_STAGE_ATTEMPTS` times is
abandoned instead of requeued, so an input whose run kills the worker cannot loop forever.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from uuid import UUID

from schemas import AttemptsExhausted, Durability, InputPhase, RuntimePhase
from worker.core.lifecycle import InputTrigger
from worker.core.model import (
    MAX_STAGE_ATTEMPTS,
    Context,
    Decision,
    DeleteInput,
    InputRecord,
    Mutation,
    PutRuntime,
    RecoveryReport,
    RunState,
    Runtime,
    RuntimeRow,
    Signal,
)
from worker.core.records import abandon_input, input_puts, move_input, with_inputs

_PROCESS_LOCAL = {RuntimePhase.RUNNING, RuntimePhase.ATTACHED}


def recovered_phase(row: RuntimeRow) -> RuntimePhase:
    if row.phase is RuntimePhase.RUNNING:
        pre = row.pre_run_phase or RuntimePhase.IDLE
        return RuntimePhase.IDLE if pre in _PROCESS_LOCAL else pre
    if row.phase is RuntimePhase.ATTACHED:
        return RuntimePhase.IDLE
    return row.phase


def recover(
    runtime_id: str,
    row: RuntimeRow | None,
    inputs: Iterable[InputRecord],
    receipts: frozenset[tuple[UUID, int]],
    ctx: Context,
    *,
    live_run: UUID | None = None,
) -> Decision:
    """Normalize the stored state; the decision commits it once (nothing if no row exists).

    ``live_run`` names a run this very process is still executing (it reloads the runtime
    because its cached copy went stale, not because the run died). If the stored row still
    shows that run, the run and its staged inputs are kept as they are, so its result can be
    committed and nothing is executed twice.
    """
    if row is None:
        return Decision(
            runtime=Runtime(runtime_id), mutations=(), events=(), recovery=RecoveryReport(0, 0, 0)
        )
    if (
        live_run is not None
        and row.phase is RuntimePhase.RUNNING
        and (row.current_run_id == live_run)
    ):
        return _keep_live_run(runtime_id, row, inputs, live_run, ctx)
    kept: list[InputRecord] = []
    changed: list[InputRecord] = []
    deleted: list[UUID] = []
    requeued = 0
    for record in inputs:
        if record.is_terminal:
            continue
        if record.durability is Durability.EPHEMERAL:
            deleted.append(record.input_id)
            continue
        normalized = _normalize(record, receipts, ctx)
        if normalized is not record:
            normalized = dataclasses.replace(normalized, recovery_count=record.recovery_count + 1)
            changed.append(normalized)
            requeued += normalized.phase is InputPhase.QUEUED
        kept.append(normalized)
    next_seq = max([row.next_admission_seq, *(r.admission_seq + 1 for r in kept)])
    queued = any(r.phase is InputPhase.QUEUED for r in kept)
    runtime = with_inputs(
        Runtime(runtime_id, phase=recovered_phase(row), version=row.version + 1),
        kept,
        next_admission_seq=next_seq,
        signal=Signal.WAKE if queued else Signal.NONE,
    )
    mutations: list[Mutation] = [PutRuntime(runtime.row(ctx.now), expected_version=row.version)]
    mutations += input_puts(changed)
    mutations += [DeleteInput(i) for i in deleted]
    report = RecoveryReport(
        inputs_recovered=len(kept), inputs_requeued=requeued, inputs_discarded=len(deleted)
    )
    return Decision(runtime=runtime, mutations=tuple(mutations), events=(), recovery=report)


def _keep_live_run(
    runtime_id: str, row: RuntimeRow, inputs: Iterable[InputRecord], run_id: UUID, ctx: Context
) -> Decision:
    live = [r for r in inputs if not r.is_terminal]
    staged = sorted(
        (r for r in live if r.phase is InputPhase.STAGED and r.last_run_id == run_id),
        key=lambda r: (r.admission_seq, str(r.input_id)),
    )
    run = RunState(run_id=run_id, input_ids=tuple(r.input_id for r in staged), started_at=ctx.now)
    runtime = with_inputs(
        Runtime(
            runtime_id,
            phase=RuntimePhase.RUNNING,
            version=row.version + 1,
            pre_run_phase=row.pre_run_phase,
            current_run=run,
        ),
        live,
        next_admission_seq=row.next_admission_seq,
    )
    mutations = (PutRuntime(runtime.row(ctx.now), expected_version=row.version),)
    report = RecoveryReport(inputs_recovered=len(live), inputs_requeued=0, inputs_discarded=0)
    return Decision(runtime=runtime, mutations=mutations, events=(), recovery=report)


def _normalize(
    record: InputRecord, receipts: frozenset[tuple[UUID, int]], ctx: Context
) -> InputRecord:
    if record.phase is InputPhase.STAGED:
        if record.attempt_count >= MAX_STAGE_ATTEMPTS:
            reason = AttemptsExhausted(attempts=record.attempt_count)
            return abandon_input(record, reason, ctx, InputTrigger.EXHAUST)
        return move_input(record, InputTrigger.REQUEUE, ctx, "recovered: run did not finish")
    if record.phase in (InputPhase.APPLIED, InputPhase.APPLIED_PENDING_CONSUMPTION):
        receipt = (record.last_run_id, record.boundary_sequence)
        if (
            record.last_run_id is not None
            and record.boundary_sequence is not None
            and (receipt in receipts)
        ):
            return move_input(
                record, InputTrigger.RECOVER_CONSUMED, ctx, "recovered: boundary receipt present"
            )
        return move_input(
            record, InputTrigger.RECOVER_REQUEUE, ctx, "recovered: no boundary receipt"
        )
    return record
