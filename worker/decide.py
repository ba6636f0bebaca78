"""One group commit: decide every delivery of a batch, then commit them in one transaction.

Each delivery is decided on the state the previous ones produced (a
:class:`~worker.commit_batch.CommitBatch`). Only a lone or redelivered message pays for the
store's dedupe lookups; in a batch a duplicate trips a unique key, the commit fails, and the
committer retries the batch one message at a time, with lookups.
"""

from __future__ import annotations

from uuid import UUID

from worker.commit_batch import CommitBatch
from worker.core import Decision
from worker.driver import RuntimeDriver
from worker.intake import Delivery
from worker.metrics import Metrics
from worker.parsing import ParsedCommand, ParsedInput
from worker.policy import Settlement, settlement_for


async def decide_batch(
    driver: RuntimeDriver, batch: list[Delivery], metrics: Metrics
) -> list[tuple[Delivery, Settlement]]:
    """Decide and commit; raises when the commit fails (nothing was swapped in then)."""
    look_up = len(batch) == 1
    async with driver.batch() as commit:
        decided = [(d, await _decide(commit, d, look_up)) for d in batch]
        with metrics.commit_seconds.time():
            await commit.commit()
    return [(d, settlement_for(d.parsed, decision)) for d, decision in decided]


async def _decide(commit: CommitBatch, delivery: Delivery, look_up: bool) -> Decision | None:
    parsed = delivery.parsed
    look_up = look_up or delivery.message.redelivered is True
    if isinstance(parsed, ParsedInput):
        return await commit.accept_input(
            parsed.runtime_id, parsed.item, message_bytes=parsed.size, look_up_stored=look_up
        )
    if isinstance(parsed, ParsedCommand):
        return await commit.apply_command(
            parsed.runtime_id, parsed.command, look_up_stored=look_up
        )
    if parsed.runtime_id is None:
        return None  # nothing names a runtime: dead-letter only
    return await commit.refuse(
        parsed.runtime_id, parsed.reason, subject=_uuid(delivery.message.message_id),
        command=parsed.is_command,
    )


def _uuid(value: str | None) -> UUID | None:
    try:
        return UUID(value) if value else None
    except ValueError:
        return None
