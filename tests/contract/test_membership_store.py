"""Worker heartbeats in every runtime store: memory, SQLite and PostgreSQL behave alike.

Each test uses a group and worker ids of its own, so the PostgreSQL database is shared by the
whole session (the ``runtime_store`` fixture marks each store's tests unit or integration).
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import UTC, datetime, timedelta
from uuid import uuid4

from persistence.ports import RuntimeStore

T0 = datetime(2026, 3, 14, 12, 0, tzinfo=UTC)
TTL = timedelta(seconds=15)


def _names(*parts: str) -> list[str]:
    tag = uuid4().hex[:10]
    return [f"{part}-{tag}" for part in parts]


async def test_a_heartbeat_returns_the_live_workers_sorted(runtime_store: RuntimeStore) -> None:
    (group,) = _names("group")
    zed, amy, bob = _names("zed", "amy", "bob")

    assert await runtime_store.heartbeat(zed, now=T0, ttl=TTL, group=group) == [zed]
    await runtime_store.heartbeat(amy, now=T0, ttl=TTL, group=group)
    live = await runtime_store.heartbeat(bob, now=T0 + timedelta(seconds=1), ttl=TTL, group=group)

    assert live == sorted([zed, amy, bob])


async def test_a_worker_silent_for_longer_than_the_ttl_is_gone(
    runtime_store: RuntimeStore,
) -> None:
    (group,) = _names("group")
    quiet, busy = _names("quiet", "busy")
    await runtime_store.heartbeat(quiet, now=T0, ttl=TTL, group=group)

    at_ttl = await runtime_store.heartbeat(busy, now=T0 + TTL, ttl=TTL, group=group)
    after = await runtime_store.heartbeat(
        busy, now=T0 + TTL + timedelta(milliseconds=1), ttl=TTL, group=group
    )

    assert at_ttl == sorted([quiet, busy]), "exactly ttl old still counts as live"
    assert after == [busy]


async def test_a_heartbeat_keeps_a_worker_alive(runtime_store: RuntimeStore) -> None:
    (group,) = _names("group")
    steady, other = _names("steady", "other")
    for step in range(4):
        now = T0 + step * TTL
        await runtime_store.heartbeat(steady, now=now, ttl=TTL, group=group)
        live = await runtime_store.heartbeat(other, now=now, ttl=TTL, group=group)
        assert live == sorted([steady, other])


async def test_a_forgotten_worker_that_heartbeats_again_is_back(
    runtime_store: RuntimeStore,
) -> None:
    (group,) = _names("group")
    late, peer = _names("late", "peer")
    await runtime_store.heartbeat(late, now=T0, ttl=TTL, group=group)
    later = T0 + 2 * TTL
    assert await runtime_store.heartbeat(peer, now=later, ttl=TTL, group=group) == [peer]

    live = await runtime_store.heartbeat(late, now=later, ttl=TTL, group=group)

    assert live == sorted([late, peer])


async def test_leave_removes_the_worker_at_once(runtime_store: RuntimeStore) -> None:
    (group,) = _names("group")
    leaving, staying = _names("leaving", "staying")
    await runtime_store.heartbeat(leaving, now=T0, ttl=TTL, group=group)
    await runtime_store.heartbeat(staying, now=T0, ttl=TTL, group=group)

    await runtime_store.leave(leaving)
    await runtime_store.leave(leaving)  # idempotent
    await runtime_store.leave(_names("never-joined")[0])

    assert await runtime_store.heartbeat(staying, now=T0, ttl=TTL, group=group) == [staying]


async def test_groups_see_only_their_own_workers(runtime_store: RuntimeStore) -> None:
    one, other = _names("one", "other")
    first, second = _names("first", "second")
    await runtime_store.heartbeat(first, now=T0, ttl=TTL, group=one)

    assert await runtime_store.heartbeat(second, now=T0, ttl=TTL, group=other) == [second]
    assert await runtime_store.heartbeat(first, now=T0, ttl=TTL, group=one) == [first]


async def test_a_group_does_not_forget_the_workers_of_another(
    runtime_store: RuntimeStore,
) -> None:
    """Another deployment may heartbeat on a longer interval: only its own heartbeats judge it."""
    slow_group, fast_group = _names("slow", "fast")
    slow, fast = _names("slow-worker", "fast-worker")
    await runtime_store.heartbeat(slow, now=T0, ttl=timedelta(minutes=5), group=slow_group)

    await runtime_store.heartbeat(fast, now=T0 + 2 * TTL, ttl=TTL, group=fast_group)

    live = await runtime_store.heartbeat(
        slow, now=T0 + timedelta(minutes=1), ttl=timedelta(minutes=5), group=slow_group
    )
    assert live == [slow]


async def test_concurrent_heartbeats_all_count(runtime_store: RuntimeStore) -> None:
    (group,) = _names("group")
    workers = _names(*(f"w{n}" for n in range(6)))
    await runtime_store.heartbeat(_names("dead")[0], now=T0 - 2 * TTL, ttl=TTL, group=group)

    await asyncio.gather(
        *(runtime_store.heartbeat(w, now=T0, ttl=TTL, group=group) for w in workers)
    )

    assert await runtime_store.heartbeat(workers[0], now=T0, ttl=TTL, group=group) == sorted(
        workers
    )


async def test_a_heartbeat_records_version_and_shards(runtime_store: RuntimeStore) -> None:
    (group,) = _names("group")
    one, two = _names("one", "two")
    await runtime_store.heartbeat_members(one, now=T0, ttl=TTL, group=group, version="1.2.3",
                                          shards=["q.00", "q.01"])
    rows = await runtime_store.heartbeat_members(two, now=T0, ttl=TTL, group=group)

    assert [(r.worker_id, r.version, r.shards, r.leaving) for r in rows] == sorted([
        (one, "1.2.3", ("q.00", "q.01"), False), (two, "", (), False)])
    assert rows[0].last_seen == T0
    assert await runtime_store.members(group, now=T0 + TTL, ttl=TTL) == rows
    assert await runtime_store.members(group, now=T0 + 2 * TTL, ttl=TTL) == []


async def test_a_leaving_worker_is_still_live_and_marked(runtime_store: RuntimeStore) -> None:
    (group,) = _names("group")
    goes, stays = _names("goes", "stays")
    await runtime_store.heartbeat(goes, now=T0, ttl=TTL, group=group)

    await runtime_store.set_leaving(goes)
    await runtime_store.set_leaving(_names("never-joined")[0])
    rows = await runtime_store.heartbeat_members(stays, now=T0, ttl=TTL, group=group)

    assert {r.worker_id: r.leaving for r in rows} == {goes: True, stays: False}


async def test_watchers_are_told_of_joins_and_leaves(runtime_store: RuntimeStore) -> None:
    """Where the store can notify (memory, PostgreSQL); SQLite says it cannot."""
    (group,) = _names("group")
    (newcomer,) = _names("newcomer")
    told = asyncio.Event()
    watching = asyncio.create_task(runtime_store.watch(group, told.set))
    try:
        await asyncio.sleep(0)
        if watching.done():
            assert watching.result() is False
            return
        await asyncio.wait_for(_until_listening(runtime_store, group, told), 30)
        told.clear()
        await runtime_store.heartbeat_members(newcomer, now=T0, ttl=TTL, group=group,
                                              announce=True)
        await asyncio.wait_for(told.wait(), 30)
        told.clear()
        await runtime_store.leave(newcomer)
        await asyncio.wait_for(told.wait(), 30)
    finally:
        watching.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watching


async def _until_listening(store: RuntimeStore, group: str, told: asyncio.Event) -> None:
    """Announce a probe's heartbeat until the watcher hears one (LISTEN takes a round trip)."""
    (probe,) = _names("probe")
    while not told.is_set():
        await store.heartbeat_members(probe, now=T0, ttl=TTL, group=group, announce=True)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(told.wait(), 0.2)
