"""A worker killed with SIGKILL (or stopped with SIGTERM) mid-stream loses nothing and applies
nothing twice: unacked deliveries come back, recovery requeues interrupted runs, dedupe
recognises what was committed but not acked."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from uuid import UUID

import aio_pika
import pytest
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage

from persistence.factory import open_runtime_store
from persistence.ports import RuntimeStore
from schemas import EventEnvelope, InputPhase
from tests.faults.conftest import WorkerFactory, WorkerProcess
from tests.integration.conftest import assert_applied_exactly_once, new_runtime_id
from worker.cli.dlq import list_dead
from worker.cli.publish import build_prompt, publish_input
from worker.topology import Topology

pytestmark = [pytest.mark.integration, pytest.mark.faults]


class ConsumedWatch:
    """Which of the test's own inputs were seen in ``input.consumed`` events (events are
    at-least-once), and every event by runtime, for the failure message. Only the test's own
    ids count: the database is shared with other tests, whose events never reach this exchange
    if the worker keeps to its own runtimes, but must not be able to make the count either."""

    def __init__(self) -> None:
        self.expected: set[UUID] = set()
        self.consumed: set[UUID] = set()
        self.by_runtime: dict[str, list[str]] = {}
        self._changed = asyncio.Condition()

    async def on_event(self, message: AbstractIncomingMessage) -> None:
        event = EventEnvelope.model_validate_json(message.body)
        self.by_runtime.setdefault(event.runtime_id, []).append(
            f"{event.at.isoformat()} {event.code.value} {event.data}")
        if event.code.value == "input.consumed":
            async with self._changed:
                self.consumed.add(UUID(event.data["input_id"]))
                self._changed.notify_all()

    async def all_consumed(self, wait_seconds: float = 120) -> None:
        await self.at_least(len(self.expected), wait_seconds)

    async def at_least(self, count: int, wait_seconds: float = 120) -> None:
        async def reached() -> None:
            async with self._changed:
                await self._changed.wait_for(
                    lambda: len(self.consumed & self.expected) >= count)

        try:
            await asyncio.wait_for(reached(), wait_seconds)
        except TimeoutError:
            seen = len(self.consumed & self.expected)
            raise AssertionError(f"waited {wait_seconds}s for {count} of the test's inputs to "
                                 f"be consumed; {seen} were") from None


@pytest.fixture
async def producer(amqp_url: str) -> AsyncIterator[AbstractChannel]:
    connection = await aio_pika.connect_robust(amqp_url)
    yield await connection.channel(publisher_confirms=True)
    await connection.close()


@pytest.fixture
async def store(postgres_url: str) -> AsyncIterator[RuntimeStore]:
    opened = await open_runtime_store(postgres_url)
    yield opened
    await opened.close()


async def _watch(channel: AbstractChannel, topology: Topology) -> ConsumedWatch:
    watch = ConsumedWatch()
    queue = await channel.declare_queue(exclusive=True, auto_delete=True)
    await queue.bind(topology.events_exchange, routing_key="#")
    await queue.consume(watch.on_event, no_ack=True)
    return watch


async def _stop_mid_stream_and_restart(
    worker_factory: WorkerFactory,
    topology: Topology,
    producer: AbstractChannel,
    store: RuntimeStore,
    stop: Callable[[WorkerProcess], None],
    *,
    runtimes: int,
    inputs: int,
    stop_after: int,
) -> None:
    """Publish ``inputs`` prompts, ``stop`` the worker once ``stop_after`` are consumed, start
    a new one, and check that every input was applied exactly once."""
    first = worker_factory()
    await asyncio.to_thread(first.wait_ready)
    watch = await _watch(producer, topology)
    runtime_ids = [new_runtime_id() for _ in range(runtimes)]

    envelopes = [build_prompt(runtime_ids[i % runtimes], f"m{i}", []) for i in range(inputs)]
    watch.expected = {e.input.header.id for e in envelopes}
    for envelope in envelopes:
        await publish_input(producer, envelope, topology=topology)
    await watch.at_least(stop_after)
    await asyncio.to_thread(stop, first)

    second = worker_factory()
    await asyncio.to_thread(second.wait_ready)
    await watch.all_consumed()

    try:
        await assert_applied_exactly_once(store, runtime_ids, envelopes)
    except AssertionError:
        raise AssertionError(await _explain(store, runtime_ids, watch, [first, second])) from None
    assert await list_dead(producer, limit=10, topology=topology) == []


async def _explain(store: RuntimeStore, runtime_ids: list[str], watch: ConsumedWatch,
                   workers: list[WorkerProcess]) -> str:
    """What the store and the events say of each runtime holding an input not consumed."""
    lines = []
    for runtime_id in runtime_ids:
        records = await store.list_inputs(runtime_id)
        if all(r.phase is InputPhase.CONSUMED for r in records):
            continue
        lines.append(f"runtime {runtime_id}:")
        for record in records:
            lines.append(f"  input {record.input_id} {record.phase.value} seq "
                         f"{record.admission_seq} history:")
            lines += [f"    {h}" for h in record.history]
        lines.append("  events:")
        lines += [f"    {e}" for e in watch.by_runtime.get(runtime_id, [])]
        for worker in workers:
            mentions = [line for line in worker.log_path.read_text(errors="replace").splitlines()
                        if runtime_id in line]
            lines.append(f"  {worker.name} log lines naming it:")
            lines += [f"    {line}" for line in mentions[-30:]]
    return "\n".join(lines) or "every input consumed on a second reading"


async def test_sigkill_mid_stream_loses_nothing_and_applies_nothing_twice(
    worker_factory: WorkerFactory, worker_env: tuple[dict[str, str], Topology],
    producer: AbstractChannel, store: RuntimeStore,
) -> None:
    await _stop_mid_stream_and_restart(
        worker_factory, worker_env[1], producer, store, WorkerProcess.kill,
        runtimes=20, inputs=300, stop_after=60,
    )


async def test_sigterm_drains_and_exits_cleanly(
    worker_factory: WorkerFactory, worker_env: tuple[dict[str, str], Topology],
    producer: AbstractChannel, store: RuntimeStore,
) -> None:
    def terminate(worker: WorkerProcess) -> None:
        code = worker.terminate()
        assert code == 0, worker.log_path.read_text()

    await _stop_mid_stream_and_restart(
        worker_factory, worker_env[1], producer, store, terminate,
        runtimes=10, inputs=200, stop_after=30,
    )
