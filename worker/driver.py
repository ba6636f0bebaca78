"""The persistent runtime driver: load → decide → put images → commit → swap.

The in-memory runtime of a runtime id is only ever replaced by the state a decision computed,
and only after the store's COMMIT returned. Anything failing in between (blob store, database,
version conflict) leaves the cached runtime exactly as it was, so the message can go back to the
broker and be decided again. When the outcome of a commit is unknown (the connection died during
COMMIT) or another writer moved the version, the cached copy is dropped and the next use reloads
it from the store, running recovery normalization.

Decisions are gathered in a :class:`~worker.commit_batch.CommitBatch` so the consumer can
commit the deliveries of a few milliseconds in one transaction (group commit). A batch holds
the lock of every runtime it touches from its first decision until its commit has been swapped
in; the run loop takes the same per-runtime lock, so the two never decide on the same runtime
at once.

The cache keeps the most recently used runtimes; past ``max_cached_runtimes`` those at rest
(no live input, no run) are forgotten and reloaded from the store when next needed.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from uuid import UUID

from tenacity import (
    AsyncRetrying,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential,
    wait_random,
)

from persistence.errors import (
    CommitOutcomeUnknown,
    StoreError,
    StoreUnavailable,
    VersionConflict,
)
from persistence.ports import BlobStore, RuntimeStore
from schemas import (
    DEFAULT_LIMITS,
    AnyCommand,
    AnyInput,
    Limits,
    Outcome,
)
from worker.commit_batch import CommitBatch
from worker.core import (
    Context,
    Decision,
    RecoveryReport,
    RunNotCurrent,
    Runtime,
    SessionSnapshot,
    Signal,
    archive_terminal,
    commit_boundary,
    fail_run,
    recover,
    stage_batch,
    take_signal,
)
from worker.executors import RunRequest, RunResult
from worker.faults import NO_FAULTS, FaultPlan
from worker.ids import live_context, uuid7
from worker.images import put_blobs, restore_images

SignalListener = Callable[[str, Signal], None]


@dataclass(frozen=True)
class StartedRun:
    run_id: UUID
    request: RunRequest


class RuntimeDriver:
    """Holds the runtimes this process works on, and is the only writer of their state."""

    def __init__(
        self,
        store: RuntimeStore,
        blobs: BlobStore,
        *,
        limits: Limits = DEFAULT_LIMITS,
        context: Callable[[], Context] = live_context,
        max_batch: int = 64,
        max_cached_runtimes: int = 10_000,
        faults: FaultPlan = NO_FAULTS,
        destroy_unknown_runtimes: bool = False,
    ) -> None:
        self._faults = faults
        self.store = store
        self.blobs = blobs
        self.limits = limits
        self._context = context
        self.max_batch = max_batch
        self.max_cached_runtimes = max_cached_runtimes
        self.destroy_unknown_runtimes = destroy_unknown_runtimes
        """Whether ``destroy`` may tombstone a runtime never stored (no other command may)."""
        self._cache: OrderedDict[str, Runtime] = OrderedDict()
        """Least recently used first; runtimes with nothing in flight are evicted past the cap."""
        self._locks: dict[str, asyncio.Lock] = {}
        self._listeners: list[SignalListener] = []
        self.recoveries: dict[str, RecoveryReport] = {}
        self._live_runs: dict[str, UUID] = {}
        """Runs this process started and is still executing, by runtime."""

    # -- cache -------------------------------------------------------------------------------

    def cached(self, runtime_id: str) -> Runtime | None:
        return self._cache.get(runtime_id)

    def cached_ids(self) -> list[str]:
        return list(self._cache)

    def drop(self, runtime_id: str) -> None:
        """Forget the cached runtime; the next use reloads it from the store."""
        self._cache.pop(runtime_id, None)

    def lock(self, runtime_id: str) -> asyncio.Lock:
        return self._locks.setdefault(runtime_id, asyncio.Lock())

    def on_signal(self, listener: SignalListener) -> None:
        """Called after a swap whenever a runtime's run-loop signal is set."""
        self._listeners.append(listener)

    def context(self) -> Context:
        return self._context()

    async def load_locked(self, runtime_id: str) -> Runtime:
        """The cached runtime, or a cold load whose recovery is committed once (lock held)."""
        runtime = self._cache.get(runtime_id)
        if runtime is not None:
            return runtime
        stored = await self.store.load_runtime(runtime_id)
        decision = recover(
            runtime_id,
            stored.row,
            stored.inputs,
            stored.receipts,
            self.context(),
            live_run=self._live_runs.get(runtime_id),
        )
        if decision.mutations:
            await self.store.commit([decision])
        runtime = archive_terminal(decision.runtime)
        if decision.recovery is not None and stored.row is not None:
            self.recoveries[runtime_id] = decision.recovery
        self._remember(runtime)
        self._announce(runtime)
        return runtime

    async def load(self, runtime_id: str) -> Runtime:
        async with self.lock(runtime_id):
            return await self.load_locked(runtime_id)

    # -- decisions committed one at a time ---------------------------------------------------

    @asynccontextmanager
    async def batch(self) -> AsyncIterator[CommitBatch]:
        async with AsyncExitStack() as locks:
            yield CommitBatch(self, locks)

    async def accept_input(
        self, runtime_id: str, item: AnyInput, *, message_bytes: int | None = None
    ) -> Outcome:
        async with self.batch() as batch:
            decision = await batch.accept_input(runtime_id, item, message_bytes=message_bytes)
            await batch.commit()
        assert decision.outcome is not None
        return decision.outcome

    async def apply_command(self, runtime_id: str, command: AnyCommand) -> Outcome:
        async with self.batch() as batch:
            decision = await batch.apply_command(runtime_id, command)
            await batch.commit()
        assert decision.outcome is not None
        return decision.outcome

    async def commit_locked(self, decisions: list[Decision]) -> None:
        """Put images, commit, then swap in; on failure the cache stays as it was."""
        writes = [w for d in decisions for w in d.blobs]
        if writes:
            await put_blobs(self.blobs, writes)
            await self._faults.reach("after_blob_put")
        touched = {d.runtime_id for d in decisions}
        try:
            await self.store.commit(decisions)
        except (CommitOutcomeUnknown, VersionConflict):
            for runtime_id in touched:
                self.drop(runtime_id)
            raise
        final = {d.runtime_id: d for d in decisions}
        for runtime_id, decision in final.items():
            if any(d.reload_after_commit for d in decisions if d.runtime_id == runtime_id):
                self.drop(runtime_id)
                continue
            runtime = archive_terminal(decision.runtime)
            self._remember(runtime)
            self._announce(runtime)

    def _remember(self, runtime: Runtime) -> None:
        self._cache[runtime.runtime_id] = runtime
        self._cache.move_to_end(runtime.runtime_id)
        excess = len(self._cache) - self.max_cached_runtimes
        if excess > 0:
            self._evict(excess)

    def _evict(self, count: int) -> None:
        """Forget up to ``count`` least recently used runtimes that are at rest (no live input,
        no run, nobody holding their lock); the store has all of them."""
        for runtime_id in list(self._cache):
            if count <= 0:
                return
            runtime = self._cache[runtime_id]
            lock = self._locks.get(runtime_id)
            busy = lock is not None and lock.locked()
            if busy or runtime.current_run or runtime_id in self._live_runs:
                continue
            if runtime.live_inputs():
                continue
            del self._cache[runtime_id]
            self._locks.pop(runtime_id, None)
            self.recoveries.pop(runtime_id, None)
            count -= 1

    def _announce(self, runtime: Runtime) -> None:
        if runtime.signal is Signal.NONE:
            return
        for listener in self._listeners:
            listener(runtime.runtime_id, runtime.signal)

    def take_signal(self, runtime_id: str) -> Signal:
        """The run loop takes (and clears) a cached runtime's signal."""
        runtime = self._cache.get(runtime_id)
        if runtime is None:
            return Signal.NONE
        self._cache[runtime_id] = take_signal(runtime)[0]
        return runtime.signal

    # -- runs --------------------------------------------------------------------------------

    async def start_run(self, runtime_id: str) -> StartedRun | None:
        """Stage the next batch and commit it before anything executes; None if nothing runs.

        A blob that cannot be restored fails the run at once (a typed failure, counted
        toward the attempt cap) and returns None. A store still away after the restore's
        retries raises, and the run is given up to recovery (no attempt counted).
        """
        run_id = uuid7()
        async with self.lock(runtime_id):
            runtime = await self.load_locked(runtime_id)
            decision = stage_batch(runtime, self.context(), run_id=run_id, max_batch=self.max_batch)
            if decision is None:
                return None
            await self.commit_locked([decision])
            self._live_runs[runtime_id] = run_id
            staged = decision.runtime
            assert staged.current_run is not None
            payloads = [staged.inputs[i].payload for i in staged.current_run.input_ids]
        try:
            inputs, snapshot = await self._restore(runtime_id, payloads)
        except StoreError as exc:
            # Either way this process is done with the run: were it still counted as live, the
            # next load would keep the runtime "running" with nobody running it.
            try:
                if exc.transient:  # our outage, not the run's fault: recovery requeues it
                    raise
                await self.fail_run(runtime_id, run_id, f"{type(exc).__name__}: {exc}")
            finally:
                self.forget_run(runtime_id, run_id)
            return None
        session = dict(snapshot.body) if snapshot is not None else None
        request = RunRequest(runtime_id=runtime_id, run_id=run_id, inputs=inputs, session=session)
        return StartedRun(run_id, request)

    async def _restore(
        self, runtime_id: str, payloads: list[AnyInput]
    ) -> tuple[tuple[AnyInput, ...], SessionSnapshot | None]:
        """The batch with images inline and the last snapshot. A blob store or database that
        is briefly away is waited for; a missing or corrupt blob fails at once."""
        retrying = AsyncRetrying(
            retry=retry_if_exception(lambda e: isinstance(e, StoreUnavailable)),
            wait=wait_exponential(multiplier=0.1, max=2.0) + wait_random(0, 0.1),
            stop=stop_after_attempt(5),
            reraise=True,
        )
        async for attempt in retrying:
            with attempt:
                inputs = tuple([await restore_images(self.blobs, p) for p in payloads])
                return inputs, await self.store.load_snapshot(runtime_id)
        raise AssertionError("unreachable: tenacity reraises the last error")

    async def finish_run(self, runtime_id: str, run_id: UUID, result: RunResult) -> bool:
        """Commit the run's boundary; False when the run was cancelled meanwhile."""
        async with self.lock(runtime_id):
            runtime = await self.load_locked(runtime_id)
            try:
                decision = commit_boundary(
                    runtime,
                    self.context(),
                    run_id=run_id,
                    session=result.session,
                    message_count=result.message_count,
                    output=result.output,
                )
            except RunNotCurrent:
                self.forget_run(runtime_id, run_id)
                return False
            await self.commit_locked([decision])
            self.forget_run(runtime_id, run_id)
            return True

    def forget_run(self, runtime_id: str, run_id: UUID) -> None:
        """The run is over for this process (committed, failed, or given up to recovery):
        the next reload treats a stored ``running`` row as a dead run."""
        if self._live_runs.get(runtime_id) == run_id:
            del self._live_runs[runtime_id]

    async def fail_run(self, runtime_id: str, run_id: UUID, error: str) -> bool:
        async with self.lock(runtime_id):
            runtime = await self.load_locked(runtime_id)
            try:
                decision = fail_run(runtime, self.context(), run_id=run_id, error=error)
            except RunNotCurrent:
                self.forget_run(runtime_id, run_id)
                return False
            await self.commit_locked([decision])
            self.forget_run(runtime_id, run_id)
            return True
