"""Which worker consumes which shard queue: a balanced assignment every worker computes alike.

Pure: a function of the shard names and the ids of the workers that take shards, nothing else
(no clock, no earlier assignment), so every worker that reads the same live list computes the
same owners without talking to the others.

Balance: with ``S`` shards over ``W`` workers each worker owns ``floor(S/W)`` or ``ceil(S/W)``
shards, and exactly ``S mod W`` of them own the larger number. Stability: rendezvous hashing with
bounded loads. Every (shard, worker) pair has a weight, ``sha256("worker:shard")``; the pairs
are taken heaviest first, and a pair gives its shard to its worker unless the shard is taken or
the worker is full (it holds ``floor(S/W)`` and the ``S mod W`` larger shares are all handed
out, or it holds ``ceil(S/W)``). The greedy never gets stuck, and the bounds make the counts
exact: at most ``S mod W`` workers can reach ``ceil``, the rest stop at ``floor``, and the sum is
``S``.

Without the bounds this is plain rendezvous hashing (each shard to its heaviest worker), where
a join or leave moves only the shards that must move, but the spread is as uneven as chance
makes it (16 shards over 4 workers gave 0/5/5/6). With them, a shard stays where it was unless
a bound pushes it: a join or leave moves the shards that must move and now and then a few more,
as one full worker's overflow cascades. No assignment that depends on the live list alone can
always move the least possible (two shards over three workers already rule it out); measured
over random memberships of 3 to 13 workers, a join or leave moved on average 1.3 shards more
than the least possible (2.5) with 16 shards, 2.1 more (of 5.1) with 32 and 4.2 more (of 16.3)
with 99 (``tests/unit/test_assignment.py`` bounds it).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable


def _weight(worker: str, shard: str) -> bytes:
    return hashlib.sha256(f"{worker}:{shard}".encode()).digest()


def balanced_assignment(shards: Iterable[str], workers: Iterable[str]) -> dict[str, str]:
    """Shard → the worker that consumes it, over the given workers (none: no owners)."""
    shard_list = sorted(set(shards))
    worker_list = sorted(set(workers))
    if not worker_list:
        return {}
    floor, larger_left = divmod(len(shard_list), len(worker_list))
    held = dict.fromkeys(worker_list, 0)
    owners: dict[str, str] = {}
    # The worker id and shard name break ties of digests: never the order of the lists.
    pairs = sorted(((_weight(w, s), w, s) for w in worker_list for s in shard_list),
                   reverse=True)
    for _, worker, shard in pairs:
        if shard in owners:
            continue
        count = held[worker]
        if count > floor or (count == floor and larger_left == 0):
            continue
        if count == floor:
            larger_left -= 1
        held[worker] = count + 1
        owners[shard] = worker
        if len(owners) == len(shard_list):
            break
    return owners


def assignment(shards: Iterable[str], workers: Iterable[str], me: str) -> set[str]:
    """The shards ``me`` owns among ``workers`` (``me`` counts whether listed or not)."""
    owners = balanced_assignment(shards, {*workers, me})
    return {shard for shard, owner in owners.items() if owner == me}


def owner_of(shard: str, shards: Iterable[str], workers: Iterable[str]) -> str:
    """The worker that consumes ``shard`` of ``shards`` when ``workers`` take shards."""
    candidates = list(workers)
    if not candidates:
        raise ValueError(f"no live worker to own {shard!r}")
    return balanced_assignment(shards, candidates)[shard]


def owner_among(key: str, workers: Iterable[str]) -> str:
    """Plain rendezvous hashing of any ``key`` (a runtime id) over ``workers``: the heaviest."""
    return max(workers, key=lambda worker: (_weight(worker, key), worker))
