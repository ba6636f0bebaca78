"""``meerkat-worker verify`` against a real worker: a clean history passes, a tampered one fails
with the right counts.

The producer side is what a fault test does: publish, record each confirmed publish in a
``PublishedLog``, capture the events exchange with an ``EventCapture``. ``verify`` then runs as
its own process with the worker's settings in its environment, as an operator would run it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import aio_pika
import pytest
from aio_pika.abc import AbstractIncomingMessage, DeliveryMode
from pydantic import SecretStr

from persistence.ports import HistoryReader
from schemas import INPUT_MESSAGE_TYPE, InputEnvelope
from tests.fixtures.rabbitmq import TopologyFactory
from tests.integration.conftest import Stack, StackFactory, new_runtime_id
from worker.cli.broker_commands import broker_command
from worker.cli.dlq_commands import show_dead
from worker.cli.publish import build_command, build_prompt, publish_input
from worker.config import Settings
from worker.history.published import EventCapture, PublishedLog
from worker.topology import Topology

pytestmark = pytest.mark.integration

VERIFY_TIMEOUT_SECONDS = 120


@dataclass
class Capture:
    """The events exchange written to a file, and the ids seen so far (to wait on)."""

    file: EventCapture
    seen: set[UUID]
    changed: asyncio.Condition

    async def on_event(self, message: AbstractIncomingMessage) -> None:
        self.file.append(message.body)
        async with self.changed:
            self.seen.add(UUID(json.loads(message.body)["event_id"]))
            self.changed.notify_all()

    async def wait_for(self, event_ids: set[UUID]) -> None:
        async def arrived() -> None:
            async with self.changed:
                await self.changed.wait_for(lambda: event_ids <= self.seen)

        try:
            await asyncio.wait_for(arrived(), 60)
        except TimeoutError:
            missing = len(event_ids - self.seen)
            raise AssertionError(f"{missing} outbox event(s) never reached the capture") from None


@pytest.fixture
async def capture(tmp_path: Path) -> AsyncIterator[Capture]:
    with EventCapture(tmp_path / "events.jsonl") as file:
        yield Capture(file, set(), asyncio.Condition())


async def start_capture(stack: Stack, capture: Capture) -> None:
    queue = await stack.channel.declare_queue(exclusive=True, auto_delete=True)
    await queue.bind(stack.topology.events_exchange, routing_key="#")
    await queue.consume(capture.on_event, no_ack=True)


async def outbox_ids(stack: Stack, runtime_ids: list[str]) -> set[UUID]:
    store = stack.worker.store
    assert isinstance(store, HistoryReader)
    return {e.event.event_id for rid in runtime_ids for e in await store.read_outbox(rid)}


async def publish_raw(stack: Stack, exchange_name: str, body: bytes, message_id: str,
                      routing_key: str, **properties: Any) -> None:
    exchange = await stack.channel.get_exchange(exchange_name)
    await exchange.publish(
        aio_pika.Message(body, message_id=message_id, type=INPUT_MESSAGE_TYPE,
                         content_type="application/json",
                         delivery_mode=DeliveryMode.PERSISTENT, **properties),
        routing_key=routing_key,
    )


async def verify(prefix: str, env: dict[str, str], *args: str) -> tuple[int, str, str]:
    """``meerkat-worker verify ARGS`` as a process of its own: exit code, stdout, stderr."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "worker", "verify", *args,
        env={**os.environ, **env, "MEERKAT_TOPOLOGY_PREFIX": prefix},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), VERIFY_TIMEOUT_SECONDS)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


@pytest.fixture
def service_env(amqp_url: str, postgres_url: str, s3_url: str) -> dict[str, str]:
    """The worker's services, as ``verify`` finds them in its environment."""
    return {"MEERKAT_AMQP_URL": amqp_url, "MEERKAT_DATABASE_URL": postgres_url,
            "MEERKAT_BLOB_URL": s3_url}


async def publish_clean_history(
    stack: Stack, log: PublishedLog, capture: Capture, png_file: Path
) -> list[str]:
    """Six prompts (two with an image) over two runtimes, a poison message, then a command;
    until every delivery is settled and every outbox event captured."""
    runtimes = [new_runtime_id(), new_runtime_id()]
    for n in range(6):
        envelope = build_prompt(runtimes[n % 2], f"prompt {n}", [png_file] if n < 2 else [],
                                idempotency_key=f"k-{n}")
        await stack.publish(envelope)
        log.record_input(envelope)
    hostile_id = f"hostile-{uuid4()}"
    await publish_raw(stack, stack.topology.ingress_exchange, b"{not json", hostile_id,
                      runtimes[0])
    log.record_hostile(runtimes[0], hostile_id)
    await stack.settled(7)
    stop = build_command(runtimes[1], "stop")
    await stack.publish(stop)
    log.record_command(stop)
    await stack.settled(8)
    await capture.wait_for(await outbox_ids(stack, runtimes))
    return runtimes


