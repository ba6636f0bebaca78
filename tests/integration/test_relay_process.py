"""The outbox relay in a child process (``MEERKAT_OUTBOX_RELAY=process``), against the real
broker and PostgreSQL: the same messages as the inline relay, each event once; a child killed
with SIGKILL is logged, replaced, and no event is lost; a worker killed with SIGKILL takes its
child with it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aio_pika
import pytest
import structlog
from aio_pika.abc import AbstractIncomingMessage, AbstractRobustConnection

from persistence.ports import HistoryReader
from schemas import EventEnvelope
from tests.fixtures.rabbitmq import TopologyFactory
from tests.integration.conftest import Stack, StackFactory, new_runtime_id
from tests.worker_process import Running, environment
from worker.cli.publish import build_prompt, publish_envelope
from worker.relay_process import RelayProcess
from worker.topology import Topology

pytestmark = pytest.mark.integration

PROMPTS = 12
RUNTIMES = 3


class Capture:
    """Every message of the events exchange, as the broker delivered it."""

    def __init__(self) -> None:
        self.messages: list[AbstractIncomingMessage] = []
        self.arrived = asyncio.Condition()

    async def on_message(self, message: AbstractIncomingMessage) -> None:
        async with self.arrived:
            self.messages.append(message)
            self.arrived.notify_all()

    async def wait_for(self, event_ids: set[str], seconds: float = 60) -> None:
        async def all_there() -> None:
            async with self.arrived:
                await self.arrived.wait_for(
                    lambda: event_ids <= {str(m.message_id) for m in self.messages})

        try:
            await asyncio.wait_for(all_there(), seconds)
        except TimeoutError:
            missing = event_ids - {str(m.message_id) for m in self.messages}
            raise AssertionError(f"{len(missing)} event(s) never published") from None


async def capture(stack: Stack) -> Capture:
    seen = Capture()
    queue = await stack.channel.declare_queue(exclusive=True, auto_delete=True)
    await queue.bind(stack.topology.events_exchange, routing_key="#")
    await queue.consume(seen.on_message, no_ack=True)
    return seen


async def prompts_consumed(stack: Stack, runtimes: list[str], label: str) -> None:
    envelopes = [build_prompt(runtimes[i % len(runtimes)], f"{label}{i}", [])
                 for i in range(PROMPTS)]
    for envelope in envelopes:
        await stack.publish(envelope)
    for envelope in envelopes:
        await stack.wait_for_event(consumed(str(envelope.input.header.id)))


def consumed(input_id: str) -> Callable[[EventEnvelope], bool]:
    def matches(event: EventEnvelope) -> bool:
        return event.code.value == "input.consumed" and event.data["input_id"] == input_id

    return matches


def history(stack: Stack) -> HistoryReader:
    store = stack.worker.store
    assert isinstance(store, HistoryReader)
    return store


async def stored_events(stack: Stack, runtimes: list[str]) -> dict[str, EventEnvelope]:
    return {str(entry.event.event_id): entry.event for rid in runtimes
            for entry in await history(stack).read_outbox(rid)}


def relay_of(stack: Stack) -> RelayProcess:
    relay = stack.worker.outbox
    assert isinstance(relay, RelayProcess), relay
    return relay


async def test_a_relay_apart_publishes_each_event_once_as_the_inline_relay_does(
    stack_factory: StackFactory,
) -> None:
    stack: Stack = await stack_factory(outbox_relay="process")
    relay = relay_of(stack)
    assert relay.pid is not None
    assert relay.leading is True
    seen = await capture(stack)
    runtimes = [new_runtime_id() for _ in range(RUNTIMES)]

    await prompts_consumed(stack, runtimes, "apart")
    await stack.worker.run_until_idle()
    events = await stored_events(stack, runtimes)
    await seen.wait_for(set(events))

    ours = [m for m in seen.messages if str(m.message_id) in events]
    assert sorted(str(m.message_id) for m in ours) == sorted(events), "each event once"
    for message in ours:
        event = events[str(message.message_id)]
        assert message.routing_key == event.code.value
        assert message.type == event.code.value
        assert message.content_type == "application/json"
        assert message.delivery_mode == aio_pika.DeliveryMode.PERSISTENT
        assert message.headers["x-runtime-id"] == event.runtime_id
        assert EventEnvelope.model_validate_json(message.body) == event
    for rid in runtimes:
        assert all(entry.sent for entry in await history(stack).read_outbox(rid))
    registry = stack.worker.metrics.registry
    assert (registry.get_sample_value("meerkat_outbox_published_total") or 0) >= len(events)
    assert registry.get_sample_value("meerkat_outbox_backlog") == 0


async def test_a_relay_child_killed_is_logged_restarted_and_no_event_is_lost(
    stack_factory: StackFactory,
) -> None:
    stack: Stack = await stack_factory(outbox_relay="process")
    relay = relay_of(stack)
    seen = await capture(stack)
    runtimes = [new_runtime_id() for _ in range(RUNTIMES)]
    await prompts_consumed(stack, runtimes, "before")
    first = relay.pid
    assert first is not None

    with structlog.testing.capture_logs() as logs:
        os.kill(first, signal.SIGKILL)
        await prompts_consumed(stack, runtimes, "after")  # published by the next child
        await asyncio.wait_for(relay.wait_started(), 30)

    exited = [e for e in logs if e["event"] == "outbox_relay_exited"]
    assert exited, logs
    assert exited[0]["pid"] == first
    assert exited[0]["how"] == "was killed by SIGKILL"
    assert any(e["event"] == "task_failed" and e["name"] == "outbox" for e in logs)
    assert relay.pid not in (None, first)
    restarts = stack.worker.metrics.registry.get_sample_value(
        "meerkat_task_restarts_total", {"task": "outbox"})
    assert restarts == 1
    await stack.worker.run_until_idle()
    await seen.wait_for(set(await stored_events(stack, runtimes)))


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"  # a zombie is dead, waiting to be reaped



def _apart(amqp_url: str, postgres_url: str, topology: Topology) -> dict[str, Any]:
    """The settings of a worker process whose relay runs apart, on its own deployment."""
    return {
        "amqp_url": amqp_url, "database_url": postgres_url, "blob_url": "memory://",
        "topology_prefix": topology.prefix, "shards": str(topology.shards),
        "broker_delivery_limit": str(topology.delivery_limit), "http_port": "0",
        "outbox_relay": "process",
    }


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads /proc")
async def test_a_worker_killed_with_sigkill_leaves_no_relay_child(
    amqp_url: str, postgres_url: str, topology_factory: TopologyFactory, tmp_path: Path,
) -> None:
    settings = _apart(amqp_url, postgres_url, topology_factory(shards=2))
    worker = await Running.start(environment(**settings), tmp_path)
    try:
        started = await worker.wait_for_event(
            "outbox_relay_started", lambda e: e["event"] == "outbox_relay_started")
        await worker.wait_for_event("worker_started", lambda e: e["event"] == "worker_started")
        child = int(started["pid"])
        assert _alive(child)

        worker.send(signal.SIGKILL)
        assert await worker.exit_code() == -signal.SIGKILL

        for _ in range(100):
            if not _alive(child):
                break
            await asyncio.sleep(0.05)  # the kernel's doing: nothing to wait on from here
        assert not _alive(child), "the relay's child outlived its worker"
    finally:
        await worker.kill()


async def test_a_relay_apart_traces_its_publishes_from_the_same_otel_environment(
    amqp_url: str, postgres_url: str, topology_factory: TopologyFactory, tmp_path: Path,
    amqp_connection: AbstractRobustConnection,
) -> None:
    """The console exporter writes to standard output, which the child points at standard
    error: its spans are in the log, and its reports on the pipe are untouched."""
    topology = topology_factory(shards=2)
    settings = _apart(amqp_url, postgres_url, topology)
    env = {**environment(**settings), "OTEL_TRACES_EXPORTER": "console",
           "OTEL_BSP_SCHEDULE_DELAY": "100"}
    worker = await Running.start(env, tmp_path)
    try:
        await until(worker, "worker_started", lambda: any(
            e.get("event") == "worker_started" for e in log_lines(worker)))
        channel = await amqp_connection.channel(publisher_confirms=True)
        await publish_envelope(channel, build_prompt(new_runtime_id(), "traced", []),
                               topology=topology)
        await until(worker, "a span of the relay's publish", lambda: any(
            '"name": "publish input.accepted"' in line for line in worker.stderr))
        worker.send(signal.SIGTERM)
        assert await worker.exit_code() == 0
        assert not [e for e in log_lines(worker) if e["event"] == "outbox_relay_protocol_error"]
    finally:
        await worker.kill()


def log_lines(worker: Running) -> list[dict[str, Any]]:
    """The JSON log lines (the console exporter's spans are JSON over several lines)."""
    found = []
    for line in worker.stderr:
        with contextlib.suppress(ValueError):
            record = json.loads(line)
            if isinstance(record, dict) and "event" in record:
                found.append(record)
    return found


async def until(worker: Running, what: str, check: Callable[[], bool]) -> None:
    for _ in range(600):
        if check():
            return
        await asyncio.sleep(0.1)  # the worker's output is read by a task of its own
    raise AssertionError(f"not within 60s: {what}; stderr:\n" + "\n".join(worker.stderr))
