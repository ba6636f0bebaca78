"""Lifecycle commands (DOMAIN.md §5, §11): every command from every phase, then the contracts.

The starting runtimes come from :func:`populated_runtime`: where the phase allows it they hold
one steer continuation and two prompts (the continuation is staged when running), so every
report count is something other than zero, and one consumed operation that no command may
touch.
"""

from __future__ import annotations

from collections import Counter
from typing import Any
from uuid import UUID

import pytest

from schemas import (
    AbandonInput,
    AnyCommand,
    CommandCompleted,
    CommandReport,
    IllegalCommand,
    InputPhase,
    InputRejected,
    NotReady,
    Rejected,
    RejectReason,
    Retire,
    RuntimeDestroyed,
    RuntimePhase,
    SimpleAbandonReason,
)
from tests.unit.core_factories import (
    PHASE_LABELS,
    admit,
    assert_unchanged,
    command,
    event_codes,
    finish,
    idle_runtime,
    make_command,
    make_context,
    make_input,
    new_input_id,
    new_runtime_id,
    phases,
    populated_runtime,
    put_inputs,
    put_runtime,
    runtime_image,
    stage,
)
from worker.core import (
    CommandRefused,
    Context,
    Decision,
    RecordCommand,
    RunNotCurrent,
    Runtime,
    accept_input,
    apply_command,
    commit_boundary,
    fail_run,
    reject_command,
    stage_batch,
)

pytestmark = pytest.mark.unit

_R = RuntimePhase

# The phase a starting point decides in: a runtime no message has named comes into being
# (→ idle) with this very command.
EFFECTIVE_PHASE = {
    "fresh": _R.IDLE,
    "initializing": _R.INITIALIZING,
    "idle": _R.IDLE,
    "attached": _R.ATTACHED,
    "running": _R.RUNNING,
    "running_retiring": _R.RUNNING,
    "retired": _R.RETIRED,
    "stopped": _R.STOPPED,
    "destroyed": _R.DESTROYED,
}

# Command variants: command type and fields; ``target`` is the phase of the input that
# abandon_input names (none given: an id the runtime does not know).
VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {
    "retire": ("retire", {}),
    "retire_abandon_pending": ("retire", {"abandon_pending": True}),
    "reset": ("reset", {}),
    "stop": ("stop", {}),
    "resume": ("resume", {}),
    "destroy": ("destroy", {}),
    "recycle": ("recycle", {}),
    "abandon_pending": ("abandon_pending", {}),
    "abandon_queued_input": ("abandon_input", {"target": InputPhase.QUEUED}),
    "abandon_staged_input": ("abandon_input", {"target": InputPhase.STAGED}),
    "abandon_unknown_input": ("abandon_input", {}),
    "cancel_run": ("cancel_run", {}),
}


@pytest.fixture
def ctx() -> Context:
    return make_context()


def build_command(variant: str, runtime: Runtime) -> AnyCommand:
    command_type, fields = VARIANTS[variant]
    fields = dict(fields)
    target = fields.pop("target", None)
    if target is not None:
        named = [i for i, r in runtime.inputs.items() if r.phase is target]
        if named:
            fields["input_id"] = named[0]
    return make_command(command_type, **fields)


def expected_effect(
    label: str, runtime: Runtime, cmd: AnyCommand
) -> tuple[RuntimePhase, CommandReport] | None:
    """What DOMAIN.md §5 says ``cmd`` does from this starting point; ``None``: refused."""
    phase = EFFECTIVE_PHASE[label]
    count = Counter(r.phase for r in runtime.live_inputs())
    live, queued, staged = sum(count.values()), count[InputPhase.QUEUED], count[InputPhase.STAGED]
    alive = phase is not _R.DESTROYED
    match cmd.command_type:
        case "retire" if phase in (_R.IDLE, _R.ATTACHED, _R.RUNNING, _R.STOPPED, _R.RETIRED):
            dropped = queued if isinstance(cmd, Retire) and cmd.abandon_pending else 0
            report = CommandReport(inputs_abandoned=dropped, inputs_pending_drain=live - dropped)
            return (_R.RUNNING if phase is _R.RUNNING else _R.RETIRED), report
        case "reset" if phase in (_R.INITIALIZING, _R.IDLE, _R.ATTACHED, _R.RETIRED):
            return _R.IDLE, CommandReport(inputs_abandoned=live)
        case "stop" if alive:
            return _R.STOPPED, CommandReport(inputs_abandoned=live)
        case "resume" if phase is _R.STOPPED:
            return _R.IDLE, CommandReport()
        case "destroy" if alive:
            return _R.DESTROYED, CommandReport(inputs_abandoned=live)
        case "recycle" if phase in (_R.IDLE, _R.ATTACHED, _R.RETIRED):
            return phase, CommandReport(inputs_transferred=live)
        case "abandon_pending" if alive:
            return phase, CommandReport(inputs_abandoned=queued)
        case "abandon_input" if alive:
            assert isinstance(cmd, AbandonInput)
            target = runtime.inputs.get(cmd.input_id)
            hit = target is not None and target.phase is InputPhase.QUEUED
            return phase, CommandReport(inputs_abandoned=int(hit))
        case "cancel_run" if phase is _R.RUNNING:
            return runtime.pre_run_phase or _R.IDLE, CommandReport(inputs_abandoned=staged)
    return None


