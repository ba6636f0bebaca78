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
) -> Decision:
    """Normalize the stored state; the decision commits it once (nothing if no row exists)."""
    if row is None:
        return Decision(
            runtime=Runtime(runtime_id), mutations=(), events=(), recovery=RecoveryReport(0, 0, 0)
        )
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
