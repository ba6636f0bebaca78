"""Deciding one window: every item on the state the previous ones produced, in one transaction.

A delivery is admitted, applied or refused; a run step stages or ends a run. Only a lone or
redelivered message pays for the store's dedupe lookups; in a shared window a duplicate trips a
unique key, the commit fails, and the window is retried one item at a time, with lookups.

With tracing on, each decision carries the ``traceparent`` of its item's span (a delivery's
``accept``, a run step's ``stage``, ``boundary`` or ``fail``; a stage makes its run's spans
here, once it knows the inputs it takes), which the store keeps with the decision's events.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from uuid import UUID

from schemas import Accepted
from worker import tracing
from worker.core import Decision
from worker.driver import Transaction
from worker.pipeline.inbox import Delivery, Item
from worker.pipeline.parsing import ParsedCommand, ParsedInput
from worker.pipeline.steps import RunStep, StepKind


@dataclass(eq=False)
class Window:
    """The items of one transaction and, once decided, the decision of each (None: nothing to
    commit for it)."""

    items: list[Item]
    transaction: Transaction
    decisions: list[Decision | None] = field(default_factory=list)


async def decide_window(transaction: Transaction, window: list[Item]) -> list[Decision | None]:
    """The decision of each item (None: nothing to commit for it), in window order."""
    look_up = len(window) == 1
    await transaction.prefetch(i.runtime_id for i in window if i.runtime_id is not None)
    traced = tracing.active()
    decided: list[Decision | None] = []
    for item in window:
        if isinstance(item, RunStep):
            decision = await _step(transaction, item)
        else:
            decision = await _delivery(transaction, item, look_up)
        if traced and decision is not None:
            decision = _traced(transaction, item, decision)
        decided.append(decision)
    return decided


_STEP_SPANS = {StepKind.STAGE: "stage", StepKind.FINISH: "boundary", StepKind.FAIL: "fail"}


def _traced(transaction: Transaction, item: Item, decision: Decision) -> Decision:
    """``decision`` with the trace context of ``item``'s span (tracing is on)."""
    if isinstance(item, Delivery):
        if isinstance(decision.outcome, Accepted):
            tracing.admitted(item.trace, decision.outcome.input_id)
        trace = tracing.traceparent(item.trace)
    else:
        run = decision.runtime.current_run
        if item.kind is StepKind.STAGE and item.trace is None and run is not None:
            item.trace = tracing.run_staged(item.runtime_id, item.run_id, run.input_ids,
                                            item.requested_ns)
        trace = tracing.step_started(item.trace, _STEP_SPANS[item.kind], item.requested_ns)
    return decision if trace is None else transaction.traced(decision, trace)


async def _step(transaction: Transaction, step: RunStep) -> Decision | None:
    if step.kind is StepKind.STAGE:
        return await transaction.stage_run(step.runtime_id, step.run_id)
    if step.kind is StepKind.FINISH:
        assert step.result is not None
        return await transaction.finish_run(step.runtime_id, step.run_id, step.result,
                                            next_run_id=step.next_run_id)
    return await transaction.fail_run(step.runtime_id, step.run_id, step.error or "failed")


async def _delivery(transaction: Transaction, delivery: Delivery, look_up: bool) -> Decision | None:
    parsed = delivery.parsed
    look_up = look_up or delivery.message.redelivered is True
    if isinstance(parsed, ParsedInput):
        return await transaction.accept_input(
            parsed.runtime_id, parsed.item, message_bytes=parsed.size, look_up_stored=look_up
        )
    if isinstance(parsed, ParsedCommand):
        return await transaction.apply_command(
            parsed.runtime_id, parsed.command, look_up_stored=look_up
        )
    if parsed.runtime_id is None:
        return None  # nothing names a runtime: dead-letter only
    return await transaction.refuse(
        parsed.runtime_id, parsed.reason, subject=_uuid(delivery.message.message_id),
        command=parsed.is_command,
    )


def _uuid(value: str | None) -> UUID | None:
    try:
        return UUID(value) if value else None
    except ValueError:
        return None
