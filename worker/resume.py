"""Work left behind: runtimes with queued or interrupted work that no live worker wrote last.

A worker that crashed or stopped may leave runtimes with inputs queued or a run interrupted;
no message will come to wake them. At start-up, and then every heartbeat ttl (the ``sweep``
task), the worker asks the store for such runtimes of its deployment, leaving out those a live
peer wrote last (taking them would re-run a batch the peer's executor is still working on), and
loads each one: loading recovers it and wakes its run loop here. A runtime written last by no
live worker (a crashed one) is taken by one of the live workers only, the one rendezvous
hashing of its id picks (:func:`worker.assignment.owner_among`): were every survivor to take
it, they would all run it and meet each other's version conflicts. Its own runtimes (a shard
it handed over, whose queued inputs no message will wake) the worker always takes.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import structlog

from persistence.ports import RuntimeStore
from worker.assignment import owner_among
from worker.core import Signal, can_start_run
from worker.driver import RuntimeDriver
from worker.runs.loop import RunLoop

log = structlog.get_logger(__name__)


class LeftWork:
    def __init__(
        self, store: RuntimeStore, driver: RuntimeDriver, run_loop: RunLoop, *, group: str,
        live_peers: Callable[[], set[str]], every: float, me: str | None = None,
    ) -> None:
        self._me = me
        self._store = store
        self._driver = driver
        self._run_loop = run_loop
        self._group = group
        self._live_peers = live_peers
        self._every = every

    async def resume(self) -> int:
        """Load the runtimes left behind; returns how many were taken on."""
        peers = self._live_peers()
        taken = 0
        left = await self._store.runtimes_with_pending_work(group=self._group,
                                                            exclude_writers=peers)
        me, orphaned = self._me, set[str]()
        if peers and me:  # written last by no live worker: one of us takes each
            orphaned = set(await self._store.runtimes_with_pending_work(
                group=self._group, exclude_writers={*peers, me}))
        for runtime_id in left:
            if runtime_id in orphaned and me and owner_among(runtime_id, {*peers, me}) != me:
                continue
            if not self._needs_load(runtime_id):
                continue
            try:
                await self._driver.load(runtime_id)
                taken += 1
            except Exception as exc:
                log.warning("resume_failed", runtime_id=runtime_id, error=repr(exc))
        return taken

    def _needs_load(self, runtime_id: str) -> bool:
        """Whether a runtime the store lists with pending work (written last by this worker or
        by one no longer live) must be loaded to be worked on here. A cached copy that shows a
        run this process is not executing is a peer's run as it was when loaded; the peer is no
        longer live, so it is read again (recovery requeues the run). A cached runtime that
        could run but that no run task works on is woken."""
        cached = self._driver.cached(runtime_id)
        if cached is None:
            return True
        if self._run_loop.working(runtime_id):
            return False
        if cached.current_run is not None and not self._driver.executing(runtime_id):
            self._driver.drop(runtime_id)
            return True
        if can_start_run(cached):
            self._run_loop.wake(runtime_id, Signal.WAKE)
        return False

    async def sweep(self) -> None:
        """Every heartbeat, take on work left behind by workers that are no longer live."""
        while True:
            await asyncio.sleep(self._every)
            try:
                taken = await self.resume()
            except Exception as exc:  # the store is away; the next sweep tries again
                log.warning("sweep_failed", error=repr(exc))
                continue
            if taken:
                log.info("left_work_resumed", runtimes=taken)
