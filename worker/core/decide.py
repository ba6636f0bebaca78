"""The shell's entry points: total functions that always return a decision.

:func:`~worker.core.admission.accept_input` and :func:`~worker.core.commands.apply_command` state
their rules by raising :class:`InputRejected` / :class:`CommandRefused`. The shell never asks
twice: it calls :func:`decide_input` and :func:`decide_command`, which turn a refusal into its
rejection decision (an event and a ``rejected`` outcome, no row) here, in the core.
"""

from __future__ import annotations

from uuid import UUID

from schemas import DEFAULT_LIMITS, AnyCommand, AnyInput, CommandCompleted, Limits
from worker.core.admission import accept_input
from worker.core.commands import UnknownRuntimes, apply_command
from worker.core.errors import CommandRefused, InputRejected
from worker.core.model import Context, Decision, Runtime
from worker.core.rejections import reject_command, reject_input


def decide_input(
    runtime: Runtime,
    item: AnyInput,
    ctx: Context,
    *,
    limits: Limits = DEFAULT_LIMITS,
    message_bytes: int | None = None,
    stored_match: UUID | None = None,
) -> Decision:
    """Admit, deduplicate, or reject ``item``."""
    try:
        return accept_input(
            runtime, item, ctx, limits=limits, message_bytes=message_bytes,
            stored_match=stored_match,
        )
    except InputRejected as exc:
        return reject_input(
            runtime, ctx, input_id=item.header.id, reason=exc.reason,
            correlation_id=item.header.correlation_id,
        )


def decide_command(
    runtime: Runtime,
    command: AnyCommand,
    ctx: Context,
    *,
    stored_outcome: CommandCompleted | None = None,
    unknown_runtimes: UnknownRuntimes = UnknownRuntimes.CREATE,
) -> Decision:
    """Apply, repeat the stored answer of, or refuse ``command``."""
    try:
        return apply_command(
            runtime, command, ctx, stored_outcome=stored_outcome,
            unknown_runtimes=unknown_runtimes,
        )
    except CommandRefused as exc:
        return reject_command(runtime, ctx, command_id=command.command_id, reason=exc.reason)
