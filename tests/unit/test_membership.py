"""Membership without services: the heartbeat loop over the in-memory store (a thin wrapper
plays the database outage), announced changes, and a leaving worker's hand-over."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from uuid import uuid4

import pytest

from persistence.errors import StoreUnavailable
from persistence.memory import MemoryRuntimeStore
from persistence.ports import MemberRow
from worker.membership import Membership, new_worker_id

pytestmark = pytest.mark.unit

SHARDS = [f"meerkat.ingress.{k:02d}" for k in range(16)]
T0 = datetime(2026, 3, 14, 12, 0, tzinfo=UTC)

def test_worker_ids_are_unique_and_readable() -> None:
    first, second = new_worker_id(), new_worker_id()
    assert first != second
    assert first.rsplit("-", 2)[1].isdigit(), first


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


class Recorder:
    """The ``on_assignment`` callback: remembers every set it was given."""

    def __init__(self, fail: int = 0) -> None:
        self.calls: list[set[str]] = []
        self.fail = fail
        self._called = asyncio.Condition()

    async def wait_for(self, count: int) -> None:
        async with self._called:
            await self._called.wait_for(lambda: len(self.calls) >= count)

    async def __call__(self, owned: set[str]) -> None:
        self.calls.append(owned)
        async with self._called:
            self._called.notify_all()
        if self.fail:
            self.fail -= 1
            raise ConnectionError("the broker refused")


class OutageStore:
    """The in-memory store whose heartbeats fail while ``down``; counts every heartbeat."""

    def __init__(self, inner: MemoryRuntimeStore) -> None:
        self.inner = inner
        self.down = False
        self.heartbeats = 0
        self._counted = asyncio.Condition()

    async def heartbeat(
        self, worker_id: str, *, now: datetime, ttl: timedelta, group: str = ""
    ) -> list[str]:
        rows = await self.heartbeat_members(worker_id, now=now, ttl=ttl, group=group)
        return [row.worker_id for row in rows]

    async def heartbeat_members(
        self, worker_id: str, *, now: datetime, ttl: timedelta, group: str = "",
        version: str = "", shards: Sequence[str] = (), announce: bool = False,
    ) -> list[MemberRow]:
        async with self._counted:
            self.heartbeats += 1
            self._counted.notify_all()
        if self.down:
            raise StoreUnavailable("injected outage")
        return await self.inner.heartbeat_members(worker_id, now=now, ttl=ttl, group=group,
                                                  version=version, shards=shards,
                                                  announce=announce)

    async def members(self, group: str = "", *, now: datetime, ttl: timedelta
                      ) -> list[MemberRow]:
        return await self.inner.members(group, now=now, ttl=ttl)

    async def set_leaving(self, worker_id: str) -> None:
        await self.inner.set_leaving(worker_id)

    async def leave(self, worker_id: str) -> None:
        await self.inner.leave(worker_id)

    async def watch(self, group: str, on_change: Callable[[], None]) -> bool:
        return await self.inner.watch(group, on_change)

    async def wait_heartbeats(self, count: int) -> None:
        async with self._counted:
            await self._counted.wait_for(lambda: self.heartbeats >= count)


def _membership(
    store: MemoryRuntimeStore | OutageStore, name: str, clock: Clock, recorder: Recorder,
    *, group: str = "g", heartbeat_seconds: float = 5.0,
) -> Membership:
    return Membership(store, SHARDS, recorder, heartbeat_seconds=heartbeat_seconds,
                      group=group, worker_id=name, clock=clock)


async def test_two_workers_split_the_shards_and_one_takes_all_when_the_other_leaves() -> None:
    store, clock = MemoryRuntimeStore(), Clock()
    a_calls, b_calls = Recorder(), Recorder()
    a = _membership(store, "a", clock, a_calls)
    b = _membership(store, "b", clock, b_calls)

    assert await a.tick() == frozenset(SHARDS), "alone, a owns every shard at once"
    owned_b = await b.tick()
    owned_a = await a.tick()

    assert owned_a | owned_b == frozenset(SHARDS)
    assert not owned_a & owned_b
    assert a_calls.calls == [set(SHARDS), set(owned_a)]
    assert b_calls.calls == [set(owned_b)]

    await b.leave()
    assert await a.tick() == frozenset(SHARDS)
    assert a.live == ["a"]


async def test_an_unchanged_assignment_is_not_handed_over_again() -> None:
    store, clock, calls = MemoryRuntimeStore(), Clock(), Recorder()
    alone = _membership(store, "alone", clock, calls)
    await alone.tick()
    clock.now += timedelta(seconds=5)
    await alone.tick()
    assert calls.calls == [set(SHARDS)]


async def test_the_shards_of_a_dead_worker_move_after_the_ttl() -> None:
    store, clock = MemoryRuntimeStore(), Clock()
    survivor = _membership(store, "survivor", clock, Recorder())
    dead = _membership(store, "dead", clock, Recorder())
    await survivor.tick()
    await dead.tick()
    split = await survivor.tick()
    assert split != frozenset(SHARDS)

    clock.now += survivor.ttl  # exactly ttl old: still live
    assert await survivor.tick() == split
    clock.now += timedelta(microseconds=1)
    assert await survivor.tick() == frozenset(SHARDS)
    assert survivor.live == ["survivor"]


async def test_a_failed_heartbeat_keeps_the_assignment() -> None:
    store, clock, calls = OutageStore(MemoryRuntimeStore()), Clock(), Recorder()
    worker = _membership(store, "w", clock, calls)
    await worker.tick()

    store.down = True
    with pytest.raises(StoreUnavailable):
        await worker.tick()

    assert worker.owned == frozenset(SHARDS)
    assert calls.calls == [set(SHARDS)]


async def test_the_loop_survives_an_outage_without_dropping_shards() -> None:
    store, clock, calls = OutageStore(MemoryRuntimeStore()), Clock(), Recorder()
    worker = _membership(store, "w", clock, calls, heartbeat_seconds=0.001)
    await worker.start()
    store.down = True
    try:
        await asyncio.wait_for(store.wait_heartbeats(4), 30)
    finally:
        await worker.stop()
    assert worker.failures >= 1
    assert worker.owned == frozenset(SHARDS)
    assert calls.calls == [set(SHARDS)]


async def test_a_failed_handover_is_retried_at_the_next_heartbeat() -> None:
    store, clock = MemoryRuntimeStore(), Clock()
    calls = Recorder(fail=1)
    worker = _membership(store, "w", clock, calls)

    with pytest.raises(ConnectionError):
        await worker.tick()
    assert worker.owned == frozenset()

    assert await worker.tick() == frozenset(SHARDS)
    assert calls.calls == [set(SHARDS), set(SHARDS)]


async def test_groups_do_not_share_shards() -> None:
    store, clock = MemoryRuntimeStore(), Clock()
    one = _membership(store, "one", clock, Recorder(), group=f"g-{uuid4().hex}")
    other = _membership(store, "other", clock, Recorder(), group=f"g-{uuid4().hex}")
    await one.tick()
    assert await other.tick() == frozenset(SHARDS)
    assert await one.tick() == frozenset(SHARDS)


async def test_stop_before_start_and_twice_is_harmless() -> None:
    worker = _membership(MemoryRuntimeStore(), "w", Clock(), Recorder())
    await worker.stop()
    await worker.start()
    await worker.stop()
    await worker.stop()


def test_the_heartbeat_interval_must_be_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        _membership(MemoryRuntimeStore(), "w", Clock(), Recorder(), heartbeat_seconds=0)


async def test_a_worker_told_of_a_change_heartbeats_at_once() -> None:
    """A join is announced: the worker already there recomputes without waiting an hour."""
    store, clock, first_calls = MemoryRuntimeStore(), Clock(), Recorder()
    first = _membership(store, "first", clock, first_calls, heartbeat_seconds=3600)
    second = _membership(store, "second", clock, Recorder(), heartbeat_seconds=3600)
    await first.start()
    try:
        await asyncio.sleep(0)  # its background tasks run once: it listens
        owned_second = await second.start()
        await asyncio.wait_for(first_calls.wait_for(2), 30)
        assert first.told >= 1
        assert first.owned == frozenset(SHARDS) - owned_second
        assert len(first.owned) == len(owned_second) == len(SHARDS) // 2
    finally:
        await second.stop()
        await first.stop()


async def test_a_leaving_worker_still_counts_as_live_but_its_shards_move() -> None:
    store, clock = MemoryRuntimeStore(), Clock()
    stays = _membership(store, "stays", clock, Recorder())
    goes = _membership(store, "goes", clock, Recorder())
    await stays.tick()
    await goes.tick()
    assert await stays.tick() != frozenset(SHARDS)

    await goes.set_leaving()
    assert await stays.tick() == frozenset(SHARDS)
    assert stays.live == ["goes", "stays"], "its work in flight is not taken over"
    assert stays.takers() == ["stays"]
    await goes.leave()
    await stays.tick()
    assert stays.live == ["stays"]


async def test_the_row_records_version_and_shards() -> None:
    store, clock = MemoryRuntimeStore(), Clock()
    worker = _membership(store, "w", clock, Recorder())
    await worker.tick()
    await worker.tick()
    (row,) = await store.members("g", now=clock.now, ttl=worker.ttl)
    assert row.worker_id == "w"
    assert row.shards == tuple(SHARDS)
    assert row.version == worker.version
    assert not row.leaving
