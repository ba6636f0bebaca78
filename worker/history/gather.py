"""Gathering the facts ``verify`` checks: the store, the blob store, the dead queue, the events.

All the I/O of the history checker, and only reads: the store through its ``HistoryReader``
queries, the blob store through ``exists``, the dead queue through
:func:`worker.cli.dlq.list_dead`, which takes every message with ``basic.get`` and returns them all.
The facts are a snapshot taken while the worker may still be running, so a check is only
meaningful once the worker is idle (or stopped): a message still in a shard queue is reported
as lost, a run still going as ``stuck_running``.

Nothing here is one snapshot: a message the worker settles between the reads of the store and
of the dead queue may be seen in neither. Hence the rule above: verify an idle worker.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from uuid import UUID

from aio_pika.abc import AbstractChannel

from persistence.ports import BlobStore, HistoryReader
from schemas import EventEnvelope
from worker.cli.dead_letters import DeadLetter
from worker.cli.dlq import list_dead
from worker.history.checks import blob_ids_to_check
from worker.history.facts import Facts, RuntimeFacts
from worker.history.published import PublishedRecord
from worker.topology import Topology

READ_CONCURRENCY = 8
"""Runtimes read at once; enough to hide round trips, few enough not to crowd the pool."""


async def gather_facts(
    published: Sequence[PublishedRecord],
    *,
    store: HistoryReader,
    blobs: BlobStore,
    channel: AbstractChannel,
    topology: Topology,
    events: Sequence[EventEnvelope] | None = None,
) -> Facts:
    """Everything the checks need about the runtimes ``published`` names."""
    runtimes = await read_runtimes(store, sorted({r.runtime_id for r in published}))
    dead = await read_dead_letters(channel, topology)
    facts = Facts(
        published=tuple(published),
        runtimes=runtimes,
        dead_letters=dead,
        captured_event_ids=None if events is None else captured_ids(events),
    )
    present = await present_blobs(blobs, blob_ids_to_check(facts))
    return Facts(
        published=facts.published,
        runtimes=facts.runtimes,
        dead_letters=facts.dead_letters,
        present_blobs=present,
        captured_event_ids=facts.captured_event_ids,
    )


async def read_dead_letters(channel: AbstractChannel, topology: Topology) -> tuple[DeadLetter, ...]:
    return tuple(await list_dead(channel, None, topology=topology))


async def read_runtimes(
    store: HistoryReader, runtime_ids: Sequence[str]
) -> dict[str, RuntimeFacts]:
    gate = asyncio.Semaphore(READ_CONCURRENCY)

    async def one(runtime_id: str) -> RuntimeFacts:
        async with gate:
            return await read_runtime(store, runtime_id)

    read = await asyncio.gather(*(one(runtime_id) for runtime_id in runtime_ids))
    return {facts.runtime_id: facts for facts in read}


async def read_runtime(store: HistoryReader, runtime_id: str) -> RuntimeFacts:
    # One read after another rather than a snapshot: the checker runs against an idle worker.
    return RuntimeFacts(
        runtime_id=runtime_id,
        row=await store.read_runtime_row(runtime_id),
        inputs=tuple(await store.list_inputs(runtime_id)),
        receipts=tuple(await store.read_receipts(runtime_id)),
        commands=tuple(await store.read_commands(runtime_id)),
        outbox=tuple(await store.read_outbox(runtime_id)),
    )


async def present_blobs(blobs: BlobStore, blob_ids: set[str]) -> frozenset[str]:
    gate = asyncio.Semaphore(READ_CONCURRENCY)

    async def exists(blob_id: str) -> tuple[str, bool]:
        async with gate:
            return blob_id, await blobs.exists(blob_id)

    answers = await asyncio.gather(*(exists(blob_id) for blob_id in sorted(blob_ids)))
    return frozenset(blob_id for blob_id, found in answers if found)


def captured_ids(events: Sequence[EventEnvelope]) -> frozenset[UUID]:
    return frozenset(event.event_id for event in events)
