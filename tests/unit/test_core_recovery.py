"""Recovery normalization (DOMAIN.md §9): what a cold load makes of the stored rows."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from schemas import (
    AttemptsExhausted,
    Durability,
    InputKind,
    InputPhase,
    Lane,
    RuntimePhase,
    SimpleAbandonReason,
)
from tests.unit.core_factories import (
    FIXED_NOW,
    StoreModel,
    make_command,
    make_context,
    make_input,
    new_run_id,
    new_runtime_id,
    put_inputs,
    put_runtime,
)
from worker.core import (
    MAX_STAGE_ATTEMPTS,
    Context,
    Decision,
    DeleteInput,
    HistoryEntry,
    InputRecord,
    RecoveryReport,
    Runtime,
    RuntimeRow,
    Signal,
    accept_input,
    apply_command,
    archive_terminal,
    commit_boundary,
    recover,
    stage_batch,
)

pytestmark = pytest.mark.unit

_I = InputPhase
_R = RuntimePhase
RUN = new_run_id()
RECEIPTS = frozenset({(RUN, 1)})


@pytest.fixture
def ctx() -> Context:
    return make_context()


def row(
    phase: RuntimePhase = _R.IDLE,
    *,
    pre_run: RuntimePhase | None = None,
    version: int = 7,
    next_seq: int = 10,
) -> RuntimeRow:
    return RuntimeRow(
        runtime_id=new_runtime_id("recovery"),
        phase=phase,
        pre_run_phase=pre_run,
        current_run_id=RUN if phase is _R.RUNNING else None,
        next_admission_seq=next_seq,
        version=version,
        updated_at=FIXED_NOW,
    )


def record(phase: InputPhase, seq: int = 1, **fields: Any) -> InputRecord:
    item = make_input(InputKind.PROMPT)
    return InputRecord(
        input_id=item.header.id,
        kind=InputKind.PROMPT,
        phase=phase,
        lane=Lane.QUEUE,
        admission_seq=seq,
        durability=fields.pop("durability", Durability.DURABLE),
        payload=item,
        created_at=FIXED_NOW,
        updated_at=FIXED_NOW,
        history=(HistoryEntry(FIXED_NOW, None, _I.QUEUED, "accepted"),),
        **fields,
    )


def recovered(stored: RuntimeRow, inputs: list[InputRecord], ctx: Context) -> Decision:
    decision = recover(stored.runtime_id, stored, inputs, RECEIPTS, ctx)
    assert decision.recovery is not None
    assert decision.events == ()
    return decision


def ran(phase: InputPhase, *, receipt: bool, **fields: Any) -> InputRecord:
    run = RUN if receipt else new_run_id()
    return record(phase, attempt_count=1, last_run_id=run, boundary_sequence=1, **fields)


# --- inputs ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("stored", "after", "reason"),
    [
        (record(_I.STAGED, attempt_count=1), _I.QUEUED, "recovered: run did not finish"),
        (ran(_I.APPLIED, receipt=True), _I.CONSUMED, "recovered: boundary receipt present"),
        (
            ran(_I.APPLIED_PENDING_CONSUMPTION, receipt=True),
            _I.CONSUMED,
            "recovered: boundary receipt present",
        ),
        (ran(_I.APPLIED, receipt=False), _I.QUEUED, "recovered: no boundary receipt"),
        (
            ran(_I.APPLIED_PENDING_CONSUMPTION, receipt=False),
            _I.QUEUED,
            "recovered: no boundary receipt",
        ),
        (
            record(_I.APPLIED, attempt_count=1, last_run_id=RUN),
            _I.QUEUED,
            "recovered: no boundary receipt",
        ),
    ],
)
def test_input_normalization(
    stored: InputRecord, after: InputPhase, reason: str, ctx: Context
) -> None:
    decision = recovered(row(), [stored], ctx)
    (normalized,) = put_inputs(decision)
    assert normalized.phase is after
    assert normalized.recovery_count == stored.recovery_count + 1
    assert normalized.history[-1] == HistoryEntry(ctx.now, stored.phase, after, reason)
    assert decision.runtime.inputs[stored.input_id] == normalized
    requeued = int(after is _I.QUEUED)
    assert decision.recovery == RecoveryReport(1, requeued, 0)
    assert decision.runtime.signal is (Signal.WAKE if requeued else Signal.NONE)


def test_queued_rows_are_kept_as_they_are(ctx: Context) -> None:
    queued = record(_I.QUEUED)
    decision = recovered(row(), [queued], ctx)
    assert put_inputs(decision) == []
    assert decision.runtime.inputs[queued.input_id] is queued
    assert decision.runtime.lane(Lane.QUEUE) == [queued]
    assert decision.recovery == RecoveryReport(1, 0, 0)


@pytest.mark.parametrize("phase", [_I.QUEUED, _I.STAGED, _I.APPLIED])
def test_ephemeral_live_rows_are_deleted(phase: InputPhase, ctx: Context) -> None:
    ephemeral = record(phase, durability=Durability.EPHEMERAL)
    decision = recovered(row(), [ephemeral], ctx)
    assert decision.mutations[1:] == (DeleteInput(ephemeral.input_id),)
    assert decision.runtime.inputs == {}
    assert decision.recovery == RecoveryReport(0, 0, 1)


@pytest.mark.parametrize("durability", list(Durability))
@pytest.mark.parametrize("phase", [_I.CONSUMED, _I.COALESCED, _I.SUPERSEDED, _I.ABANDONED])
def test_terminal_rows_are_left_alone(
    phase: InputPhase, durability: Durability, ctx: Context
) -> None:
    terminal = record(phase, durability=durability)
    decision = recovered(row(), [terminal], ctx)
    assert len(decision.mutations) == 1  # only the runtime row
    assert decision.runtime.inputs == {}
    assert decision.recovery == RecoveryReport(0, 0, 0)


def test_a_staged_input_out_of_attempts_is_abandoned(ctx: Context) -> None:
    """recovery.py's documented choice: a run that kills the worker cannot loop forever."""
    worn = record(_I.STAGED, attempt_count=MAX_STAGE_ATTEMPTS)
    fresh = record(_I.STAGED, seq=2, attempt_count=MAX_STAGE_ATTEMPTS - 1)
    decision = recovered(row(), [worn, fresh], ctx)
    after = decision.runtime.inputs
    assert after[worn.input_id].phase is _I.ABANDONED
    assert after[worn.input_id].abandon_reason == AttemptsExhausted(attempts=MAX_STAGE_ATTEMPTS)
    assert after[fresh.input_id].phase is _I.QUEUED
    assert {r.input_id for r in put_inputs(decision)} == {worn.input_id, fresh.input_id}
    assert decision.recovery == RecoveryReport(2, 1, 0)


