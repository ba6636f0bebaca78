"""Membership without services: rendezvous ownership and the heartbeat loop over the in-memory
store (a thin wrapper plays the database outage)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from uuid import uuid4

import pytest
from hypothesis import given
from hypothesis import strategies as st

from persistence.errors import StoreUnavailable
from persistence.memory import MemoryRuntimeStore
from worker.membership import Membership, assignment, new_worker_id, owner_of

pytestmark = pytest.mark.unit

SHARDS = [f"meerkat.ingress.{k:02d}" for k in range(16)]
T0 = datetime(2026, 3, 14, 12, 0, tzinfo=UTC)

worker_ids = st.text(alphabet="abcdefghij0123456789-", min_size=1, max_size=12)
worker_sets = st.sets(worker_ids, min_size=1, max_size=8)
shard_lists = st.lists(st.text(min_size=1, max_size=20), min_size=1, max_size=40, unique=True)


@given(shards=shard_lists, workers=worker_sets)
def test_every_shard_has_exactly_one_owner(shards: list[str], workers: set[str]) -> None:
    owned = {worker: assignment(shards, workers, worker) for worker in workers}
    for shard in shards:
        owners = [worker for worker, mine in owned.items() if shard in mine]
        assert owners == [owner_of(shard, workers)]


@given(shards=shard_lists, workers=worker_sets, newcomer=worker_ids)
def test_a_joining_worker_takes_shards_only_for_itself(
    shards: list[str], workers: set[str], newcomer: str
) -> None:
    grown = workers | {newcomer}
    for shard in shards:
        assert owner_of(shard, grown) in {owner_of(shard, workers), newcomer}


@given(shards=shard_lists, workers=st.sets(worker_ids, min_size=2, max_size=8), data=st.data())
def test_a_leaving_worker_moves_only_its_own_shards(
    shards: list[str], workers: set[str], data: st.DataObject
) -> None:
    leaving = data.draw(st.sampled_from(sorted(workers)))
    remaining = workers - {leaving}
    for shard in shards:
        before = owner_of(shard, workers)
        if before != leaving:
            assert owner_of(shard, remaining) == before


@given(shards=shard_lists, workers=worker_sets, data=st.data())
def test_ownership_does_not_depend_on_the_order_of_the_list(
    shards: list[str], workers: set[str], data: st.DataObject
) -> None:
    shuffled = data.draw(st.permutations(sorted(workers)))
    for shard in shards:
        assert owner_of(shard, shuffled) == owner_of(shard, sorted(workers))


def test_a_lone_worker_owns_every_shard_and_no_worker_owns_nothing() -> None:
    assert assignment(SHARDS, ["only"], "only") == set(SHARDS)
    assert assignment(SHARDS, [], "only") == set(SHARDS), "me counts as live"
    with pytest.raises(ValueError, match="no live worker"):
        owner_of(SHARDS[0], [])


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

    async def __call__(self, owned: set[str]) -> None:
        self.calls.append(owned)
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
        async with self._counted:
            self.heartbeats += 1
            self._counted.notify_all()
        if self.down:
            raise StoreUnavailable("injected outage")
        return await self.inner.heartbeat(worker_id, now=now, ttl=ttl, group=group)

    async def leave(self, worker_id: str) -> None:
        await self.inner.leave(worker_id)

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
