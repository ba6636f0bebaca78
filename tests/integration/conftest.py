"""A whole worker in this process, against the real broker, PostgreSQL and S3 (moto or MinIO).

Modules written against the package's test kit use its ``meerkat_worker`` fixture
(:mod:`worker.testing`: a deployment of the test's own, database included). The ``stack``
fixtures here are the older form, kept for modules that need a worker on a shared database or a
topology made by hand: every test gets its own topology (exchange and queue names with a unique
prefix), the session's database schema with unique runtime ids, and its own bucket.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import aio_pika
import pytest
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage, AbstractRobustConnection
from pydantic import SecretStr

from persistence.ports import RuntimeStore
from schemas import CommandEnvelope, EventEnvelope, InputEnvelope, InputPhase, Reply
from tests.fixtures.rabbitmq import TopologyFactory
from worker.app import Worker
from worker.cli.publish import publish_envelope, request_reply
from worker.config import Settings
from worker.runs.executors import Executor
from worker.topology import Topology

PNG_1X1 = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
)


def new_runtime_id() -> str:
    return f"rt:test:{uuid4()}"


@dataclass
class Stack:
    """A running worker and a producer connected to the same broker."""

    worker: Worker
    topology: Topology
    connection: AbstractRobustConnection
    channel: AbstractChannel
    events: list[EventEnvelope] = field(default_factory=list)
    _event_arrived: asyncio.Condition = field(default_factory=asyncio.Condition)

    async def publish(self, envelope: InputEnvelope | CommandEnvelope) -> None:
        await publish_envelope(self.channel, envelope, topology=self.topology)

    async def request(self, envelope: InputEnvelope | CommandEnvelope) -> Reply:
        async def send(channel: AbstractChannel, reply_to: str, correlation_id: str) -> None:
            await publish_envelope(channel, envelope, reply_to=reply_to,
                                   correlation_id=correlation_id, topology=self.topology)

        return await request_reply(self.connection, send, wait_seconds=30)

    async def settled(self, count: int) -> None:
        """Until the worker has settled ``count`` deliveries for good, then until it is idle."""
        assert self.worker.committer is not None
        await asyncio.wait_for(self.worker.committer.wait_settled(count), 60)
        await asyncio.wait_for(self.worker.run_until_idle(), 60)

    async def on_event(self, message: AbstractIncomingMessage) -> None:
        async with self._event_arrived:
            self.events.append(EventEnvelope.model_validate_json(message.body))
            self._event_arrived.notify_all()

    async def wait_for_event(self, matches: Callable[[EventEnvelope], bool]) -> EventEnvelope:
        async def found() -> EventEnvelope:
            async with self._event_arrived:
                await self._event_arrived.wait_for(lambda: any(matches(e) for e in self.events))
                return next(e for e in self.events if matches(e))

        return await asyncio.wait_for(found(), 60)

    def codes(self, runtime_id: str) -> list[str]:
        return [e.code.value for e in self.events if e.runtime_id == runtime_id]


StackFactory = Callable[..., Any]


@pytest.fixture
async def stack_factory(
    amqp_url: str, postgres_url: str, s3_url: str, topology_factory: TopologyFactory
) -> AsyncIterator[StackFactory]:
    """``await make(executor=None, delivery_limit=5)`` starts a worker; all stop at teardown.

    ``make(topology=other.topology, worker_id=...)`` starts another worker on the same topology;
    other keywords are settings (``amqp_url=SecretStr(...)`` connects the worker as another
    broker user, ``database_url=SecretStr(url)`` gives it a database of its own; the stack's own
    producer connection stays the fixture's).
    """
    started: list[Stack] = []

    async def make(executor: Executor | None = None, delivery_limit: int = 5, *,
                   topology: Topology | None = None, worker_id: str | None = None,
                   serve_http: bool = False, **overrides: Any) -> Stack:
        if topology is None:
            topology = topology_factory(shards=4, delivery_limit=delivery_limit)
        values: dict[str, Any] = {
            "amqp_url": SecretStr(amqp_url), "database_url": SecretStr(postgres_url),
            "blob_url": SecretStr(s3_url),
            "shards": topology.shards, "delivery_limit": topology.delivery_limit,
            "http_port": 0, "group_commit_window_ms": 5, "shutdown_grace_seconds": 5,
        }
        settings = Settings(**{**values, **overrides})
        worker = Worker(settings, topology, executor=executor, serve_http=serve_http,
                        worker_id=worker_id)
        await worker.start()
        connection = await aio_pika.connect_robust(amqp_url)
        channel = await connection.channel(publisher_confirms=True)
        stack = Stack(worker, topology, connection, channel)
        events = await channel.declare_queue(exclusive=True, auto_delete=True)
        await events.bind(topology.events_exchange, routing_key="#")
        await events.consume(stack.on_event, no_ack=True)
        started.append(stack)
        return stack

    yield make
    for stack in started:
        await stack.worker.stop()
        await stack.connection.close()


@pytest.fixture
async def stack(stack_factory: StackFactory) -> Stack:
    result: Stack = await stack_factory()
    return result


@pytest.fixture
def png_file(tmp_path: Path) -> Path:
    path = tmp_path / "pixel.png"
    path.write_bytes(PNG_1X1)
    return path


async def assert_applied_exactly_once(
    store: RuntimeStore, runtimes: list[str], envelopes: list[InputEnvelope]
) -> None:
    """Every published input is stored once, consumed, and in exactly one receipt."""
    rows: dict[UUID, int] = {}
    receipts: dict[UUID, int] = {}
    for runtime_id in runtimes:
        for record in await store.list_inputs(runtime_id):
            assert record.phase is InputPhase.CONSUMED, record
            rows[record.input_id] = rows.get(record.input_id, 0) + 1
        for receipt in await store.list_receipts(runtime_id, limit=1000):
            for input_id in receipt.contributing_input_ids:
                receipts[input_id] = receipts.get(input_id, 0) + 1
    expected = {e.input.header.id for e in envelopes}
    assert set(rows) == expected
    assert set(rows.values()) == {1}
    assert set(receipts) == expected
    assert set(receipts.values()) == {1}, "each input in exactly one receipt"


async def assert_publish_order(
    store: RuntimeStore, runtimes: list[str], envelopes: list[InputEnvelope]
) -> None:
    """Per runtime, admission order (the admission sequence) equals publish order."""
    for runtime_id in runtimes:
        published = [e.input.header.id for e in envelopes if e.runtime_id == runtime_id]
        inputs = sorted(await store.list_inputs(runtime_id), key=lambda r: r.admission_seq)
        assert [r.input_id for r in inputs] == published, f"order of {runtime_id}"
