"""Lifecycle commands (DOMAIN.md §5): each answers with a report or a typed refusal.

A command is legal when the runtime table has a row for (phase, command's trigger); the effect on
inputs is computed here, and every changed input, the runtime row and the command's dedupe record
are committed together.

A command cannot bring a runtime into being by default in production: anyone who can publish
could otherwise fill the store with rows for ids that never had a message (a stop, retire or
reset for a typo'd id), or plant a destroyed tombstone on an id that some future runtime will
want. What a command may do to an unknown runtime (version 0: nothing stored) is therefore a
policy the shell passes in, :class:`UnknownRuntimes`; refusing writes nothing at all.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from enum import StrEnum
from uuid import UUID

from schemas import (
    AbandonInput,
    AbandonPending,
    AbandonReason,
    AnyCommand,
    CancelRun,
    CommandCompleted,
    CommandReport,
    Destroy,
    EventCode,
    EventEnvelope,
    IllegalCommand,
    InputPhase,
    Recycle,
    Reset,
    Resume,
    Retire,
    RuntimeDestroyed,
    RuntimePhase,
    RuntimeUnknown,
    SimpleAbandonCode,
    SimpleAbandonReason,
    Stop,
)
from worker.core.admission import ensure_created
from worker.core.errors import CommandRefused
from worker.core.lifecycle import IllegalTransition, InputTrigger, RuntimeTrigger
from worker.core.model import Context, Decision, InputRecord, RecordCommand, Runtime, Signal
from worker.core.records import (
    abandon_input,
    advance,
    event,
    input_event,
    input_puts,
    runtime_put,
    state_changed,
    with_inputs,
)

TRIGGER_OF: dict[type[AnyCommand], RuntimeTrigger] = {
    Retire: RuntimeTrigger.RETIRE,
    Reset: RuntimeTrigger.RESET,
    Stop: RuntimeTrigger.STOP,
    Resume: RuntimeTrigger.RESUME,
    Destroy: RuntimeTrigger.DESTROY,
    Recycle: RuntimeTrigger.RECYCLE,
    AbandonPending: RuntimeTrigger.ABANDON,
    AbandonInput: RuntimeTrigger.ABANDON,
    CancelRun: RuntimeTrigger.CANCEL_RUN,
}


class UnknownRuntimes(StrEnum):
    """What a command may do to a runtime that no accepted message has created (version 0)."""

    CREATE = "create"
    """The command itself brings the runtime into being (``initializing`` → ``idle``) first."""
    REFUSE = "refuse"
    """Every such command is refused with ``runtime_unknown``; nothing is written."""
    DESTROY_ONLY = "destroy_only"
    """Refused as with ``REFUSE``, except ``destroy``, which tombstones the id for good."""


_EffectFn = Callable[[Runtime, AnyCommand, RuntimePhase, Context], "_Effect"]


@dataclasses.dataclass(frozen=True)
class _Effect:
    runtime: Runtime
    changed: list[InputRecord]
    report: CommandReport
    extra_events: list[EventEnvelope] = dataclasses.field(default_factory=list)
    reload_after_commit: bool = False


def apply_command(
    runtime: Runtime,
    command: AnyCommand,
    ctx: Context,
    *,
    stored_outcome: CommandCompleted | None = None,
    unknown_runtimes: UnknownRuntimes = UnknownRuntimes.CREATE,
) -> Decision:
    """Decide ``command``; raise :class:`CommandRefused` when the runtime's phase forbids it.

    ``stored_outcome`` is the outcome recorded for this command id earlier (the shell looks it
    up): a redelivered command is answered again and changes nothing. ``unknown_runtimes`` says
    whether the command may create a runtime that was never stored (the worker refuses).
    """
    if stored_outcome is not None:
        repeat = stored_outcome.model_copy(update={"deduplicated": True})
        return Decision(runtime=runtime, mutations=(), events=(), outcome=repeat)
    if runtime.version == 0 and not _may_create(unknown_runtimes, command):
        raise CommandRefused(
            RuntimeUnknown(
                command_type=command.command_type,
                detail=f"runtime {runtime.runtime_id!r} does not exist: "
                "no message for it has been accepted",
            )
        )
    current, events = ensure_created(runtime, ctx)
    trigger = TRIGGER_OF[type(command)]
    try:
        phase = advance(current, trigger)
    except IllegalTransition as exc:
        raise CommandRefused(_refusal(current, command)) from exc
    effect = _EFFECTS[type(command)](current, command, phase, ctx)
    after = effect.runtime
    rid = runtime.runtime_id
    for record in effect.changed:
        if record.phase is InputPhase.ABANDONED:
            reason = record.abandon_reason.model_dump(mode="json") if record.abandon_reason else {}
            events.append(input_event(ctx, rid, record, EventCode.INPUT_ABANDONED, reason=reason))
    events.extend(effect.extra_events)
    events.extend(state_changed(ctx, rid, current.phase, after.phase, command.command_id))
    outcome = CommandCompleted(
        command_id=command.command_id,
        command_type=command.command_type,
        state=after.phase,
        report=effect.report,
    )
    events.append(
        event(
            ctx,
            rid,
            EventCode.COMMAND_COMPLETED,
            outcome.model_dump(mode="json", exclude={"outcome_type", "deduplicated"}),
            causation_id=command.command_id,
        )
    )
    after, put_runtime = runtime_put(runtime, after, ctx)
    dedupe = RecordCommand(command.command_id, command.command_type, outcome, ctx.now)
    return Decision(
        runtime=after,
        mutations=(put_runtime, *input_puts(effect.changed), dedupe),
        events=tuple(events),
        outcome=outcome,
        reload_after_commit=effect.reload_after_commit,
    )


def _may_create(policy: UnknownRuntimes, command: AnyCommand) -> bool:
    if policy is UnknownRuntimes.CREATE:
        return True
    return policy is UnknownRuntimes.DESTROY_ONLY and isinstance(command, Destroy)


def _refusal(runtime: Runtime, command: AnyCommand) -> RuntimeDestroyed | IllegalCommand:
    if runtime.phase is RuntimePhase.DESTROYED:
        return RuntimeDestroyed()
    return IllegalCommand(
        command_type=command.command_type,
        state=runtime.phase,
        detail=f"{command.command_type} is not allowed while the runtime is {runtime.phase.value}",
    )


def _abandon_all(
    runtime: Runtime, reason: AbandonReason, ctx: Context, *, only_queued: bool = False
) -> list[InputRecord]:
    chosen = [r for r in runtime.live_inputs() if not only_queued or r.phase is InputPhase.QUEUED]
    return [abandon_input(r, reason, ctx, InputTrigger.ABANDON) for r in chosen]


def _without_run(runtime: Runtime, phase: RuntimePhase, changed: list[InputRecord]) -> Runtime:
    return with_inputs(
        runtime, changed, phase=phase, pre_run_phase=None, current_run=None, signal=Signal.NONE
    )


def _cancelled_run_events(runtime: Runtime, ctx: Context) -> list[EventEnvelope]:
    if runtime.current_run is None:
        return []
    data = {"run_id": str(runtime.current_run.run_id)}
    return [
        event(
            ctx,
            runtime.runtime_id,
            EventCode.RUN_CANCELLED,
            data,
            causation_id=runtime.current_run.run_id,
        )
    ]


def _retire(runtime: Runtime, command: AnyCommand, phase: RuntimePhase, ctx: Context) -> _Effect:
    assert isinstance(command, Retire)
    pending = len(runtime.live_inputs())
    if command.abandon_pending:
        changed = _abandon_all(
            runtime, SimpleAbandonReason(reason="retired"), ctx, only_queued=True
        )
        pending -= len(changed)
    else:
        changed = []
    if runtime.phase is RuntimePhase.RUNNING:
        after = with_inputs(runtime, changed, pre_run_phase=RuntimePhase.RETIRED)
    else:
        after = with_inputs(runtime, changed, phase=phase)
    report = CommandReport(inputs_abandoned=len(changed), inputs_pending_drain=pending)
    return _Effect(after, changed, report)


def _abandon_everything(code: SimpleAbandonCode) -> _EffectFn:
    """reset, stop and destroy: abandon every live input (staged ones too) and end any run."""

    def effect(runtime: Runtime, command: AnyCommand, phase: RuntimePhase, ctx: Context) -> _Effect:
        reason = SimpleAbandonReason(reason=code)
        changed = _abandon_all(runtime, reason, ctx)
        report = CommandReport(inputs_abandoned=len(changed))
        extra = _cancelled_run_events(runtime, ctx)
        return _Effect(_without_run(runtime, phase, changed), changed, report, extra)

    return effect


def _resume(runtime: Runtime, command: AnyCommand, phase: RuntimePhase, ctx: Context) -> _Effect:
    return _Effect(dataclasses.replace(runtime, phase=phase), [], CommandReport())


def _recycle(runtime: Runtime, command: AnyCommand, phase: RuntimePhase, ctx: Context) -> _Effect:
    report = CommandReport(inputs_transferred=len(runtime.live_inputs()))
    return _Effect(runtime, [], report, reload_after_commit=True)


def _abandon_pending(
    runtime: Runtime, command: AnyCommand, phase: RuntimePhase, ctx: Context
) -> _Effect:
    assert isinstance(command, AbandonPending)
    reason = SimpleAbandonReason(reason=command.abandon_reason)
    changed = _abandon_all(runtime, reason, ctx, only_queued=True)
    report = CommandReport(inputs_abandoned=len(changed))
    return _Effect(with_inputs(runtime, changed), changed, report)


def _abandon_one(
    runtime: Runtime, command: AnyCommand, phase: RuntimePhase, ctx: Context
) -> _Effect:
    assert isinstance(command, AbandonInput)
    target = runtime.inputs.get(command.input_id)
    if target is None or target.phase is not InputPhase.QUEUED:
        return _Effect(runtime, [], CommandReport(inputs_abandoned=0))
    reason = SimpleAbandonReason(reason=command.abandon_reason)
    changed = [abandon_input(target, reason, ctx, InputTrigger.ABANDON)]
    return _Effect(with_inputs(runtime, changed), changed, CommandReport(inputs_abandoned=1))


def _cancel_run(
    runtime: Runtime, command: AnyCommand, phase: RuntimePhase, ctx: Context
) -> _Effect:
    run = runtime.current_run
    staged_ids: tuple[UUID, ...] = run.input_ids if run else ()
    reason = SimpleAbandonReason(reason="cancelled")
    changed = [
        abandon_input(runtime.inputs[i], reason, ctx, InputTrigger.CANCEL)
        for i in staged_ids
        if runtime.inputs[i].phase is InputPhase.STAGED
    ]
    after = with_inputs(runtime, changed, phase=phase, pre_run_phase=None, current_run=None)
    report = CommandReport(inputs_abandoned=len(changed))
    return _Effect(after, changed, report, _cancelled_run_events(runtime, ctx))


_EFFECTS: dict[type[AnyCommand], _EffectFn] = {
    Retire: _retire,
    Reset: _abandon_everything("reset"),
    Stop: _abandon_everything("stopped"),
    Resume: _resume,
    Destroy: _abandon_everything("destroyed"),
    Recycle: _recycle,
    AbandonPending: _abandon_pending,
    AbandonInput: _abandon_one,
    CancelRun: _cancel_run,
}
