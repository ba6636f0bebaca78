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
from schemas import EventEnvelope, InputEnvelope
from tests.faults.conftest import WorkerFactory, WorkerProcess
from tests.integration.conftest import assert_applied_exactly_once, new_runtime_id
from worker.cli.dlq import list_dead
from worker.cli.publish import build_prompt, publish_input
from worker.topology import Topology

pytestmark = [pytest.mark.integration, pytest.mark.faults]


class ConsumedWatch:
    """Distinct input ids seen in ``input.consumed`` events (events are at-least-once)."""

    def __init__(self) -> None:
        self.consumed: set[UUID] = set()
        self._changed = asyncio.Condition()

    async def on_event(self, message: AbstractIncomingMessage) -> None:
        event = EventEnvelope.model_validate_json(message.body)
        if event.code.value == "input.consumed":
            async with self._changed:
                self.consumed.add(UUID(event.data["input_id"]))
                self._changed.notify_all()

    async def at_least(self, count: int, wait_seconds: float = 120) -> None:
        async def reached() -> None:
            async with self._changed:
                await self._changed.wait_for(lambda: len(self.consumed) >= count)

        await asyncio.wait_for(reached(), wait_seconds)


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
    await queue.bind(topology.events_exchange, routing_key="input.consumed")
    await queue.consume(watch.on_event, no_ack=True)
    return watch


async def _publish_all(channel: AbstractChannel, topology: Topology,
                       runtimes: list[str], count: int) -> list[InputEnvelope]:
    envelopes = [build_prompt(runtimes[i % len(runtimes)], f"m{i}", []) for i in range(count)]
    for envelope in envelopes:
        await publish_input(channel, envelope, topology=topology)
    return envelopes


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

    envelopes = await _publish_all(producer, topology, runtime_ids, inputs)
    await watch.at_least(stop_after)
    await asyncio.to_thread(stop, first)

    second = worker_factory()
    await asyncio.to_thread(second.wait_ready)
    await watch.at_least(len(envelopes))

    await assert_applied_exactly_once(store, runtime_ids, envelopes)
    assert await list_dead(producer, limit=10, topology=topology) == []


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