async def test_verify_passes_a_clean_history_and_counts_what_was_tampered(
    stack_factory: StackFactory, capture: Capture, tmp_path: Path, png_file: Path,
    service_env: dict[str, str],
) -> None:
    stack: Stack = await stack_factory()
    await start_capture(stack, capture)
    published_path = tmp_path / "published.jsonl"
    log = PublishedLog(published_path)
    runtimes = await publish_clean_history(stack, log, capture, png_file)
    prefix = stack.topology.prefix
    log_args = ("--published", str(published_path))
    events_args = ("--events", str(tmp_path / "events.jsonl"))

    code, out, err = await verify(prefix, service_env, *log_args, *events_args, "--json")
    assert code == 0, out + err
    report = json.loads(out)
    assert report["ok"] is True
    totals = ("published", "accepted", "dead_lettered", "hostile", "runtimes")
    assert [report["counts"][name] for name in totals] == [8, 7, 1, 1, 2]

    # Tampering: an input that reached the dead queue without a reason (as the broker's own
    # delivery limit would leave it), and a record of a message that was never sent.
    dead_on_arrival = build_prompt(runtimes[0], "straight to the dead queue", [])
    await publish_raw(stack, stack.topology.dead_letter_exchange,
                      dead_on_arrival.model_dump_json().encode(),
                      str(dead_on_arrival.input.header.id), runtimes[0])
    log.record_input(dead_on_arrival)
    never_sent: InputEnvelope = build_prompt(runtimes[1], "never published", [])
    log.record_input(never_sent)
    log.close()

    code, out, err = await verify(prefix, service_env, *log_args, *events_args, "--json")
    assert code == 1, out + err
    report = json.loads(out)
    failed = {name: n for name, n in report["counts"].items()
              if name in report["violations"] and n}
    assert failed == {"lost": 1, "reasonless_dead_letters": 1, "valid_dead_lettered": 1}
    [lost] = report["violations"]["lost"]
    assert str(never_sent.input.header.id) in lost["subject"]

    code, out, err = await verify(prefix, service_env, *log_args)
    assert code == 1, out + err
    assert f"lost{' ' * 22}1" in out
    assert str(dead_on_arrival.input.header.id) in out
    assert out.rstrip().endswith("history has problems: 3 check(s) failed")


async def dead_letter_by_delivery_limit(amqp_url: str, topology: Topology) -> InputEnvelope:
    """An input the broker itself dead-letters: returned by its consumer past the limit."""
    connection = await aio_pika.connect_robust(amqp_url)
    try:
        channel = await connection.channel(publisher_confirms=True)
        await topology.declare(channel)
        envelope = build_prompt(new_runtime_id(), "returned until it dies", [])
        await publish_input(channel, envelope, topology=topology)
        died = asyncio.Event()

        async def refuse(message: AbstractIncomingMessage) -> None:
            await message.reject(requeue=True)

        async def seen(message: AbstractIncomingMessage) -> None:
            await message.nack(requeue=True)
            died.set()

        shard = await channel.get_queue(topology.shard_queue(0), ensure=False)
        refusing = await shard.consume(refuse)
        dead = await (await connection.channel()).get_queue(topology.dead_queue, ensure=False)
        watching = await dead.consume(seen)
        await asyncio.wait_for(died.wait(), 30)
        await dead.cancel(watching)
        await shard.cancel(refusing)
        return envelope
    finally:
        await connection.close()


async def test_a_message_the_broker_dead_lettered_is_shown_and_counted_without_a_reason(
    amqp_url: str, topology_factory: TopologyFactory, tmp_path: Path,
    service_env: dict[str, str], capsys: pytest.CaptureFixture[str],
) -> None:
    topology = topology_factory(shards=1, delivery_limit=1)
    envelope = await dead_letter_by_delivery_limit(amqp_url, topology)

    settings = Settings(amqp_url=SecretStr(amqp_url), topology_prefix=topology.prefix)
    listing = argparse.Namespace(limit=None, json=False)
    assert await broker_command(show_dead(listing, settings, topology), settings) == 0
    assert f"death=delivery_limit in {topology.shard_queue(0)}" in capsys.readouterr().out

    published_path = tmp_path / "published.jsonl"
    with PublishedLog(published_path) as log:
        log.record_input(envelope)
    code, out, err = await verify(
        topology.prefix, service_env, "--published", str(published_path), "--json"
    )
    assert code == 1, out + err
    report = json.loads(out)
    assert report["counts"]["reasonless_dead_letters"] == 1
    assert report["counts"]["valid_dead_lettered"] == 1
    assert report["counts"]["lost"] == 0
    [letter] = report["violations"]["reasonless_dead_letters"]
    assert "broker reason delivery_limit" in letter["detail"]


async def test_a_topology_that_was_never_declared_is_named(
    tmp_path: Path, service_env: dict[str, str]
) -> None:
    published_path = tmp_path / "published.jsonl"
    with PublishedLog(published_path) as log:
        log.record_hostile(new_runtime_id(), "m-1")
    code, out, err = await verify(f"t{uuid4().hex[:8]}", service_env, "--published",
                                  str(published_path))
    assert code == 1, out + err
    assert "is the topology declared?" in err
