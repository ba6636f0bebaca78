"""The balanced assignment of shards to workers: exact balance, one owner per shard, the same
answer for the same live list, and few moves on a join or a leave."""

from __future__ import annotations

import random
from collections import Counter

import pytest
from hypothesis import given
from hypothesis import strategies as st

from worker.assignment import assignment, balanced_assignment, owner_among, owner_of

pytestmark = pytest.mark.unit

SHARDS = [f"meerkat.ingress.{k:02d}" for k in range(16)]

worker_ids = st.text(alphabet="abcdefghij0123456789-", min_size=1, max_size=12)
worker_sets = st.sets(worker_ids, min_size=1, max_size=12)
shard_lists = st.lists(st.text(min_size=1, max_size=20), min_size=1, max_size=40, unique=True)


@given(shards=shard_lists, workers=worker_sets)
def test_each_worker_owns_floor_or_ceil_and_every_shard_one_owner(
    shards: list[str], workers: set[str]
) -> None:
    owners = balanced_assignment(shards, workers)
    assert set(owners) == set(shards)
    counts = Counter(owners.values())
    floor, larger = divmod(len(shards), len(workers))
    assert sorted(counts.get(w, 0) for w in workers) == sorted(
        [floor + 1] * larger + [floor] * (len(workers) - larger))
    mine = {worker: assignment(shards, workers, worker) for worker in workers}
    for shard in shards:
        assert [w for w, owned in mine.items() if shard in owned] == [owners[shard]]


@given(shards=shard_lists, workers=worker_sets, data=st.data())
def test_the_assignment_does_not_depend_on_the_order_of_the_lists(
    shards: list[str], workers: set[str], data: st.DataObject
) -> None:
    shuffled = data.draw(st.permutations(sorted(workers)))
    reordered = data.draw(st.permutations(shards))
    assert balanced_assignment(reordered, shuffled) == balanced_assignment(shards, workers)


def test_sixteen_shards_over_four_workers_are_four_each() -> None:
    workers = [f"host-{n}-{n * 7919}" for n in range(4)]
    counts = Counter(balanced_assignment(SHARDS, workers).values())
    assert sorted(counts.values()) == [4, 4, 4, 4]


def test_a_lone_worker_owns_every_shard_and_no_worker_owns_nothing() -> None:
    assert assignment(SHARDS, ["only"], "only") == set(SHARDS)
    assert assignment(SHARDS, [], "only") == set(SHARDS), "me counts as live"
    assert balanced_assignment(SHARDS, []) == {}
    with pytest.raises(ValueError, match="no live worker"):
        owner_of(SHARDS[0], SHARDS, [])


def _least_moves(before: dict[str, str], workers: list[str]) -> int:
    """The fewest shards any balanced assignment over ``workers`` must move from ``before``."""
    kept = sorted((Counter(before.values()).get(w, 0) for w in workers), reverse=True)
    floor, larger = divmod(len(before), len(workers))
    return len(before) - sum(min(k, floor + (i < larger)) for i, k in enumerate(kept))


def _moves(before: dict[str, str], after: dict[str, str]) -> int:
    return sum(before[shard] != after[shard] for shard in before)


@pytest.mark.parametrize(("shards", "bound"), [(16, 1.5), (32, 2.5)])
def test_joins_and_leaves_move_few_more_shards_than_they_must(shards: int, bound: float) -> None:
    names = [f"meerkat.ingress.{k:02d}" for k in range(shards)]
    rng = random.Random(1)
    excess, changes = 0, 0
    for trial in range(200):
        workers = [f"host-{rng.randrange(10**6)}-{trial}-{n}" for n in range(rng.randint(3, 13))]
        before = balanced_assignment(names, workers[:-1])
        joined = balanced_assignment(names, workers)
        excess += _moves(before, joined) - _least_moves(before, workers)
        gone = rng.choice(workers[:-1])
        rest = [w for w in workers[:-1] if w != gone]
        left = balanced_assignment(names, rest)
        excess += _moves(before, left) - _least_moves(before, rest)
        changes += 2
        # A joining worker takes its share; it is never given more than the bound allows.
        assert Counter(joined.values())[workers[-1]] in (shards // len(workers),
                                                         -(-shards // len(workers)))
    assert excess / changes <= bound, f"{excess / changes:.2f} more moves than needed on average"


@given(key=st.text(min_size=1, max_size=30), workers=worker_sets, data=st.data())
def test_one_worker_is_picked_for_any_key_whatever_the_order(
    key: str, workers: set[str], data: st.DataObject
) -> None:
    picked = owner_among(key, workers)
    assert picked in workers
    assert owner_among(key, data.draw(st.permutations(sorted(workers)))) == picked
    others = workers - {picked}
    if others:
        assert owner_among(key, others | {picked}) == picked, "stable while it stays"
