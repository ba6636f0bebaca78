"""The group-commit unit: decisions on many runtimes, committed in one store transaction.

A :class:`Transaction` decides deliveries and run transitions, each on the state the previous
decision on that runtime produced, and then commits all of them at once. Nothing in memory
changes before the store's COMMIT returned: the states being decided live in the transaction
(its *working* states) and enter the cache only in :meth:`Transaction.commit`.

Transactions are pipelined. While one commits, the next one is already being decided; when it
touches a runtime an open transaction is working on, it decides on that transaction's working
state and becomes its *dependent*: it commits only after its parents committed, and is aborted
(nothing written, nothing swapped in) when one of them fails. A transaction that shares no
runtime with an open one commits independently. Every runtime row is still fenced by its
version inside the store's transaction, so a stale copy can never overwrite a newer state.

Two admission rules need I/O and are applied here around the pure core: an input referring to a
stored image (``source: blob``) is admitted only if that blob exists (a blob put by a decision
this transaction depends on counts as present), and a command may not create a runtime that no
message has created (only ``destroy``, when the driver is told so).
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass
from enum import Enum
from uuid import UUID

from persistence.errors import CommitOutcomeUnknown, VersionConflict
from persistence.ports import BlobStore, RuntimeStateStore
from schemas import (
    Accepted,
    AnyCommand,
    AnyInput,
    BlobImageBlock,
    CommandCompleted,
    ImageInvalid,
    Limits,
    RejectReason,
)
from schemas.validation import content_blocks
from worker.core import (
    Context,
    Decision,
    PutSnapshot,
    RunNotCurrent,
    Runtime,
    UnknownRuntimes,
    archive_terminal,
    commit_boundary,
    decide_command,
    decide_input,
    fail_run,
    reject_command,
    reject_input,
    stage_batch,
    then,
)
from worker.driver.cache import RuntimeCache
from worker.driver.digest import session_digest
from worker.event_selection import EVERYTHING, EventSelection
from worker.faults import FaultPlan
from worker.runs.executors import RunResult


class Aborted(Exception):
    """A transaction this one depended on failed: nothing of this one was written."""


class State(Enum):
    OPEN = "open"
    COMMITTED = "committed"
    FAILED = "failed"
    ABORTED = "aborted"


@dataclass(frozen=True)
class Setup:
    """What every transaction of one driver shares."""

    cache: RuntimeCache
    store: RuntimeStateStore
    blobs: BlobStore
    load: Callable[[str], Awaitable[Runtime]]
    prefetch: Callable[[Iterable[str]], Awaitable[None]]
    context: Callable[[], Context]
    limits: Limits
    max_batch: int
    unknown_runtimes: UnknownRuntimes
    faults: FaultPlan
    events: EventSelection = EVERYTHING
    """The event codes the store is given (``MEERKAT_EVENTS``)."""


class Transactions:
    """The open transactions of one driver, oldest first."""

    def __init__(self, setup: Setup) -> None:
        self._setup = setup
        self.open: list[Transaction] = []
        self._numbers = itertools.count()

    def begin(self) -> Transaction:
        transaction = Transaction(self._setup, self, next(self._numbers))
        self.open.append(transaction)
        return transaction

    def working(self, runtime_id: str, asking: Transaction) -> Transaction | None:
        """The newest other open transaction working on ``runtime_id``."""
        for transaction in reversed(self.open):
            if transaction is not asking and runtime_id in transaction.working:
                return transaction
        return None


class Transaction:
    def __init__(self, setup: Setup, registry: Transactions, number: int) -> None:
        self._setup = setup
        self._registry = registry
        self.number = number
        self.working: dict[str, Runtime] = {}
        self.decisions: list[Decision] = []
        self.parents: set[Transaction] = set()
        self.state = State.OPEN
        self._done = asyncio.Event()
        self._runs: list[tuple[str, UUID, bool]] = []
        """(runtime, run, started) of the runs whose stage or end this transaction commits."""

    async def __aenter__(self) -> Transaction:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        """A transaction left without a commit is discarded (nothing was written)."""
        self.discard()

    # -- working states ----------------------------------------------------------------------

    async def _runtime(self, runtime_id: str) -> Runtime:
        runtime = self.working.get(runtime_id)
        if runtime is not None:
            return runtime
        parent = self._registry.working(runtime_id, self)
        if parent is not None:
            self.parents.add(parent)
            runtime = parent.working[runtime_id]
        else:
            runtime = await self._setup.load(runtime_id)
            if runtime_id in self.working:  # decided meanwhile (concurrent use of one transaction)
                return self.working[runtime_id]
        self._setup.cache.pin(runtime_id)
        self.working[runtime_id] = runtime
        return runtime

    def _add(self, decision: Decision) -> Decision:
        # What the decision made terminal leaves the working state at once (the store keeps
        # it for dedupe), so no later decision or cache entry carries it.
        self.working[decision.runtime_id] = archive_terminal(decision.runtime, decision)
        self.decisions.append(decision)
        return decision

    def _lineage(self) -> Iterator[Transaction]:
        """This transaction and every open one it depends on."""
        seen: set[int] = set()
        stack = [self]
        while stack:
            transaction = stack.pop()
            if transaction.number in seen:
                continue
            seen.add(transaction.number)
            yield transaction
            stack.extend(t for t in transaction.parents if t.state is State.OPEN)

    async def prefetch(self, runtime_ids: Iterable[str]) -> None:
        """Load at once the runtimes this transaction is about to decide on that no open
        transaction works on and the cache lacks."""
        await self._setup.prefetch(
            r for r in runtime_ids
            if r not in self.working and self._registry.working(r, self) is None
        )

    # -- decisions ---------------------------------------------------------------------------

    async def accept_input(
        self, runtime_id: str, item: AnyInput, *, message_bytes: int | None = None,
        look_up_stored: bool = True,
    ) -> Decision:
        """Admit, deduplicate, or reject ``item``. ``look_up_stored=False`` skips the store's
        dedupe lookup and leaves a duplicate to the store's unique keys: the commit then fails
        with DuplicateRow and is retried with lookups (first deliveries are rarely duplicates)."""
        runtime = await self._runtime(runtime_id)
        ctx = self._setup.context()
        stored = None
        if look_up_stored and item.header.id not in runtime.inputs and runtime.version > 0:
            stored = await self._setup.store.find_input(
                runtime_id, item.header.id, item.header.idempotency_key
            )
        decision = decide_input(runtime, item, ctx, limits=self._setup.limits,
                                message_bytes=message_bytes, stored_match=stored)
        if isinstance(decision.outcome, Accepted):
            missing = await self._missing_blob(item)
            if missing is not None:
                detail = f"image blob {missing} does not exist in the blob store"
                reason = ImageInvalid(detail=detail)
                decision = reject_input(runtime, ctx, input_id=item.header.id, reason=reason,
                                        correlation_id=item.header.correlation_id)
        return self._add(decision)

    async def _missing_blob(self, item: AnyInput) -> str | None:
        referenced = dict.fromkeys(
            b.blob_id for b in content_blocks(item) if isinstance(b, BlobImageBlock)
        )
        if not referenced:
            return None
        pending = {w.blob_id for t in self._lineage() for d in t.decisions for w in d.blobs}
        wanted = [blob_id for blob_id in referenced if blob_id not in pending]
        found = await asyncio.gather(*(self._setup.blobs.exists(b) for b in wanted))
        return next((b for b, present in zip(wanted, found, strict=True) if not present), None)

    async def apply_command(
        self, runtime_id: str, command: AnyCommand, *, look_up_stored: bool = True
    ) -> Decision:
        """Apply, repeat the stored answer of, or refuse ``command``."""
        runtime = await self._runtime(runtime_id)
        stored = self._decided_here(command.command_id)
        if stored is None and look_up_stored and runtime.version > 0:
            stored = await self._setup.store.find_command(runtime_id, command.command_id)
        return self._add(decide_command(runtime, command, self._setup.context(),
                                        stored_outcome=stored,
                                        unknown_runtimes=self._setup.unknown_runtimes))

    def _decided_here(self, command_id: UUID) -> CommandCompleted | None:
        for transaction in self._lineage():
            for decision in transaction.decisions:
                outcome = decision.outcome
                if isinstance(outcome, CommandCompleted) and outcome.command_id == command_id:
                    return outcome
        return None

    async def refuse(
        self, runtime_id: str, reason: RejectReason, *, subject: UUID | None, command: bool
    ) -> Decision:
        """A rejection decided by the shell (a message whose body does not parse)."""
        runtime = await self._runtime(runtime_id)
        ctx = self._setup.context()
        if command:
            return self._add(reject_command(runtime, ctx, command_id=subject, reason=reason))
        return self._add(reject_input(runtime, ctx, input_id=subject, reason=reason))

    async def stage_run(self, runtime_id: str, run_id: UUID) -> Decision | None:
        """Stage the runtime's next batch on ``run_id``; None when it has nothing to run."""
        runtime = await self._runtime(runtime_id)
        decision = stage_batch(runtime, self._setup.context(), run_id=run_id,
                               max_batch=self._setup.max_batch)
        if decision is None:
            return None
        self._runs.append((runtime_id, run_id, True))
        return self._add(decision)

    async def finish_run(self, runtime_id: str, run_id: UUID, result: RunResult, *,
                         next_run_id: UUID | None = None) -> Decision | None:
        """The run's boundary; None when the run is no longer current (cancelled meanwhile).
        With ``next_run_id``, the runtime's next batch is staged on that run in the same
        decision, when it has one (its ``current_run`` then names that run)."""
        runtime = await self._runtime(runtime_id)
        self._runs.append((runtime_id, run_id, False))
        ctx = self._setup.context()
        try:
            decision = commit_boundary(runtime, ctx, run_id=run_id,
                                       session=result.session, message_count=result.message_count,
                                       output=result.output,
                                       digest=session_digest(result.session))
        except RunNotCurrent:
            return None
        if next_run_id is not None:
            staged = stage_batch(decision.runtime, ctx, run_id=next_run_id,
                                 max_batch=self._setup.max_batch)
            if staged is not None:
                self._runs.append((runtime_id, next_run_id, True))
                decision = then(decision, staged)
        return self._add(decision)

    async def fail_run(self, runtime_id: str, run_id: UUID, error: str) -> Decision | None:
        """The run failed; None when it is no longer current."""
        runtime = await self._runtime(runtime_id)
        self._runs.append((runtime_id, run_id, False))
        try:
            decision = fail_run(runtime, self._setup.context(), run_id=run_id, error=error)
        except RunNotCurrent:
            return None
        return self._add(decision)

    def traced(self, decision: Decision, trace: str) -> Decision:
        """``decision``, one this transaction made, with the trace context its events are to
        be stored under (:attr:`Decision.trace`); replaces it in what is committed."""
        traced = dataclasses.replace(decision, trace=trace)
        for index in range(len(self.decisions) - 1, -1, -1):
            if self.decisions[index] is decision:
                self.decisions[index] = traced
                break
        return traced

    # -- commit ------------------------------------------------------------------------------

    async def commit(self) -> None:
        """Wait for the parents, put images, commit, then swap in. Raises :class:`Aborted` when
        a parent failed; on any failure the cache is as it was (a runtime whose stored state is
        now unknown is dropped, so its next use reloads it)."""
        try:
            for parent in list(self.parents):
                await parent._done.wait()
                if parent.state is not State.COMMITTED:
                    self.abort()
            if self.state is State.ABORTED:
                raise Aborted(f"transaction {self.number} depended on one that failed")
            await self._write()
        except Aborted:
            raise
        except BaseException:
            self._close(State.FAILED)
            raise
        self._swap()
        self._close(State.COMMITTED)

    async def _write(self) -> None:
        setup = self._setup
        if not self.decisions:
            return
        writes = {w.blob_id: w for d in self.decisions for w in d.blobs}
        if writes:  # content addressing makes a retry rewrite the same objects
            await asyncio.gather(
                *(setup.blobs.put_image(w.media_type, w.data_base64) for w in writes.values())
            )
            await setup.faults.reach("after_blob_put")
        try:
            await setup.store.commit(setup.events.kept(self.decisions))
        except (CommitOutcomeUnknown, VersionConflict):
            for runtime_id in self.working:
                setup.cache.drop(runtime_id)
            raise

    def _swap(self) -> None:
        cache = self._setup.cache
        reload = {d.runtime_id for d in self.decisions if d.reload_after_commit}
        for runtime_id, run_id, started in self._runs:
            if started:
                cache.live_runs[runtime_id] = run_id
            else:
                cache.forget_run(runtime_id, run_id)
        for decision in self.decisions:
            for mutation in decision.mutations:
                if isinstance(mutation, PutSnapshot):
                    cache.snapshots[decision.runtime_id] = mutation.snapshot
        for runtime_id in dict.fromkeys(d.runtime_id for d in self.decisions):
            if runtime_id in reload:
                cache.drop(runtime_id)
            else:
                cache.remember(self.working[runtime_id])

    def abort(self) -> None:
        """Give up this transaction because one it depends on failed (its own dependents abort
        when they find it aborted). Safe to call more than once."""
        self._close(State.ABORTED)

    def discard(self) -> None:
        """Give up a transaction that could not be decided (nothing was written)."""
        self._close(State.FAILED)

    def dependents(self) -> list[Transaction]:
        """The open transactions that depend on this one, directly or not, oldest first."""
        found: list[Transaction] = []
        for transaction in self._registry.open:
            if transaction is self:
                continue
            if any(p is self or p in found for p in transaction.parents):
                found.append(transaction)
        return found

    def _close(self, state: State) -> None:
        if self.state is not State.OPEN:
            return
        self.state = state
        self.parents = set()  # settled: holding them would keep every earlier window alive
        if self in self._registry.open:
            self._registry.open.remove(self)
        for runtime_id in self.working:
            self._setup.cache.unpin(runtime_id)
        self._done.set()
