"""What a worker scenario must have left behind, read from the store and the broker.

Store: the ``inputs`` rows are exactly the published inputs, each once; per runtime, admission
order (``admission_seq``) is publish order; no ``input.accepted`` event is repeated and none is
for an unknown input; nothing was rejected. When the scenario ran until consumption: every input
is ``consumed``, every input is named by exactly one boundary receipt, no runtime is ``running``.
Broker (after the worker has exited, so unacked deliveries are back in their queues): every
shard queue and the dead queue are empty.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from collections.abc import Sequence
from uuid import UUID

import asyncpg  # type: ignore[import-untyped]
from aio_pika.abc import AbstractRobustConnection

from bench.errors import BenchFailure
from bench.services import Prefix, queue_depths
from bench.workload import Message
from schemas import EventCode, InputPhase, RuntimePhase

REJECTIONS = (EventCode.INPUT_REJECTED.value, EventCode.COMMAND_REJECTED.value)


def _show(items: Sequence[object], limit: int = 3) -> str:
    shown = ", ".join(str(i) for i in list(items)[:limit])
    return shown + (", ..." if len(items) > limit else "")


async def check_store(
    name: str, database: asyncpg.Connection, messages: Sequence[Message], *, consumed: bool
) -> None:
    published = {(m.runtime_id, m.input_id): m.index for m in messages}
    rows = await database.fetch(
        "SELECT runtime_id, input_id, admission_seq, phase FROM inputs"
    )
    stored = Counter((r["runtime_id"], r["input_id"]) for r in rows)
    missing = [key for key in published if key not in stored]
    unknown = [key for key in stored if key not in published]
    twice = [key for key, n in stored.items() if n > 1]
    if missing or unknown or twice or len(rows) != len(messages):
        raise BenchFailure(
            f"{name}: {len(rows)} input rows for {len(messages)} published: "
            f"{len(missing)} missing ({_show(missing)}), {len(unknown)} unknown, "
            f"{len(twice)} stored twice"
        )
    _check_order(name, rows, published)
    await _check_events(name, database, published)
    if consumed:
        await _check_consumed(name, database, rows, published)


def _check_order(
    name: str, rows: Sequence[asyncpg.Record], published: dict[tuple[str, UUID], int]
) -> None:
    by_runtime: dict[str, list[tuple[int, int]]] = defaultdict(list)
    for r in rows:
        by_runtime[r["runtime_id"]].append(
            (r["admission_seq"], published[(r["runtime_id"], r["input_id"])])
        )
    inverted = []
    for runtime_id, pairs in by_runtime.items():
        order = [index for _, index in sorted(pairs)]
        if order != sorted(order):
            inverted.append(runtime_id)
    if inverted:
        raise BenchFailure(
            f"{name}: admission order differs from publish order on {len(inverted)} "
            f"runtime(s): {_show(inverted)}"
        )


async def _check_events(
    name: str, database: asyncpg.Connection, published: dict[tuple[str, UUID], int]
) -> None:
    codes = dict(await database.fetch("SELECT code, count(*) FROM event_outbox GROUP BY code"))
    rejected = {code: codes[code] for code in REJECTIONS if codes.get(code)}
    if rejected:
        raise BenchFailure(f"{name}: rejections in the outbox: {rejected}")
    accepted = await database.fetch(
        "SELECT runtime_id, body FROM event_outbox WHERE code = $1",
        EventCode.INPUT_ACCEPTED.value,
    )
    ids = Counter((r["runtime_id"], _event_input_id(r["body"])) for r in accepted)
    repeated = [key for key, n in ids.items() if n > 1]
    unknown = [key for key in ids if key not in published]
    if repeated or unknown:
        raise BenchFailure(
            f"{name}: input.accepted events: {len(repeated)} input(s) accepted more than once "
            f"({_show(repeated)}), {len(unknown)} for unknown inputs"
        )


def _event_input_id(value: object) -> UUID:
    """``data.input_id`` of an event envelope (the outbox keeps the envelope as JSON)."""
    body = json.loads(value) if isinstance(value, str) else value
    data = body.get("data") if isinstance(body, dict) else None
    input_id = data.get("input_id") if isinstance(data, dict) else None
    if not isinstance(input_id, str):
        raise BenchFailure(f"an input event without data.input_id: {value!r:.200}")
    return UUID(input_id)


async def _check_consumed(
    name: str, database: asyncpg.Connection, rows: Sequence[asyncpg.Record],
    published: dict[tuple[str, UUID], int],
) -> None:
    phases = Counter(r["phase"] for r in rows)
    if set(phases) != {InputPhase.CONSUMED.value}:
        raise BenchFailure(f"{name}: inputs not all consumed: {dict(phases)}")
    receipts = await database.fetch(
        "SELECT runtime_id, contributing_input_ids FROM boundary_receipts"
    )
    named: Counter[tuple[str, UUID]] = Counter()
    for receipt in receipts:
        ids = receipt["contributing_input_ids"]
        for input_id in json.loads(ids) if isinstance(ids, str) else ids:
            named[(receipt["runtime_id"], UUID(str(input_id)))] += 1
    without = [key for key in published if named[key] == 0]
    twice = [key for key, n in named.items() if n > 1]
    unknown = [key for key in named if key not in published]
    if without or twice or unknown:
        raise BenchFailure(
            f"{name}: receipts: {len(without)} consumed input(s) without one "
            f"({_show(without)}), {len(twice)} named twice, {len(unknown)} unknown"
        )
    running = await database.fetchval(
        "SELECT count(*) FROM runtimes WHERE phase = $1", RuntimePhase.RUNNING.value
    )
    if running:
        raise BenchFailure(f"{name}: {running} runtime(s) left running")


async def check_broker(name: str, connection: AbstractRobustConnection, prefix: Prefix) -> None:
    depths = await queue_depths(connection, prefix.queues())
    dead = depths.pop(prefix.dead_queue)
    left = {queue: n for queue, n in depths.items() if n}
    if dead:
        raise BenchFailure(f"{name}: {dead} message(s) dead-lettered in {prefix.dead_queue}")
    if left:
        raise BenchFailure(
            f"{name}: {sum(left.values())} message(s) left unacked or unconsumed in the shard "
            f"queues after the worker stopped: {left}"
        )