def refused(runtime: Runtime, cmd: AnyCommand, ctx: Context) -> RejectReason:
    image = runtime_image(runtime)
    with pytest.raises(CommandRefused) as exc:
        apply_command(runtime, cmd, ctx)
    assert_unchanged(runtime, image)
    return exc.value.reason


def decide(runtime: Runtime, cmd: AnyCommand, ctx: Context, **kwargs: Any) -> Decision:
    image = runtime_image(runtime)
    decision = apply_command(runtime, cmd, ctx, **kwargs)
    assert_unchanged(runtime, image)
    return decision


def changed_inputs(before: Runtime, decision: Decision) -> list[UUID]:
    old = phases(before)
    return [r.input_id for r in put_inputs(decision) if old.get(r.input_id) is not r.phase]


@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.parametrize("label", PHASE_LABELS)
def test_every_command_from_every_phase(label: str, variant: str, ctx: Context) -> None:
    runtime = populated_runtime(label, ctx)
    cmd = build_command(variant, runtime)
    expected = expected_effect(label, runtime, cmd)
    if expected is None:
        reason = refused(runtime, cmd, ctx)
        if label == "destroyed":
            assert reason == RuntimeDestroyed()
        else:
            assert isinstance(reason, IllegalCommand)
            assert (reason.command_type, reason.state) == (
                cmd.command_type,
                EFFECTIVE_PHASE[label],
            )
        return
    phase, report = expected
    decision = decide(runtime, cmd, ctx)
    assert decision.outcome == CommandCompleted(
        command_id=cmd.command_id, command_type=cmd.command_type, state=phase, report=report
    )
    assert decision.runtime.phase is phase
    changed = changed_inputs(runtime, decision)
    assert len(changed) == (report.inputs_abandoned or 0)
    assert len(put_inputs(decision)) == len(changed)
    assert all(r.phase is InputPhase.ABANDONED for r in put_inputs(decision))
    assert Counter(event_codes(decision))["input.abandoned"] == len(changed)
    assert event_codes(decision)[-1] == "command.completed"
    row = put_runtime(decision)
    assert row.expected_version == runtime.version
    assert row.row.version == decision.runtime.version == runtime.version + 1
    assert decision.mutations[-1] == RecordCommand(
        cmd.command_id, cmd.command_type, decision.outcome, ctx.now
    )
    assert decision.reload_after_commit is (cmd.command_type == "recycle")
    assert (decision.runtime.current_run is None) is (phase is not _R.RUNNING)


# --- retire ----------------------------------------------------------------------------------


def test_retire_drains_queued_work_and_refuses_new_input(ctx: Context) -> None:
    work = [make_input(), make_input()]
    runtime = command(idle_runtime(ctx, *work), "retire", ctx)
    assert runtime.phase is _R.RETIRED
    with pytest.raises(InputRejected) as exc:
        accept_input(runtime, make_input(), ctx)
    assert exc.value.reason == NotReady(state=_R.RETIRED)
    for item in work:
        runtime, run_id = stage(runtime, ctx)
        assert runtime.current_run is not None
        assert runtime.current_run.input_ids == (item.header.id,)
        runtime = finish(runtime, run_id, ctx)
        assert runtime.phase is _R.RETIRED
        assert runtime.inputs[item.header.id].phase is InputPhase.CONSUMED
    assert stage_batch(runtime, ctx, run_id=make_command("stop").command_id) is None


