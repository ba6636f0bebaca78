"""Runs (DOMAIN.md §6): batching, staging, the boundary commit, failures and the attempt cap."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable
from typing import Any
from uuid import UUID

import pytest

from schemas import (
    AnyInput,
    AttemptsExhausted,
    HandlingMode,
    InputKind,
    InputPhase,
    Lane,
    RuntimePhase,
)
from tests.unit.core_factories import (
    admit_all,
    assert_unchanged,
    command,
    event_codes,
    idle_runtime,
    make_context,
    make_input,
    new_run_id,
    put_inputs,
    put_runtime,
    runtime_image,
    stage,
)
from worker.core import (
    MAX_STAGE_ATTEMPTS,
    BoundaryReceipt,
    Context,
    Decision,
    PutReceipt,
    PutSnapshot,
    RunNotCurrent,
    Runtime,
    Signal,
    archive_terminal,
    can_start_run,
    commit_boundary,
    conversation_digest,
    fail_run,
    next_batch,
    stage_batch,
)

pytestmark = pytest.mark.unit

K = InputKind
STEER = HandlingMode.STEER
SESSION = {"messages": [{"role": "user", "text": "hi"}, {"role": "assistant", "text": "yo"}]}


@pytest.fixture
def ctx() -> Context:
    return make_context()


def ids(items: list[AnyInput]) -> list[UUID]:
    return [i.header.id for i in items]


def batch_ids(runtime: Runtime, max_batch: int = 64) -> list[UUID]:
    return [r.input_id for r in next_batch(runtime, max_batch)]


def staged(runtime: Runtime, ctx: Context, **kwargs: Any) -> tuple[Decision, UUID]:
    run_id = new_run_id()
    image = runtime_image(runtime)
    decision = stage_batch(runtime, ctx, run_id=run_id, **kwargs)
    assert_unchanged(runtime, image)
    assert decision is not None
    return decision, run_id


def committed(runtime: Runtime, ctx: Context, run_id: UUID) -> Decision:
    image = runtime_image(runtime)
    decision = commit_boundary(runtime, ctx, run_id=run_id, session=SESSION, message_count=2)
    assert_unchanged(runtime, image)
    return decision


def failed(runtime: Runtime, ctx: Context, run_id: UUID) -> Decision:
    image = runtime_image(runtime)
    decision = fail_run(runtime, ctx, run_id=run_id, error="executor crashed")
    assert_unchanged(runtime, image)
    return decision


# --- batching --------------------------------------------------------------------------------


def test_steer_lane_goes_first(ctx: Context) -> None:
    queued = make_input(K.PROMPT)
    steer = make_input(K.CONTINUATION, mode=STEER)
    runtime = idle_runtime(ctx, queued, steer)
    assert batch_ids(runtime) == [steer.header.id]


def test_steer_batch_is_the_longest_prefix_of_one_kind(ctx: Context) -> None:
    items = [
        make_input(K.PEER_RESPONSE_PROGRESS),
        make_input(K.PEER_RESPONSE_PROGRESS),
        make_input(K.PROMPT, mode=STEER),
        make_input(K.PEER_RESPONSE_PROGRESS),
    ]
    assert batch_ids(idle_runtime(ctx, *items)) == ids(items[:2])


def test_a_prompt_runs_alone(ctx: Context) -> None:
    items = [make_input(K.PROMPT), make_input(K.PROMPT), make_input(K.PEER_MESSAGE)]
    assert batch_ids(idle_runtime(ctx, *items)) == ids(items[:1])


def test_a_content_batch_stops_before_a_prompt(ctx: Context) -> None:
    items = [
        make_input(K.PEER_MESSAGE),
        make_input(K.FLOW_STEP),
        make_input(K.EXTERNAL_EVENT),
        make_input(K.PEER_RESPONSE_TERMINAL),
        make_input(K.PROMPT),
        make_input(K.PEER_MESSAGE),
    ]
    assert batch_ids(idle_runtime(ctx, *items)) == ids(items[:4])


@pytest.mark.parametrize(
    ("kinds", "taken"),
    [
        ([K.CONTINUATION, K.CONTINUATION, K.PEER_MESSAGE, K.CONTINUATION], 2),
        ([K.PEER_MESSAGE, K.CONTINUATION, K.PEER_MESSAGE], 1),
        ([K.CONTINUATION, K.PROMPT], 1),
    ],
)
def test_continuations_and_content_do_not_mix(
    kinds: list[InputKind], taken: int, ctx: Context
) -> None:
    items = [make_input(kind) for kind in kinds]
    assert batch_ids(idle_runtime(ctx, *items)) == ids(items[:taken])


@pytest.mark.parametrize("lane_mode", [None, STEER])
def test_max_batch(lane_mode: HandlingMode | None, ctx: Context) -> None:
    items = [make_input(K.PEER_MESSAGE, mode=lane_mode) for _ in range(5)]
    runtime = idle_runtime(ctx, *items)
    assert batch_ids(runtime, 2) == ids(items[:2])
    decision, _ = staged(runtime, ctx, max_batch=3)
    assert decision.runtime.current_run is not None
    assert list(decision.runtime.current_run.input_ids) == ids(items[:3])


def test_nothing_to_run(ctx: Context) -> None:
    runtime = idle_runtime(ctx)
    assert next_batch(runtime) == []
    assert not can_start_run(runtime)
    assert stage_batch(runtime, ctx, run_id=new_run_id()) is None
    operation_only = idle_runtime(ctx, make_input(K.OPERATION))
    assert stage_batch(operation_only, ctx, run_id=new_run_id()) is None


@pytest.mark.parametrize("ending", ["stop", "destroy"])
def test_no_run_outside_runnable_phases(ending: str, ctx: Context) -> None:
    runtime, _ = stage(idle_runtime(ctx, make_input(), make_input()), ctx)
    assert not can_start_run(runtime)
    assert stage_batch(runtime, ctx, run_id=new_run_id()) is None
    ended = command(runtime, ending, ctx)
    assert not can_start_run(ended)
    assert stage_batch(ended, ctx, run_id=new_run_id()) is None


# --- staging ---------------------------------------------------------------------------------


def test_stage_commits_staged_rows_and_a_running_runtime(ctx: Context) -> None:
    items = [make_input(K.PEER_MESSAGE), make_input(K.PEER_MESSAGE), make_input(K.PROMPT)]
    runtime = idle_runtime(ctx, *items)
    assert runtime.signal is Signal.WAKE
    decision, run_id = staged(runtime, ctx)
    after = decision.runtime
    assert after.phase is RuntimePhase.RUNNING
    assert after.pre_run_phase is RuntimePhase.IDLE
    assert after.current_run is not None
    assert (after.current_run.run_id, after.current_run.input_ids) == (
        run_id,
        tuple(ids(items[:2])),
    )
    assert after.signal is Signal.NONE
    row = put_runtime(decision)
    assert (row.expected_version, row.row.version) == (runtime.version, runtime.version + 1)
    assert (row.row.phase, row.row.current_run_id) == (RuntimePhase.RUNNING, run_id)
    records = put_inputs(decision)
    assert [r.input_id for r in records] == ids(items[:2])
    for record in records:
        assert (record.phase, record.attempt_count, record.last_run_id) == (
            InputPhase.STAGED,
            1,
            run_id,
        )
        assert record.history[-1].from_phase is InputPhase.QUEUED
    assert event_codes(decision) == [
        "run.started",
        "input.staged",
        "input.staged",
        "runtime.state_changed",
    ]
    assert after.lane(Lane.QUEUE) == [after.inputs[items[2].header.id]]


@pytest.mark.parametrize("start", [RuntimePhase.ATTACHED, RuntimePhase.RETIRED])
def test_the_run_remembers_where_it_started(start: RuntimePhase, ctx: Context) -> None:
    runtime = idle_runtime(ctx, make_input())
    if start is RuntimePhase.RETIRED:
        runtime = command(runtime, "retire", ctx)
    else:
        runtime = dataclasses.replace(runtime, phase=start)
    decision, run_id = staged(runtime, ctx)
    assert decision.runtime.pre_run_phase is start
    # attached is process-local: the row stores idle
    stored = put_runtime(decision).row.pre_run_phase
    assert stored is (RuntimePhase.IDLE if start is RuntimePhase.ATTACHED else start)
    assert committed(decision.runtime, ctx, run_id).runtime.phase is start


# --- the boundary commit ---------------------------------------------------------------------


def test_commit_boundary(ctx: Context) -> None:
    items = [make_input(K.FLOW_STEP), make_input(K.FLOW_STEP)]
    runtime = idle_runtime(ctx, *items)
    running, run_id = stage(runtime, ctx)
    decision = committed(running, ctx, run_id)
    digest = conversation_digest(SESSION)
    receipts = [m.receipt for m in decision.mutations if isinstance(m, PutReceipt)]
    assert receipts == [
        BoundaryReceipt(
            runtime_id=runtime.runtime_id,
            run_id=run_id,
            sequence=1,
            contributing_input_ids=tuple(ids(items)),
            conversation_digest=digest,
            message_count=2,
            committed_at=ctx.now,
        )
    ]
    snapshots = [m.snapshot for m in decision.mutations if isinstance(m, PutSnapshot)]
    assert len(snapshots) == 1
    assert (snapshots[0].run_id, snapshots[0].digest, snapshots[0].message_count) == (
        run_id,
        digest,
        2,
    )
    assert dict(snapshots[0].body) == SESSION
    assert [type(m).__name__ for m in decision.mutations] == [
        "PutRuntime",
        "PutSnapshot",
        "PutReceipt",
        "PutInput",
        "PutInput",
    ]
    chain = [
        InputPhase.QUEUED,
        InputPhase.STAGED,
        InputPhase.APPLIED,
        InputPhase.APPLIED_PENDING_CONSUMPTION,
        InputPhase.CONSUMED,
    ]
    for record in put_inputs(decision):
        assert record.phase is InputPhase.CONSUMED
        assert [h.to_phase for h in record.history] == chain
        assert [h.from_phase for h in record.history] == [None, *chain[:-1]]
        assert record.boundary_sequence == 1
    after = decision.runtime
    assert (after.phase, after.current_run, after.pre_run_phase) == (RuntimePhase.IDLE, None, None)
    assert put_runtime(decision).expected_version == running.version
    assert after.version == running.version + 1
    assert event_codes(decision) == [
        "input.applied",
        "input.consumed",
        "input.applied",
        "input.consumed",
        "run.completed",
        "runtime.state_changed",
    ]


def test_a_stale_run_id_is_not_current(ctx: Context) -> None:
    running, run_id = stage(idle_runtime(ctx, make_input(), make_input()), ctx)
    stranger = new_run_id()
    attempts: list[Callable[[Runtime, UUID], Decision]] = [
        lambda r, i: commit_boundary(r, ctx, run_id=i, session=SESSION, message_count=1),
        lambda r, i: fail_run(r, ctx, run_id=i, error="x"),
    ]
    for attempt in attempts:
        with pytest.raises(RunNotCurrent) as exc:
            attempt(running, stranger)
        assert (exc.value.runtime_id, exc.value.run_id) == (running.runtime_id, stranger)
        done = committed(running, ctx, run_id).runtime
        with pytest.raises(RunNotCurrent):
            attempt(done, run_id)
        next_run, _ = stage(done, ctx)
        with pytest.raises(RunNotCurrent):
            attempt(next_run, run_id)


# --- failures --------------------------------------------------------------------------------


def test_a_failed_input_goes_behind_the_backlog(ctx: Context) -> None:
    first, *backlog = [make_input(K.PROMPT) for _ in range(3)]
    runtime, run_id = stage(idle_runtime(ctx, first, *backlog), ctx)
    decision = failed(runtime, ctx, run_id)
    after = decision.runtime
    record = after.inputs[first.header.id]
    assert (record.phase, record.attempt_count) == (InputPhase.QUEUED, 1)
    assert record.admission_seq > max(r.admission_seq for r in runtime.inputs.values())
    assert after.next_admission_seq == record.admission_seq + 1
    assert [r.input_id for r in after.lane(Lane.QUEUE)] == [*ids(backlog), first.header.id]
    assert (after.phase, after.current_run, after.signal) == (RuntimePhase.IDLE, None, Signal.WAKE)
    assert event_codes(decision) == ["run.failed", "input.queued", "runtime.state_changed"]
    assert decision.events[0].data == {"run_id": str(run_id), "error": "executor crashed"}


def test_three_failed_runs_abandon_the_input(ctx: Context) -> None:
    item = make_input(K.PROMPT)
    runtime = idle_runtime(ctx, item)
    for attempt in range(1, MAX_STAGE_ATTEMPTS + 1):
        runtime, run_id = stage(runtime, ctx)
        assert runtime.inputs[item.header.id].attempt_count == attempt
        decision = failed(runtime, ctx, run_id)
        runtime = decision.runtime
        record = runtime.inputs[item.header.id]
        if attempt < MAX_STAGE_ATTEMPTS:
            assert record.phase is InputPhase.QUEUED
    assert MAX_STAGE_ATTEMPTS == 3
    assert record.phase is InputPhase.ABANDONED
    assert record.abandon_reason == AttemptsExhausted(attempts=3)
    assert record.history[-1].reason == "max_attempts_exhausted"
    assert "input.abandoned" in event_codes(decision)
    assert runtime.signal is Signal.NONE
    assert stage_batch(runtime, ctx, run_id=new_run_id()) is None


def test_a_batch_fails_input_by_input(ctx: Context) -> None:
    veteran, newcomer = make_input(K.PEER_MESSAGE), make_input(K.PEER_MESSAGE)
    runtime = idle_runtime(ctx, veteran)
    for _ in range(MAX_STAGE_ATTEMPTS - 1):
        runtime, run_id = stage(runtime, ctx)
        runtime = failed(runtime, ctx, run_id).runtime
    runtime = admit_all(runtime, [newcomer], ctx)
    runtime, run_id = stage(runtime, ctx)
    assert runtime.current_run is not None
    assert runtime.current_run.input_ids == (veteran.header.id, newcomer.header.id)
    after = failed(runtime, ctx, run_id).runtime
    assert after.inputs[veteran.header.id].phase is InputPhase.ABANDONED
    assert after.inputs[newcomer.header.id].phase is InputPhase.QUEUED


# --- digest and archive ----------------------------------------------------------------------


def test_conversation_digest_is_stable_for_key_order() -> None:
    one = {"a": 1, "b": {"x": [1, 2], "y": "é"}}
    two = {"b": {"y": "é", "x": [1, 2]}, "a": 1}
    assert conversation_digest(one) == conversation_digest(two)
    assert re.fullmatch(r"sha256:[0-9a-f]{64}", conversation_digest(one))
    assert conversation_digest(one) != conversation_digest({"a": 1, "b": {"x": [2, 1]}})


def test_archive_terminal_keeps_live_inputs(ctx: Context) -> None:
    live = make_input(K.PROMPT)
    runtime = idle_runtime(ctx, make_input(K.OPERATION), live)
    image = runtime_image(runtime)
    archived = archive_terminal(runtime)
    assert_unchanged(runtime, image)
    assert list(archived.inputs) == [live.header.id]
    assert archived.version == runtime.version
    assert archive_terminal(archived) is archived