def test_report_counts_a_mixed_store(ctx: Context) -> None:
    rows = [
        record(_I.QUEUED, seq=1),
        record(_I.STAGED, seq=2, attempt_count=1),
        ran(_I.APPLIED, receipt=True, seq=3),
        ran(_I.APPLIED_PENDING_CONSUMPTION, receipt=False, seq=4),
        record(_I.QUEUED, seq=5, durability=Durability.EPHEMERAL),
        record(_I.STAGED, seq=6, durability=Durability.EPHEMERAL),
        record(_I.CONSUMED, seq=7),
        record(_I.ABANDONED, seq=8, abandon_reason=SimpleAbandonReason(reason="reset")),
    ]
    decision = recovered(row(next_seq=3), rows, ctx)
    assert decision.recovery == RecoveryReport(
        inputs_recovered=4, inputs_requeued=2, inputs_discarded=2
    )
    assert len(put_inputs(decision)) == 3
    assert sum(isinstance(m, DeleteInput) for m in decision.mutations) == 2
    assert decision.runtime.next_admission_seq == 5  # past every kept input
    assert [r.admission_seq for r in decision.runtime.lane(Lane.QUEUE)] == [1, 2, 4]


# --- the runtime -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("stored", "pre_run", "after"),
    [
        (_R.RUNNING, _R.IDLE, _R.IDLE),
        (_R.RUNNING, None, _R.IDLE),
        (_R.RUNNING, _R.ATTACHED, _R.IDLE),
        (_R.RUNNING, _R.RETIRED, _R.RETIRED),
        (_R.ATTACHED, None, _R.IDLE),
        (_R.IDLE, None, _R.IDLE),
        (_R.RETIRED, None, _R.RETIRED),
        (_R.STOPPED, None, _R.STOPPED),
        (_R.DESTROYED, None, _R.DESTROYED),
    ],
)
def test_runtime_phase_after_reload(
    stored: RuntimePhase, pre_run: RuntimePhase | None, after: RuntimePhase, ctx: Context
) -> None:
    stored_row = row(stored, pre_run=pre_run)
    decision = recovered(stored_row, [], ctx)
    runtime = decision.runtime
    assert (runtime.phase, runtime.pre_run_phase, runtime.current_run) == (after, None, None)
    put = put_runtime(decision)
    assert put.expected_version == stored_row.version
    assert put.row.version == runtime.version == stored_row.version + 1
    assert (put.row.phase, put.row.current_run_id, put.row.pre_run_phase) == (after, None, None)
    assert put.row.next_admission_seq == stored_row.next_admission_seq
    assert decision.recovery == RecoveryReport(0, 0, 0)


def test_no_row_gives_a_fresh_runtime(ctx: Context) -> None:
    runtime_id = new_runtime_id("absent")
    decision = recover(runtime_id, None, [record(_I.QUEUED)], frozenset(), ctx)
    assert decision.runtime == Runtime(runtime_id)
    assert decision.mutations == ()
    assert decision.recovery == RecoveryReport(0, 0, 0)


# --- a reload of what the core itself committed ----------------------------------------------


def committed(store: StoreModel, decision: Decision | None) -> Runtime:
    assert decision is not None
    store.commit(decision)
    return decision.runtime