def test_retire_with_abandon_pending(ctx: Context) -> None:
    runtime = idle_runtime(ctx, make_input(), make_input())
    decision = decide(runtime, make_command("retire", abandon_pending=True), ctx)
    assert decision.outcome is not None
    for record in decision.runtime.inputs.values():
        assert record.phase is InputPhase.ABANDONED
        assert record.abandon_reason == SimpleAbandonReason(reason="retired")
    assert stage_batch(decision.runtime, ctx, run_id=make_command("stop").command_id) is None


@pytest.mark.parametrize("ending", ["commit", "fail", "cancel"])
def test_retire_while_running_applies_when_the_run_ends(ending: str, ctx: Context) -> None:
    runtime, run_id = stage(idle_runtime(ctx, make_input(), make_input()), ctx)
    retiring = decide(runtime, make_command("retire"), ctx).runtime
    assert (retiring.phase, retiring.pre_run_phase) == (_R.RUNNING, _R.RETIRED)
    assert retiring.current_run == runtime.current_run
    if ending == "commit":
        after = finish(retiring, run_id, ctx)
    elif ending == "fail":
        after = fail_run(retiring, ctx, run_id=run_id, error="boom").runtime
    else:
        after = command(retiring, "cancel_run", ctx)
    assert (after.phase, after.pre_run_phase, after.current_run) == (_R.RETIRED, None, None)


def test_reset_refused_while_running(ctx: Context) -> None:
    runtime, _ = stage(idle_runtime(ctx, make_input()), ctx)
    reason = refused(runtime, make_command("reset"), ctx)
    assert isinstance(reason, IllegalCommand)
    assert reason.state is _R.RUNNING


def test_reset_after_retire_accepts_again(ctx: Context) -> None:
    runtime = command(idle_runtime(ctx, make_input()), "retire", ctx)
    decision = decide(runtime, make_command("reset"), ctx)
    assert decision.runtime.phase is _R.IDLE
    assert decision.outcome is not None
    assert [r.abandon_reason for r in put_inputs(decision)] == [SimpleAbandonReason(reason="reset")]
    assert accept_input(decision.runtime, make_input(), ctx).mutations


# --- destroy, stop, resume -------------------------------------------------------------------


def test_destroy_abandons_all_and_is_terminal(ctx: Context) -> None:
    runtime, _ = stage(idle_runtime(ctx, make_input(), make_input()), ctx)
    decision = decide(runtime, make_command("destroy"), ctx)
    destroyed = decision.runtime
    assert destroyed.phase is _R.DESTROYED
    reasons = {r.abandon_reason for r in destroyed.inputs.values()}
    assert reasons == {SimpleAbandonReason(reason="destroyed")}
    assert "run.cancelled" in event_codes(decision)
    for variant in VARIANTS:
        assert refused(destroyed, build_command(variant, destroyed), ctx) == RuntimeDestroyed()
    with pytest.raises(InputRejected) as exc:
        accept_input(destroyed, make_input(), ctx)
    assert exc.value.reason == RuntimeDestroyed()
    assert stage_batch(destroyed, ctx, run_id=make_command("stop").command_id) is None


def test_stop_abandons_everything_and_cancels_the_run(ctx: Context) -> None:
    runtime, run_id = stage(idle_runtime(ctx, make_input(), make_input()), ctx)
    staged = [i for i, p in phases(runtime).items() if p is InputPhase.STAGED]
    assert len(staged) == 1
    decision = decide(runtime, make_command("stop"), ctx)
    stopped = decision.runtime
    assert (stopped.phase, stopped.current_run, stopped.pre_run_phase) == (_R.STOPPED, None, None)
    assert set(phases(stopped).values()) == {InputPhase.ABANDONED}
    assert {r.abandon_reason for r in stopped.inputs.values()} == {
        SimpleAbandonReason(reason="stopped")
    }
    cancelled = [e for e in decision.events if e.code.value == "run.cancelled"]
    assert [e.data for e in cancelled] == [{"run_id": str(run_id)}]
    session = {"m": 1}
    with pytest.raises(RunNotCurrent):
        commit_boundary(stopped, ctx, run_id=run_id, session=session, message_count=1)
    with pytest.raises(RunNotCurrent):
        fail_run(stopped, ctx, run_id=run_id, error="late")


def test_resume_from_stopped(ctx: Context) -> None:
    runtime = command(idle_runtime(ctx, make_input()), "stop", ctx)
    with pytest.raises(InputRejected):
        accept_input(runtime, make_input(), ctx)
    decision = decide(runtime, make_command("resume"), ctx)
    assert decision.runtime.phase is _R.IDLE
    assert put_inputs(decision) == []
    assert accept_input(decision.runtime, make_input(), ctx).mutations


