"""Retention in a whole worker: with short bounds, the pruner empties the outbox of sent events
and deletes consumed inputs once they leave the dedupe window, while a redelivery inside the
window is still deduplicated; the dead queue's depth and bound are exported.

The worker gets a database of its own: its pruner is not scoped to a runtime, and with a window
of seconds it would delete what other tests left in the session's database.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

import aio_pika
import pytest
from pydantic import SecretStr
from sqlalchemy import func, select

from persistence.migrate import upgrade_async
from persistence.ports import HistoryReader
from persistence.sql.store import SqlRuntimeStore
from persistence.sql.tables import event_outbox
from schemas import Accepted, Deduplicated, InputPhase
from tests.integration.conftest import Stack, StackFactory, new_runtime_id
from worker.cli.publish import build_prompt

pytestmark = pytest.mark.integration

OUTBOX_RETENTION = 1.0
DEDUPE_WINDOW = 5.0
INTERVAL = 0.25


async def eventually(condition: Callable[[], Awaitable[bool]], what: str,
                     within: float = 30.0) -> None:
    """Poll ``condition`` until it holds; fail naming ``what`` was awaited."""
    deadline = time.monotonic() + within
    while not await condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {within} s waiting for {what}")
        await asyncio.sleep(0.1)


def metric(stack: Stack, name: str, **labels: str) -> float:
    return stack.worker.metrics.registry.get_sample_value(name, labels) or 0.0


async def test_the_pruner_deletes_what_aged_out_and_keeps_dedupe_inside_the_window(
    fresh_postgres_url: str, stack_factory: StackFactory
) -> None:
    # The database first: the worker (set up after it) is stopped before the database goes.
    await upgrade_async(fresh_postgres_url)
    stack: Stack = await stack_factory(
        database_url=SecretStr(fresh_postgres_url),
        outbox_retention_seconds=OUTBOX_RETENTION, dedupe_window_seconds=DEDUPE_WINDOW,
        retention_interval_seconds=INTERVAL,
    )
    store = stack.worker.store
    assert isinstance(store, SqlRuntimeStore)
    assert isinstance(store, HistoryReader)
    runtimes = [new_runtime_id() for _ in range(2)]
    envelopes = [build_prompt(runtimes[k % 2], f"prompt {k}", [], idempotency_key=f"key-{k}")
                 for k in range(10)]
    for envelope in envelopes:
        await stack.publish(envelope)
    await stack.settled(len(envelopes))

    # Inside the window the input id is still known: a redelivery is deduplicated.
    again = await stack.request(envelopes[0])
    assert isinstance(again.outcome, Deduplicated), again.outcome
    for runtime_id in runtimes:
        assert {r.phase for r in await store.list_inputs(runtime_id)} == {InputPhase.CONSUMED}

    async def inputs_pruned() -> bool:
        return not [r for runtime_id in runtimes for r in await store.list_inputs(runtime_id)]

    async def outbox_pruned() -> bool:
        return not [e for runtime_id in runtimes for e in await store.read_outbox(runtime_id)]

    await eventually(inputs_pruned, "the pruner to delete the consumed inputs past the window")
    await eventually(outbox_pruned, "the pruner to delete the sent events of both runtimes")

    cutoff = datetime.now(UTC) - timedelta(seconds=OUTBOX_RETENTION + 4 * INTERVAL)
    async with store.engine.connect() as conn:
        old_sent = (await conn.execute(
            select(func.count()).select_from(event_outbox).where(event_outbox.c.sent_at < cutoff)
        )).scalar_one()
    assert old_sent == 0, "sent events older than the retention are left in the outbox"
    for runtime_id in runtimes:
        assert await store.read_runtime_row(runtime_id) is not None, "runtime rows are kept"
        assert await store.load_snapshot(runtime_id) is not None, "snapshots are kept"
        assert await store.list_receipts(runtime_id) == []
    assert metric(stack, "meerkat_retention_deleted_total", table="inputs") >= len(envelopes)
    assert metric(stack, "meerkat_retention_deleted_total", table="event_outbox") > 0

    # Past the window the same input is new again: that is what the window gives up.
    late = await stack.request(envelopes[0])
    assert isinstance(late.outcome, Accepted), late.outcome


async def test_the_dead_queue_depth_and_bound_are_exported(stack_factory: StackFactory) -> None:
    stack: Stack = await stack_factory(retention_interval_seconds=INTERVAL)
    bound = stack.topology.dead_letter_max_length
    assert metric(stack, "meerkat_dead_letter_queue_max_length") == bound

    exchange = await stack.channel.get_exchange(stack.topology.ingress_exchange)
    for _ in range(2):
        await exchange.publish(aio_pika.Message(b"{not json"), routing_key=new_runtime_id())

    async def measured() -> bool:
        return metric(stack, "meerkat_dead_letter_queue_messages") == 2

    await eventually(measured, "meerkat_dead_letter_queue_messages to show 2 dead letters")