def test_a_crash_mid_run_requeues_the_batch(ctx: Context) -> None:
    store = StoreModel()
    runtime = Runtime(new_runtime_id("crash"))
    steps = [make_input(), make_input()]
    for item in steps:
        runtime = committed(store, accept_input(runtime, item, ctx))
    running = committed(store, stage_batch(runtime, ctx, run_id=new_run_id()))
    assert store.inputs[steps[0].header.id].phase is _I.STAGED
    # The worker dies here: only the store is left.
    reloaded = committed(store, store.recover(running.runtime_id, ctx))
    assert reloaded.phase is _R.IDLE
    assert {r.phase for r in store.inputs.values()} == {_I.QUEUED}
    assert [r.input_id for r in reloaded.lane(Lane.QUEUE)] == [s.header.id for s in steps]
    assert store.version == reloaded.version == running.version + 1


def test_a_crash_while_retiring_reloads_retired(ctx: Context) -> None:
    store = StoreModel()
    runtime = Runtime(new_runtime_id("crash"))
    for item in (make_input(), make_input()):
        runtime = committed(store, accept_input(runtime, item, ctx))
    runtime = committed(store, stage_batch(runtime, ctx, run_id=new_run_id()))
    runtime = committed(store, apply_command(runtime, make_command("retire"), ctx))
    reloaded = committed(store, store.recover(runtime.runtime_id, ctx))
    assert reloaded.phase is _R.RETIRED
    assert len(reloaded.lane(Lane.QUEUE)) == 2
    assert stage_batch(reloaded, ctx, run_id=new_run_id()) is not None


def test_recovered_inputs_keep_their_dedupe_keys(ctx: Context) -> None:
    consumed = record(_I.CONSUMED, idempotency_key="paid-once")
    stored_row = row()
    store = StoreModel(stored_row, {consumed.input_id: consumed})
    decision = store.recover(stored_row.runtime_id, ctx)
    store.commit(decision)
    again = make_input(idempotency_key="paid-once")
    answer = accept_input(decision.runtime, again, ctx, stored_match=store.stored_match(again))
    assert answer.mutations == ()
    assert answer.outcome is not None
    assert getattr(answer.outcome, "existing_id", None) == consumed.input_id


def test_recovery_is_idempotent(ctx: Context) -> None:
    stored_row = row()
    rows = [record(_I.STAGED, attempt_count=1), ran(_I.APPLIED, receipt=True, seq=2)]
    store = StoreModel(stored_row, {r.input_id: r for r in rows}, set(RECEIPTS))
    first = store.recover(stored_row.runtime_id, ctx)
    store.commit(first)
    second = store.recover(stored_row.runtime_id, ctx)
    assert second.mutations == (put_runtime(second),)
    assert second.recovery == RecoveryReport(1, 0, 0)
    live = archive_terminal(first.runtime)
    assert second.runtime == dataclasses.replace(live, version=live.version + 1)


def test_a_reload_keeps_a_run_this_process_is_still_executing(ctx: Context) -> None:
    store = StoreModel()
    runtime = Runtime(new_runtime_id("live"))
    steps = [make_input(InputKind.EXTERNAL_EVENT), make_input(InputKind.EXTERNAL_EVENT)]
    for item in steps:
        runtime = committed(store, accept_input(runtime, item, ctx))
    run_id = new_run_id()
    running = committed(store, stage_batch(runtime, ctx, run_id=run_id))
    assert running.current_run is not None
    # The cached copy went stale (a conflict elsewhere) while the executor still runs.
    assert store.row is not None
    decision = recover(running.runtime_id, store.row, list(store.inputs.values()),
                       frozenset(store.receipts), ctx, live_run=run_id)
    reloaded = committed(store, decision)
    assert reloaded.phase is _R.RUNNING
    assert reloaded.current_run is not None
    assert reloaded.current_run.input_ids == running.current_run.input_ids
    assert {r.phase for r in store.inputs.values()} == {_I.STAGED}
    assert decision.recovery == RecoveryReport(2, 0, 0)
    finished = commit_boundary(reloaded, ctx, run_id=run_id, session={}, message_count=0)
    assert {r.phase for r in finished.runtime.inputs.values()} == {_I.CONSUMED}


def test_a_live_run_that_the_store_no_longer_shows_is_not_kept(ctx: Context) -> None:
    store = StoreModel()
    runtime = Runtime(new_runtime_id("gone"))
    runtime = committed(store, accept_input(runtime, make_input(), ctx))
    running = committed(store, stage_batch(runtime, ctx, run_id=new_run_id()))
    stopped = committed(store, apply_command(running, make_command("stop"), ctx))
    assert store.row is not None
    decision = recover(stopped.runtime_id, store.row, list(store.inputs.values()),
                       frozenset(store.receipts), ctx, live_run=new_run_id())
    assert decision.runtime.phase is _R.STOPPED
    assert decision.runtime.current_run is None
