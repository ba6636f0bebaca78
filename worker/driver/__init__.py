"""The persistent runtime driver: load → decide → put images → commit → swap.

Theory of operation
-------------------
The driver is the only writer of the runtimes this process works on. It keeps each one's last
committed state in a :class:`~worker.driver.cache.RuntimeCache`, and changes state only through a
:class:`~worker.driver.transaction.Transaction`, the group-commit unit that the commit pipeline
opens for each window of deliveries and run transitions:

1. **load**: a runtime not in the cache is read from the store and normalized by the core's
   recovery (a run that died with its process is requeued); a recovery that changed anything is
   committed once, before the runtime is used (:meth:`RuntimeDriver.load`).
2. **decide**: the pure core (:mod:`worker.core`) returns decisions: the new state, the row
   mutations, the events, and a rejection when the core refuses.
3. **put images** into the blob store (content-addressed, so a retry rewrites the same object).
4. **commit** every decision of the transaction in one store transaction; each runtime row is a
   compare-and-set on its version.
5. **swap**: only after COMMIT returned do the new states enter the cache. A failure anywhere
   before leaves the cache as it was; when the outcome is unknown or another writer moved a
   version, the runtime is dropped and its next use reloads it.

A swapped-in state whose run-loop signal is set is announced to the listeners (the run loop).
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable, Collection, Iterable
from uuid import UUID

from persistence.ports import BlobStore, RuntimeStateStore, StoredRuntime
from schemas import DEFAULT_LIMITS, Limits
from worker.core import (
    Context,
    RecoveryReport,
    Runtime,
    SessionSnapshot,
    Signal,
    UnknownRuntimes,
    archive_terminal,
    recover,
)
from worker.driver.cache import RuntimeCache, SignalListener
from worker.driver.transaction import Aborted, Setup, Transaction, Transactions
from worker.event_selection import EVERYTHING, EventSelection
from worker.faults import NO_FAULTS, FaultPlan
from worker.ids import live_context

__all__ = ["Aborted", "RuntimeDriver", "SignalListener", "Transaction"]


class RuntimeDriver:
    """Holds the runtimes this process works on, and is the only writer of their state."""

    def __init__(
        self,
        store: RuntimeStateStore,
        blobs: BlobStore,
        *,
        limits: Limits = DEFAULT_LIMITS,
        context: Callable[[], Context] = live_context,
        max_batch: int = 64,
        max_cached_runtimes: int = 10_000,
        faults: FaultPlan = NO_FAULTS,
        destroy_unknown_runtimes: bool = False,
        live_peers: Callable[[], Collection[str]] = frozenset,
        events: EventSelection = EVERYTHING,
    ) -> None:
        self._live_peers = live_peers
        """The ids of the other live workers (membership)."""
        self._store = store
        self._blobs = blobs
        self._events = events
        self._context = context
        self._cache = RuntimeCache(max_cached_runtimes)
        self._loading: dict[str, asyncio.Lock] = {}
        unknown = UnknownRuntimes.REFUSE
        if destroy_unknown_runtimes:  # only ``destroy`` may tombstone a runtime never stored
            unknown = UnknownRuntimes.DESTROY_ONLY
        self._transactions = Transactions(Setup(
            cache=self._cache, store=store, blobs=blobs, load=self.load,
            prefetch=self.prefetch, context=context,
            limits=limits, max_batch=max_batch, unknown_runtimes=unknown, faults=faults,
            events=events,
        ))

    def transaction(self) -> Transaction:
        """Open a transaction; the caller decides in it, then commits it (or abandons it)."""
        return self._transactions.begin()

    async def ping(self) -> None:
        """Raises while the database or the blob store does not answer."""
        await self._store.ping()
        await self._blobs.ping()

    # -- the cache ---------------------------------------------------------------------------

    def context(self) -> Context:
        """The time and ids decisions are made with."""
        return self._context()

    @property
    def max_cached_runtimes(self) -> int:
        return self._cache.max_runtimes

    @max_cached_runtimes.setter
    def max_cached_runtimes(self, value: int) -> None:
        self._cache.max_runtimes = value

    @property
    def recoveries(self) -> dict[str, RecoveryReport]:
        """What the recovery of each cold-loaded runtime did (``inspect`` shows it)."""
        return self._cache.recoveries

    def cached(self, runtime_id: str) -> Runtime | None:
        return self._cache.get(runtime_id)

    def cached_ids(self) -> list[str]:
        return self._cache.ids()

    def drop(self, runtime_id: str) -> None:
        """Forget the cached runtime; the next use reloads it from the store."""
        self._cache.drop(runtime_id)

    def drop_unless_executing(self, runtime_id: str) -> bool:
        """Forget the cached runtime unless this process executes its run; whether it did."""
        if runtime_id in self._cache.live_runs:
            return False
        self._cache.drop(runtime_id)
        return True

    def holds(self, runtime_id: str) -> bool:
        """Whether the runtime is cached or has a run executing here."""
        return self._cache.get(runtime_id) is not None or runtime_id in self._cache.live_runs

    async def session(self, runtime_id: str) -> SessionSnapshot | None:
        """The runtime's latest session snapshot: the one this process committed or read last
        while the runtime stayed cached, else the store's."""
        snapshots = self._cache.snapshots
        if runtime_id in snapshots:
            return snapshots[runtime_id]
        snapshot = await self._store.load_snapshot(runtime_id)
        if self._cache.get(runtime_id) is not None:  # a boundary committed meanwhile wins
            snapshots.setdefault(runtime_id, snapshot)
        return snapshot

    def on_signal(self, listener: SignalListener) -> None:
        """Called after a swap whenever a runtime's run-loop signal is set."""
        self._cache.on_signal(listener)

    def take_signal(self, runtime_id: str) -> Signal:
        return self._cache.take_signal(runtime_id)

    def executing(self, runtime_id: str) -> bool:
        """Whether this process staged the runtime's current run and has not ended it."""
        return runtime_id in self._cache.live_runs

    def forget_run(self, runtime_id: str, run_id: UUID) -> None:
        """The run is over for this process (committed, failed, or given up to recovery): the
        next reload treats a stored ``running`` row as a dead run."""
        self._cache.forget_run(runtime_id, run_id)

    # -- loading -----------------------------------------------------------------------------

    async def load(self, runtime_id: str) -> Runtime:
        """The cached runtime, or a cold load whose recovery is committed once."""
        runtime = self._cache.get(runtime_id)
        if runtime is not None:
            return runtime
        lock = self._loading.setdefault(runtime_id, asyncio.Lock())
        try:
            async with lock:
                runtime = self._cache.get(runtime_id)
                if runtime is None:
                    runtime = await self._cold_load(runtime_id)
                return runtime
        finally:
            self._let_go(runtime_id, lock)

    async def prefetch(self, runtime_ids: Iterable[str]) -> None:
        """Cold-load, in one read of the store, those of ``runtime_ids`` that are neither
        cached nor being loaded (a window's runtimes: one read instead of one per runtime)."""
        wanted = [r for r in dict.fromkeys(runtime_ids)
                  if self._cache.get(r) is None and r not in self._loading]
        if len(wanted) < 2:
            return
        locks = {r: self._loading.setdefault(r, asyncio.Lock()) for r in wanted}
        for lock in locks.values():
            await lock.acquire()  # new and free: taken at once, before any await yields
        try:
            stored = await self._store.load_runtimes(wanted)
            for runtime_id in wanted:
                if self._cache.get(runtime_id) is None:
                    await self._cold_load(runtime_id, stored[runtime_id])
        finally:
            for runtime_id, lock in locks.items():
                lock.release()
                self._let_go(runtime_id, lock)

    def _let_go(self, runtime_id: str, lock: asyncio.Lock) -> None:
        """Forget a runtime's load lock once nobody holds it."""
        if not lock.locked() and self._loading.get(runtime_id) is lock:
            del self._loading[runtime_id]

    async def _cold_load(self, runtime_id: str, stored: StoredRuntime | None = None) -> Runtime:
        if stored is None:
            stored = await self._store.load_runtime(runtime_id)
        row = stored.row
        if (row is not None and row.current_run_id is not None
                and runtime_id not in self._cache.live_runs
                and stored.last_writer is not None and stored.last_writer in self._live_peers()):
            # A live peer staged the run and is executing it (a hand-over in progress): it is
            # not a dead run. Keep it, write nothing; the peer ends it, and a later conflict
            # reloads the runtime here.
            kept = recover(runtime_id, row, stored.inputs, stored.receipts, self._context(),
                           live_run=row.current_run_id)
            runtime = dataclasses.replace(kept.runtime, version=row.version)
            self._cache.remember(runtime)
            return runtime
        decision = recover(runtime_id, stored.row, stored.inputs, stored.receipts,
                           self._context(), live_run=self._cache.live_runs.get(runtime_id))
        if decision.mutations:
            await self._store.commit(self._events.kept([decision]))
        runtime = archive_terminal(decision.runtime)
        if decision.recovery is not None and stored.row is not None:
            self._cache.recoveries[runtime_id] = decision.recovery
        self._cache.remember(runtime)
        if stored.row is None:  # a runtime that does not exist yet has no session either
            self._cache.snapshots[runtime_id] = None
        return runtime
