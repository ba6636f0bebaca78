"""Fault points: places where a worker can be told to crash, fail or wedge, for crash tests.

A worker's promise is that a message is acked only after its commit, so a crash anywhere loses
nothing and applies nothing twice. Testing that promise needs crashes at the exact places where
it could break: between the commit and the ack, between publishing events and marking them
sent, in the middle of a shard handover. Waiting for a random ``kill -9`` to land there is
hopeless; instead the code names those places (``await faults.reach("after_commit_before_ack")``)
and the setting ``MEERKAT_FAULT`` says which one to act on and when::

    MEERKAT_FAULT=after_commit_before_ack:37
    MEERKAT_FAULT=committer_loop:3:raise,outbox_loop:1:hang

Each entry is ``point:N[:action]``: the N-th time (counting from 1) the process reaches
``point``, ``action`` happens, once:

- ``kill`` (the default): the process sends itself SIGKILL. Nothing is flushed, no ``finally``
  runs, no connection is closed: it is the crash the design has to survive. The one thing
  written first is a ``fault_injected`` line straight to file descriptor 2, so the process log
  shows where it died.
- ``raise``: :class:`FaultInjected` is raised in the task that reached the point, to test that
  the supervision notices a task that died.
- ``hang``: the task that reached the point awaits forever (it can still be cancelled), to test
  that the supervision notices a task that is alive but stuck.

The plan is parsed once, at start-up, and a bad spec is a :class:`FaultSpecError` (a
``ValueError``) naming the bad part and the known points: a fault test with a typo must fail
loudly, not run without its fault. Point names live in :data:`FAULT_POINTS` only.

Cost: :meth:`FaultPlan.reach` sits on hot paths (every delivery, every loop turn). With no
plan, it is one attribute test inside an ``await`` of a coroutine that never suspends; the
unit tests measure it. Only points named in the plan are counted.

The outbox relay's points (:data:`RELAY_POINTS`) are reached in the relay's child process when
it runs apart (:mod:`worker.relay_child`): the child acts on :meth:`FaultPlan.restricted` to
them, whose ``kill`` SIGKILLs the worker first (the ``companion``), so that a kill there is still
the crash of the whole worker, and whose ``raise`` and ``hang`` tell ``on_fire``, so that the
worker hands the point to no later child: each point fires once per worker, as in one process.

Every point is reached with ``await plan.reach(point)`` except those in :data:`SYNC_POINTS`,
which are reached from plain functions with :meth:`FaultPlan.reach_sync`; ``hang`` makes no
sense without an event loop, so the parser refuses it for those.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import threading
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from enum import StrEnum
from types import MappingProxyType

import structlog

log = structlog.get_logger(__name__)

FAULT_POINTS: Mapping[str, str] = MappingProxyType(
    {
        "after_blob_put": "a batch's images are written to the blob store, before its commit",
        "after_commit_before_ack": "a batch's commit returned, before its deliveries are acked",
        "mid_run": "a run's stage is committed and its executor is running",
        "after_boundary_commit": "a run's boundary is committed, before its events are relayed",
        "during_outbox_publish": "events are published to the broker, before they are marked sent",
        "during_handover": "a shard is being released or taken over",
        "committer_loop": "each turn of the committer's loop",
        "outbox_loop": "each turn of the outbox relay's loop",
        "membership_tick": "each membership heartbeat",
        "run_turn": "each turn of the run loop",
        "consumer_delivery": "each delivery the consumer receives",
        "broker_session": "each (re)connection of the broker session",
        "startup_end": "start-up is done (membership row written, shards taken), before the "
                       "worker reports itself started and ready",
    }
)
"""Every fault point: name → where it is reached."""

RELAY_POINTS: frozenset[str] = frozenset({"outbox_loop", "during_outbox_publish"})
"""The points the outbox relay reaches (in its child process, when it runs apart)."""

SYNC_POINTS: frozenset[str] = frozenset()
"""Points reached with :meth:`FaultPlan.reach_sync` (no event loop): ``hang`` is refused there."""


class FaultAction(StrEnum):
    KILL = "kill"
    RAISE = "raise"
    HANG = "hang"


class FaultInjected(Exception):
    """Raised where a ``raise`` fault point fires."""

    def __init__(self, point: str, count: int) -> None:
        super().__init__(f"fault injected at {point} (reach {count})")
        self.point = point
        self.count = count


class FaultSpecError(ValueError):
    """``MEERKAT_FAULT`` does not parse; the message names the bad part."""


@dataclass(frozen=True)
class Fault:
    """One entry of a plan: act on the ``at``-th reach of ``point``."""

    point: str
    at: int
    action: FaultAction = FaultAction.KILL


class FaultPlan:
    """The parsed ``MEERKAT_FAULT``: which points act, on which reach, how."""

    def __init__(self, faults: tuple[Fault, ...] = (), *, companion: int | None = None,
                 on_fire: Callable[[str], None] | None = None) -> None:
        self.faults = faults
        self._companion = companion
        self._on_fire = on_fire
        self._pending = {fault.point: fault for fault in faults}
        self._counts = dict.fromkeys(self._pending, 0)
        # reach_sync may come from another thread; counting must not skip or repeat a number.
        self._lock = threading.Lock()

    @classmethod
    def parse(cls, spec: str | None) -> FaultPlan:
        """The plan of a spec such as ``committer_loop:3:raise,outbox_loop:1:hang``.

        ``None`` or a blank spec is the empty plan. Raises :class:`FaultSpecError`.
        """
        if spec is None or not spec.strip():
            return NO_FAULTS
        faults: list[Fault] = []
        for entry in spec.split(","):
            fault = _parse_entry(entry.strip(), spec)
            if any(f.point == fault.point for f in faults):
                raise FaultSpecError(
                    f"fault point {fault.point!r} is given twice in {spec!r}: each fires once"
                )
            faults.append(fault)
        return cls(tuple(faults))

    def __bool__(self) -> bool:
        return bool(self.faults)

    def __repr__(self) -> str:
        return f"FaultPlan.parse({self.spec()!r})"

    def restricted(self, points: Collection[str], *, companion: int | None = None,
                   on_fire: Callable[[str], None] | None = None) -> FaultPlan:
        """The plan of ``points`` only: its ``kill`` first SIGKILLs the process ``companion``,
        ``on_fire(point)`` is told of each ``raise`` or ``hang`` as it fires."""
        kept = tuple(f for f in self.faults if f.point in points)
        return FaultPlan(kept, companion=companion, on_fire=on_fire) if kept else NO_FAULTS

    def spec(self) -> str:
        """The plan written back as a spec."""
        return ",".join(f"{f.point}:{f.at}:{f.action.value}" for f in self.faults)

    async def reach(self, point: str) -> None:
        """Count one reach of ``point``; act if this is the planned one."""
        if not self._pending:
            return
        fault, count = self._count(point)
        if fault is None:
            return
        if fault.action is FaultAction.HANG:
            _warn(fault, count)
            if self._on_fire is not None:
                self._on_fire(fault.point)
            await asyncio.get_running_loop().create_future()
        self._act(fault, count)

    def reach_sync(self, point: str) -> None:
        """:meth:`reach` for the points of :data:`SYNC_POINTS` (``kill`` and ``raise`` only)."""
        if not self._pending:
            return
        fault, count = self._count(point)
        if fault is None:
            return
        if fault.action is FaultAction.HANG:
            raise RuntimeError(f"fault point {point!r} is awaited: reach it with `await reach`")
        self._act(fault, count)

    def _count(self, point: str) -> tuple[Fault | None, int]:
        with self._lock:
            fault = self._pending.get(point)
            if fault is None:
                if point not in FAULT_POINTS:
                    raise ValueError(f"unknown fault point {point!r}; known: {_known()}")
                return None, 0
            count = self._counts[point] + 1
            self._counts[point] = count
            if count < fault.at:
                return None, count
            del self._pending[point]
            return fault, count

    def _act(self, fault: Fault, count: int) -> None:
        if fault.action is FaultAction.KILL:
            _crash(fault, count, self._companion)
        _warn(fault, count)
        if self._on_fire is not None:
            self._on_fire(fault.point)
        raise FaultInjected(fault.point, count)


NO_FAULTS = FaultPlan()
"""The empty plan: every reach is a no-op."""


def _parse_entry(entry: str, spec: str) -> Fault:
    parts = [part.strip() for part in entry.split(":")]
    if len(parts) not in (2, 3) or not parts[0]:
        raise FaultSpecError(
            f"fault entry {entry!r} of {spec!r} is not point:N[:action]; known points: {_known()}"
        )
    point, count = parts[0], parts[1]
    if point not in FAULT_POINTS:
        raise FaultSpecError(f"unknown fault point {point!r} in {spec!r}; known: {_known()}")
    if not count.isdecimal() or int(count) < 1:
        raise FaultSpecError(
            f"fault point {point!r}: N must be a whole number from 1, not {count!r}"
        )
    try:
        action = FaultAction(parts[2]) if len(parts) == 3 else FaultAction.KILL
    except ValueError:
        raise FaultSpecError(
            f"fault point {point!r}: unknown action {parts[2]!r}; "
            f"known: {', '.join(a.value for a in FaultAction)}"
        ) from None
    if action is FaultAction.HANG and point in SYNC_POINTS:
        raise FaultSpecError(f"fault point {point!r} is reached without an event loop: no hang")
    return Fault(point, int(count), action)


def _known() -> str:
    return ", ".join(FAULT_POINTS)


def _warn(fault: Fault, count: int) -> None:
    log.warning("fault_injected", point=fault.point, action=fault.action.value, count=count)


def _crash(fault: Fault, count: int, companion: int | None = None) -> None:
    # Straight to the file descriptor: a buffered or queued logger would die with the process.
    line = json.dumps(
        {
            "event": "fault_injected",
            "level": "warning",
            "point": fault.point,
            "action": fault.action.value,
            "count": count,
            "pid": os.getpid(),
        }
    )
    os.write(2, (line + "\n").encode())
    if companion is not None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(companion, signal.SIGKILL)
    os.kill(os.getpid(), signal.SIGKILL)
