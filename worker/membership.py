"""Worker membership: which shard queues this worker consumes, and how shards change hands.

Every worker keeps a heartbeat row in the database (its id, version, the shards it consumes,
whether it is leaving). The shards are spread over the live workers that are not leaving by the
balanced assignment of :mod:`worker.assignment`: with ``S`` shards over ``W`` workers each owns
``floor(S/W)`` or ``ceil(S/W)``, and every worker computes the same owners from the same live
list, without coordination.

Noticing changes. Each worker heartbeats every ``h`` (``MEERKAT_HEARTBEAT_SECONDS``, 1 s by
default). On PostgreSQL a change is also announced at once (``NOTIFY``, see
:mod:`persistence.sql.membership`): a worker's first heartbeat, a worker marking itself
leaving, a worker leaving, and a heartbeat that forgot a dead worker's row. Every worker
``LISTEN`` s and heartbeats again as soon as it is told, so the others recompute within
milliseconds instead of at their next heartbeat. Without notifications (SQLite, or while the
listening connection is lost and being made again) changes are seen at the next heartbeat.

A handover keeps per-runtime order. The new owner subscribes as soon as its heartbeat gives it
the shard (a standby consumer: the queues are single-active-consumer). The old owner releases
the shard (:mod:`worker.consumer`): it stops deciding that shard's deliveries, lets the commits
under way finish and be acked, drops its cached copies of the shard's runtimes (so that it never
writes them from a stale copy, nor keeps one that would be stale if the shard came back), and
closes the shard's channel, which returns everything unsettled to the queue head before the
broker makes the standby active. Single-active-consumer is the safety net while two workers
disagree about an owner (their views of the live list differ for a moment); the runtime row's
version compare-and-set is the last line (a run that the old owner was executing still commits
its end; a conflict is retried on a fresh load and counted in
``meerkat_version_conflicts_total``).

Timing, with ``h`` the heartbeat and ``ttl = 3h`` (1 s and 3 s by default):

- a graceful leave (SIGTERM, a scale-down): the worker first marks its row leaving, and the
  others take its shards as standbys at once; it finishes the commits under way, waits until
  each shard's next owner has subscribed (at most two heartbeats) and closes the shard's
  channel, so the next owner consumes at once; last, it deletes its row. While it drains it
  still counts as live, so no one takes over the runs it is finishing;
- a join: the newcomer's first heartbeat is announced; the workers it takes shards from release
  them at once, in the same way (each waiting for the newcomer's standby before it closes);
- a crash: the dead worker's row stays until it is older than ``ttl``; the first survivor whose
  heartbeat finds it stale deletes it and announces it, and every survivor takes its share at
  once: a shard has a consumer again at most ``ttl + h`` after the worker's last heartbeat, 4 s
  by default (3 s plus the time to subscribe, without notifications). Its messages wait in their
  queues meanwhile; none is lost.

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
import os
import secrets
import socket
from collections.abc import Awaitable, Callable, Iterable
from datetime import UTC, datetime, timedelta

import structlog

from persistence.ports import MemberRow, MembershipStore
from worker.assignment import assignment
from worker.deadline import bounded, event_set
from worker.faults import NO_FAULTS, FaultPlan
from worker.health import ReadinessError

log = structlog.get_logger(__name__)

MISSED_HEARTBEATS = 3
"""A worker whose row is older than this many heartbeat intervals is gone (its ttl)."""

HANDOVER_WAIT_SECONDS = 5.0
"""The longest a released shard waits for the next owner to subscribe before it closes."""

OnAssignment = Callable[[set[str]], Awaitable[None]]


def new_worker_id() -> str:
    """``hostname-pid-random``: readable in the table, unique across restarts and hosts."""
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(4)}"


def worker_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("meerkat-worker")
    except PackageNotFoundError:
        return "unknown"


def _utc_now() -> datetime:
    return datetime.now(UTC)


class Membership:
    """Heartbeats every ``heartbeat_seconds`` (and whenever the store says the membership
    changed) and hands changes of ownership to ``on_assignment``, which must make the worker
    consume exactly the shards it is given."""

    def __init__(
        self,
        store: MembershipStore,
        shards: Iterable[str],
        on_assignment: OnAssignment,
        *,
        heartbeat_seconds: float = 1.0,
        group: str = "",
        worker_id: str | None = None,
        clock: Callable[[], datetime] = _utc_now,
        faults: FaultPlan = NO_FAULTS,
    ) -> None:
        if heartbeat_seconds <= 0:
            raise ValueError(f"heartbeat_seconds must be positive, not {heartbeat_seconds}")
        self._faults = faults
        self.last_heartbeat: datetime | None = None
        self.worker_id = worker_id or new_worker_id()
        self.heartbeat_seconds = heartbeat_seconds
        self.ttl = timedelta(seconds=heartbeat_seconds * MISSED_HEARTBEATS)
        self.group = group
        self.version = worker_version()
        self._store = store
        self._shards = sorted(set(shards))
        self._on_assignment = on_assignment
        self._clock = clock
        self._owned: frozenset[str] | None = None
        self._target: tuple[tuple[str, ...], frozenset[str]] = ((), frozenset())
        """The takers the assignment was last computed for, and my shards among them."""
        self.members: list[MemberRow] = []
        """The live rows read at the last heartbeat."""
        self._joined = False
        self.failures = 0
        """Heartbeats that failed (the assignment stayed as it was)."""
        self.told = 0
        """Changes the store announced (each one made a heartbeat at once)."""
        self._stopping = asyncio.Event()
        self._poked = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def owned(self) -> frozenset[str]:
        """The shards handed to ``on_assignment`` last (empty before the first heartbeat)."""
        return self._owned or frozenset()

    @property
    def live(self) -> list[str]:
        """The live workers' ids at the last heartbeat, leaving ones included, sorted."""
        return [row.worker_id for row in self.members]

    def takers(self) -> list[str]:
        """The live workers that take shards (not leaving), sorted."""
        return [row.worker_id for row in self.members if not row.leaving]

    async def tick(self) -> frozenset[str]:
        """One heartbeat: refresh my row, recompute my shards, apply them if they changed.

        Raises when the store or ``on_assignment`` fails; the assignment is then retried in
        full at the next tick (``on_assignment`` is given the whole target set each time).
        """
        await self._beat()
        return await self._apply()

    async def _beat(self) -> None:
        await self._faults.reach("membership_tick")
        now = self._clock()
        self.members = await self._store.heartbeat_members(
            self.worker_id, now=now, ttl=self.ttl, group=self.group, version=self.version,
            shards=sorted(self.owned), announce=self._owned is None,
        )
        self.last_heartbeat = now

    async def _apply(self) -> frozenset[str]:
        takers = tuple(self.takers())
        if takers != self._target[0]:
            self._target = (takers, frozenset(assignment(self._shards, takers, self.worker_id)))
        owned = self._target[1]
        if owned != self._owned:
            log.info("shards_assigned", worker_id=self.worker_id, workers=len(takers),
                     owned=sorted(owned), released=sorted(self.owned - owned))
            await self._on_assignment(set(owned))
            self._owned = owned
            self._poked.set()  # the next heartbeat records the new shards at once
        return owned

    def poke(self) -> None:
        """The store says the membership changed: heartbeat again now."""
        self.told += 1
        self._poked.set()

    async def join(self) -> None:
        """The first heartbeat alone (it raises when it fails): the part of start-up that waits
        on the database, which a caller may bound; :meth:`start` then applies it."""
        await self._beat()
        self._joined = True

    async def start(self) -> frozenset[str]:
        """The first heartbeat (or the one of :meth:`join`) applied, then the loops in the
        background. Applying it subscribes to the shards, whose deliveries then compete with
        the rest of start-up: that part is not bounded by a dependency's timeout."""
        joined, self._joined = self._joined, False
        owned = await (self._apply() if joined else self.tick())
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self.run(), name="membership"),
                       loop.create_task(self._watch(), name="membership-watch")]
        return owned

    async def run(self) -> None:
        while not self._stopping.is_set():
            await event_set(self._poked, self.heartbeat_seconds)
            self._poked.clear()
            if self._stopping.is_set():
                return
            try:
                await self.tick()
            except Exception as exc:
                self.failures += 1
                log.warning("heartbeat_failed", worker_id=self.worker_id,
                            owned=len(self.owned), error=repr(exc))

    async def _watch(self) -> None:
        """Listen for announced changes for as long as the worker runs; a lost listening
        connection is made again after a heartbeat interval (polling goes on meanwhile)."""
        while not self._stopping.is_set():
            try:
                if not await self._store.watch(self.group, self.poke):
                    return  # the store cannot notify: the heartbeat polls
            except Exception as exc:
                log.warning("membership_watch_lost", error=repr(exc))
            await event_set(self._stopping, self.heartbeat_seconds)

    async def readiness(self) -> None:
        """Not ready once my own heartbeat is older than the ttl: the others then count me
        gone and take my shards, whatever this worker still believes it owns."""
        last = self.last_heartbeat
        if last is None or self._clock() - last > self.ttl:
            raise ReadinessError("membership heartbeat is older than its ttl")

    async def stop(self, grace: float = 10.0) -> None:
        """End the loops; a heartbeat under way may finish (within ``grace`` seconds) rather
        than leave a consumer half started."""
        self._stopping.set()
        self._poked.set()
        tasks, self._tasks = self._tasks, []
        if not tasks:
            return
        heartbeat, watch = tasks
        watch.cancel()
        try:
            await bounded(asyncio.shield(heartbeat), grace)
        except TimeoutError:
            heartbeat.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def handover_wait(self) -> float:
        """How long a released shard waits for its next owner's consumer: two heartbeats (at
        most :data:`HANDOVER_WAIT_SECONDS`), while another worker is there to take it."""
        others = [w for w in self.takers() if w != self.worker_id]
        return min(2 * self.heartbeat_seconds, HANDOVER_WAIT_SECONDS) if others else 0.0

    async def set_leaving(self) -> None:
        """Tell the others I am leaving: they take my shards now (as standbys until I let
        go), while I still count as live."""
        await self._store.set_leaving(self.worker_id)

    async def leave(self) -> None:
        """Delete my row, so the others count me gone at once."""
        await self._store.leave(self.worker_id)
