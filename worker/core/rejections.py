"""Rejections: an input or command refused for good still leaves a trace on the event stream.

A rejection writes no row, only its outbox event (which has no foreign key to the runtimes
table). So a message refused for a runtime that does not exist, whatever the reason, leaves that
runtime not existing: junk addressed to made-up ids costs an event each, never a runtime row.
"""

from __future__ import annotations

from uuid import UUID

from schemas import EventCode, Rejected, RejectReason
from worker.core.model import Context, Decision, Runtime
from worker.core.records import event


def reject_input(
    runtime: Runtime,
    ctx: Context,
    *,
    input_id: UUID | None,
    reason: RejectReason,
    correlation_id: str | None = None,
) -> Decision:
    """An ``input.rejected`` event and a ``rejected`` outcome; no row changes."""
    return _rejection(
        runtime, ctx, EventCode.INPUT_REJECTED, "input_id", input_id, reason, correlation_id
    )


def reject_command(
    runtime: Runtime, ctx: Context, *, command_id: UUID | None, reason: RejectReason
) -> Decision:
    """A ``command.rejected`` event and a ``rejected`` outcome; no row changes.

    Nothing is recorded under the command id, so the same command replayed from the
    dead-letter queue once its cause is fixed is decided afresh.
    """
    return _rejection(
        runtime, ctx, EventCode.COMMAND_REJECTED, "command_id", command_id, reason, None
    )


def _rejection(
    runtime: Runtime,
    ctx: Context,
    code: EventCode,
    id_field: str,
    subject: UUID | None,
    reason: RejectReason,
    correlation_id: str | None,
) -> Decision:
    data = {id_field: str(subject) if subject else None, "reason": reason.model_dump(mode="json")}
    note = event(
        ctx, runtime.runtime_id, code, data, causation_id=subject, correlation_id=correlation_id
    )
    return Decision(runtime=runtime, mutations=(), events=(note,), outcome=Rejected(reason=reason))
