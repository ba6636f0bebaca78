"""Worker membership: which shard queues this worker consumes.

Every worker keeps a heartbeat row in the database. Each shard belongs to the live worker that
rendezvous (highest random weight) hashing ranks first for it, so every worker computes the same
owner from the same list of live workers, without coordination. When a worker joins, only the
shards it now ranks first for move to it; when one leaves, only its shards move, each to the
worker ranked next.

A handover: the new owner subscribes as soon as its heartbeat gives it the shard (a standby
while the old owner is still active); the old owner cancels its consumer at its own next
heartbeat, the deliveries it already received are still decided, committed and acked on their
own channel, and the broker makes the new owner's consumer the active one. Single-active-consumer
on the shard queues is the safety net while two workers disagree about an owner (their views of
the live set differ for up to one heartbeat): both may subscribe, the broker lets only one
receive. The runtime row's version compare-and-set is the last line: a delivery still in the old
owner's batch may meet a later one of the same runtime taken by the new owner; one of them fails
its compare-and-set and is retried, so nothing is applied twice or lost, but for those two
messages the per-runtime order is not guaranteed.

The spread is as even as chance makes it: each shard picks its owner independently, so with few
shards per worker some get more than others (16 shards over 4 workers: 4 each on average, and
now and then one worker gets none and stands idle). More shards per worker evens it out.

Timing, with ``h`` the heartbeat interval and ``ttl = 3h`` (5 s and 15 s by default):

- a worker that stops gracefully deletes its row; the others take its shards at their next
  heartbeat, within ``h``;
- a worker that dies keeps its row until it is older than ``ttl``; the survivors take its shards
  at their first heartbeat after that: the worst-case takeover is ``ttl + h`` (20 s by default).
  The messages of those shards wait in their queues meanwhile; none is lost;
- a joining worker subscribes to its shards at once and becomes active on each when the old
  owner lets go at its next heartbeat, within ``h``.

A failed heartbeat (database outage) changes nothing: the worker keeps consuming what it owns
and tries again at the next interval. If the outage outlasts ``ttl``, the others take over its
shards as standbys; the broker keeps this worker active on them until it lets go.

Rows carry a group (the topology prefix), so deployments sharing one database each see only their
own workers. Heartbeat times come from each worker's clock: clocks must agree to well within
``ttl``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import secrets
import socket
from collections.abc import Awaitable, Callable, Iterable
from datetime import UTC, datetime, timedelta

import structlog

from persistence.ports import MembershipStore
from worker.faults import NO_FAULTS, FaultPlan
from worker.health import ReadinessError

log = structlog.get_logger(__name__)

MISSED_HEARTBEATS = 3
"""A worker whose row is older than this many heartbeat intervals is gone."""

OnAssignment = Callable[[set[str]], Awaitable[None]]


def _rank(worker: str, shard: str) -> tuple[bytes, str]:
    # The id breaks a tie of digests, so the order never depends on the order of the list.
    return hashlib.sha256(f"{worker}:{shard}".encode()).digest(), worker


def owner_of(shard: str, workers: Iterable[str]) -> str:
    """The worker that consumes ``shard`` when ``workers`` are the live ones."""
    candidates = list(workers)
    if not candidates:
        raise ValueError(f"no live worker to own {shard!r}")
    return max(candidates, key=lambda worker: _rank(worker, shard))


def assignment(shards: Iterable[str], workers: Iterable[str], me: str) -> set[str]:
    """The shards ``me`` owns among ``workers`` (``me`` counts as live whether listed or not)."""
    live = {*workers, me}
    return {shard for shard in shards if owner_of(shard, live) == me}


def new_worker_id() -> str:
    """``hostname-pid-random``: readable in the table, unique across restarts and hosts."""
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(4)}"


def _utc_now() -> datetime:
    return datetime.now(UTC)


class Membership:
    """Heartbeats every ``heartbeat_seconds`` and hands changes of ownership to
    ``on_assignment``, which must make the worker consume exactly the shards it is given."""

    def __init__(
        self,
        store: MembershipStore,
        shards: Iterable[str],
        on_assignment: OnAssignment,
        *,
        heartbeat_seconds: float = 5.0,
        group: str = "",
        worker_id: str | None = None,
        clock: Callable[[], datetime] = _utc_now,
        faults: FaultPlan = NO_FAULTS,
    ) -> None:
        self._faults = faults
        self.last_heartbeat: datetime | None = None
        if heartbeat_seconds <= 0:
            raise ValueError(f"heartbeat_seconds must be positive, not {heartbeat_seconds}")
        self.worker_id = worker_id or new_worker_id()
        self.heartbeat_seconds = heartbeat_seconds
        self.ttl = timedelta(seconds=heartbeat_seconds * MISSED_HEARTBEATS)
        self.group = group
        self._store = store
        self._shards = sorted(set(shards))
        self._on_assignment = on_assignment
        self._clock = clock
        self._owned: frozenset[str] | None = None
        self.live: list[str] = []
        self._joined: list[str] | None = None
        self.failures = 0
        """Heartbeats that failed (the assignment stayed as it was)."""
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @property
    def owned(self) -> frozenset[str]:
        """The shards handed to ``on_assignment`` last (empty before the first heartbeat)."""
        return self._owned or frozenset()

    async def tick(self) -> frozenset[str]:
        """One heartbeat: refresh my row, recompute my shards, apply them if they changed.

        Raises when the store or ``on_assignment`` fails; the assignment is then retried in
        full at the next tick (``on_assignment`` is given the whole target set each time).
        """
        return await self._apply(await self._beat())

    async def _beat(self) -> list[str]:
        await self._faults.reach("membership_tick")
        now = self._clock()
        live = await self._store.heartbeat(self.worker_id, now=now, ttl=self.ttl, group=self.group)
        self.last_heartbeat = now
        self.live = live
        return live

    async def _apply(self, live: list[str]) -> frozenset[str]:
        owned = frozenset(assignment(self._shards, live, self.worker_id))
        if owned != self._owned:
            log.info("shards_assigned", worker_id=self.worker_id, workers=len(live),
                     owned=sorted(owned), released=sorted(self.owned - owned))
            await self._on_assignment(set(owned))
            self._owned = owned
        return owned

    async def join(self) -> None:
        """The first heartbeat alone (it raises when it fails): the part of start-up that waits
        on the database, which a caller may bound; :meth:`start` then applies it."""
        self._joined = await self._beat()

    async def start(self) -> frozenset[str]:
        """The first heartbeat (or the one of :meth:`join`) applied, then the loop in the
        background. Applying it subscribes to the shards, whose deliveries then compete with
        the rest of start-up: that part is not bounded by a dependency's timeout."""
        joined, self._joined = self._joined, None
        owned = await self._apply(joined if joined is not None else await self._beat())
        self._task = asyncio.get_running_loop().create_task(self.run(), name="membership")
        return owned

    async def run(self) -> None:
        while not self._stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self.heartbeat_seconds)
            if self._stopping.is_set():
                return
            try:
                await self.tick()
            except Exception as exc:
                self.failures += 1
                log.warning("heartbeat_failed", worker_id=self.worker_id,
                            owned=len(self.owned), error=repr(exc))

    async def readiness(self) -> None:
        """Not ready once my own heartbeat is older than the ttl: the others then count me
        gone and take my shards, whatever this worker still believes it owns."""
        last = self.last_heartbeat
        if last is None or self._clock() - last > self.ttl:
            raise ReadinessError("membership heartbeat is older than its ttl")

    async def stop(self, grace: float = 10.0) -> None:
        """End the loop; a heartbeat under way may finish (within ``grace`` seconds) rather
        than leave a consumer half started."""
        self._stopping.set()
        task, self._task = self._task, None
        if task is None:
            return
        try:
            await asyncio.wait_for(asyncio.shield(task), grace)
        except TimeoutError:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def leave(self) -> None:
        """Delete my row, so the others take my shards at their next heartbeat."""
        await self._store.leave(self.worker_id)
