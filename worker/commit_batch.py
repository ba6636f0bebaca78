"""A group commit's decisions, each made on the state the previous ones produced.

Two admission rules need I/O, so they are applied here around the pure core rather than in it:

- An input that refers to a stored image (``source: blob``) is admitted only if that blob exists
  now. Otherwise the input would be accepted and then fail every run for a blob that was never
  there. The lookup is made only for an input the core would admit (a duplicate or a refused
  input costs no lookup) and a blob put by an earlier decision of this same batch counts as
  present. A blob store that cannot answer raises its transient ``StoreUnavailable``: an outage
  must requeue the message, not reject it.
- A command may not create a runtime that no message has created; only ``destroy``, and only
  when the driver is told so (``destroy_unknown_runtimes``), may tombstone an unknown id.
"""

from __future__ import annotations

import asyncio
from contextlib import AsyncExitStack
from typing import TYPE_CHECKING
from uuid import UUID

from schemas import (
    Accepted,
    AnyCommand,
    AnyInput,
    BlobImageBlock,
    CommandCompleted,
    ImageInvalid,
    RejectReason,
)
from schemas.validation import content_blocks
from worker.core import (
    CommandRefused,
    Context,
    Decision,
    InputRejected,
    Runtime,
    accept_input,
    apply_command,
    reject_command,
    reject_input,
)
from worker.core.commands import UnknownRuntimes

if TYPE_CHECKING:
    from worker.driver import RuntimeDriver


class CommitBatch:
    """Decisions for one transaction, each made on the state the previous ones produced."""

    def __init__(self, driver: RuntimeDriver, locks: AsyncExitStack) -> None:
        self._driver = driver
        self._locks = locks
        self._held: set[str] = set()
        self._working: dict[str, Runtime] = {}
        self.decisions: list[Decision] = []

    async def _runtime(self, runtime_id: str) -> Runtime:
        if runtime_id not in self._held:
            await self._locks.enter_async_context(self._driver.lock(runtime_id))
            self._held.add(runtime_id)
        if runtime_id not in self._working:
            self._working[runtime_id] = await self._driver.load_locked(runtime_id)
        return self._working[runtime_id]

    def _add(self, decision: Decision) -> Decision:
        self._working[decision.runtime_id] = decision.runtime
        self.decisions.append(decision)
        return decision

    async def accept_input(
        self,
        runtime_id: str,
        item: AnyInput,
        *,
        message_bytes: int | None = None,
        look_up_stored: bool = True,
    ) -> Decision:
        """Admit, deduplicate, or reject ``item`` (a rejection is a decision too: its event).

        ``look_up_stored=False`` skips the store lookup of an archived input with the same id
        or idempotency key, leaving a duplicate to the store's unique constraints: the whole
        commit then fails with DuplicateRow and the caller retries it with lookups. The group
        committer does so for first deliveries, which are almost never duplicates.
        """
        runtime = await self._runtime(runtime_id)
        ctx = self._driver.context()
        stored = None
        if look_up_stored and item.header.id not in runtime.inputs and runtime.version > 0:
            stored = await self._driver.store.find_input(
                runtime_id, item.header.id, item.header.idempotency_key
            )
        try:
            decision = accept_input(
                runtime,
                item,
                ctx,
                limits=self._driver.limits,
                message_bytes=message_bytes,
                stored_match=stored,
            )
        except InputRejected as exc:
            return self._add(self._rejected(runtime, ctx, item, exc.reason))
        if isinstance(decision.outcome, Accepted):
            missing = await self._missing_blob(item)
            if missing is not None:
                detail = f"image blob {missing} does not exist in the blob store"
                decision = self._rejected(runtime, ctx, item, ImageInvalid(detail=detail))
        return self._add(decision)

    @staticmethod
    def _rejected(runtime: Runtime, ctx: Context, item: AnyInput, reason: RejectReason) -> Decision:
        return reject_input(
            runtime,
            ctx,
            input_id=item.header.id,
            reason=reason,
            correlation_id=item.header.correlation_id,
        )

    async def _missing_blob(self, item: AnyInput) -> str | None:
        """The first blob ``item`` refers to that the blob store does not hold, if any."""
        referenced = dict.fromkeys(
            b.blob_id for b in content_blocks(item) if isinstance(b, BlobImageBlock)
        )
        pending = {w.blob_id for d in self.decisions for w in d.blobs}
        wanted = [blob_id for blob_id in referenced if blob_id not in pending]
        if not wanted:
            return None
        blobs = self._driver.blobs
        found = await asyncio.gather(*(blobs.exists(blob_id) for blob_id in wanted))
        return next((b for b, present in zip(wanted, found, strict=True) if not present), None)

    async def apply_command(
        self, runtime_id: str, command: AnyCommand, *, look_up_stored: bool = True
    ) -> Decision:
        """Apply, repeat the stored answer of, or refuse ``command`` (see ``accept_input``
        for ``look_up_stored``; a repeated command id trips the processed-commands key)."""
        runtime = await self._runtime(runtime_id)
        ctx = self._driver.context()
        stored = self._decided_here(command.command_id)
        if stored is None and look_up_stored and runtime.version > 0:
            stored = await self._driver.store.find_command(runtime_id, command.command_id)
        try:
            decision = apply_command(
                runtime, command, ctx, stored_outcome=stored, unknown_runtimes=self._unknown
            )
        except CommandRefused as exc:
            decision = reject_command(
                runtime, ctx, command_id=command.command_id, reason=exc.reason
            )
        return self._add(decision)

    @property
    def _unknown(self) -> UnknownRuntimes:
        if self._driver.destroy_unknown_runtimes:
            return UnknownRuntimes.DESTROY_ONLY
        return UnknownRuntimes.REFUSE

    def _decided_here(self, command_id: UUID) -> CommandCompleted | None:
        for decision in self.decisions:
            outcome = decision.outcome
            if isinstance(outcome, CommandCompleted) and outcome.command_id == command_id:
                return outcome
        return None

    async def refuse(
        self, runtime_id: str, reason: RejectReason, *, subject: UUID | None, command: bool
    ) -> Decision:
        """A rejection decided by the shell (e.g. a message whose body does not parse)."""
        runtime = await self._runtime(runtime_id)
        ctx = self._driver.context()
        if command:
            return self._add(reject_command(runtime, ctx, command_id=subject, reason=reason))
        return self._add(reject_input(runtime, ctx, input_id=subject, reason=reason))

    async def commit(self) -> None:
        if self.decisions:
            await self._driver.commit_locked(self.decisions)