# --- recycle, abandon, cancel ----------------------------------------------------------------


def test_recycle_reports_transferred_inputs(ctx: Context) -> None:
    runtime = idle_runtime(ctx, make_input(), make_input(), make_input())
    decision = decide(runtime, make_command("recycle"), ctx)
    assert decision.reload_after_commit
    assert isinstance(decision.outcome, CommandCompleted)
    assert decision.outcome.report == CommandReport(inputs_transferred=3)
    assert phases(decision.runtime) == phases(runtime)


def test_abandon_input(ctx: Context) -> None:
    queued, other = make_input(), make_input()
    runtime, _ = stage(idle_runtime(ctx, make_input(), queued, other), ctx)
    staged_id = runtime.current_run.input_ids[0] if runtime.current_run else None
    assert staged_id is not None
    for target, hits in [(queued.header.id, 1), (staged_id, 0), (new_input_id(), 0)]:
        decision = decide(runtime, make_command("abandon_input", input_id=target), ctx)
        assert isinstance(decision.outcome, CommandCompleted)
        assert decision.outcome.report == CommandReport(inputs_abandoned=hits)
        assert changed_inputs(runtime, decision) == ([target] if hits else [])
    assert runtime.inputs[other.header.id].phase is InputPhase.QUEUED


def test_cancel_run(ctx: Context) -> None:
    first, second = make_input(), make_input()
    runtime, run_id = stage(idle_runtime(ctx, first, second), ctx)
    decision = decide(runtime, make_command("cancel_run"), ctx)
    after = decision.runtime
    assert (after.phase, after.current_run) == (_R.IDLE, None)
    record = after.inputs[first.header.id]
    assert record.phase is InputPhase.ABANDONED
    assert record.abandon_reason == SimpleAbandonReason(reason="cancelled")
    assert record.history[-1].from_phase is InputPhase.STAGED
    assert "run.cancelled" in event_codes(decision)
    assert after.inputs[second.header.id] == runtime.inputs[second.header.id]
    with pytest.raises(RunNotCurrent):
        fail_run(after, ctx, run_id=run_id, error="late")


# --- redelivery and creation -----------------------------------------------------------------


def test_stored_outcome_answers_again_and_changes_nothing(ctx: Context) -> None:
    runtime = idle_runtime(ctx, make_input())
    cmd = make_command("retire")
    first = decide(runtime, cmd, ctx)
    assert isinstance(first.outcome, CommandCompleted)
    retired = first.runtime
    for later in (retired, command(retired, "destroy", ctx)):
        again = decide(later, cmd, ctx, stored_outcome=first.outcome)
        assert again.outcome == first.outcome.model_copy(update={"deduplicated": True})
        assert (again.mutations, again.events, again.runtime) == ((), (), later)


def test_first_command_creates_the_runtime(ctx: Context) -> None:
    runtime = Runtime(new_runtime_id())
    decision = decide(runtime, make_command("stop"), ctx)
    changes = [e.data for e in decision.events if e.code.value == "runtime.state_changed"]
    assert changes == [
        {"from": "initializing", "to": "idle"},
        {"from": "idle", "to": "stopped"},
    ]
    assert put_runtime(decision).expected_version == 0
    assert decision.runtime.version == 1


def test_refused_command_on_a_fresh_runtime_creates_nothing(ctx: Context) -> None:
    runtime = Runtime(new_runtime_id())
    reason = refused(runtime, make_command("resume"), ctx)
    assert isinstance(reason, IllegalCommand)
    assert admit(runtime, make_input(), ctx).version == 1


def test_reject_command_leaves_a_trace_and_changes_nothing(ctx: Context) -> None:
    runtime = idle_runtime(ctx, make_input())
    cmd = make_command("resume")
    reason = refused(runtime, cmd, ctx)
    decision = reject_command(runtime, ctx, command_id=cmd.command_id, reason=reason)
    assert (decision.runtime, decision.mutations) == (runtime, ())
    assert decision.outcome == Rejected(reason=reason)
    assert event_codes(decision) == ["command.rejected"]
    assert decision.events[0].data == {
        "command_id": str(cmd.command_id),
        "reason": reason.model_dump(mode="json"),
    }
    assert decision.events[0].causation_id == cmd.command_id
