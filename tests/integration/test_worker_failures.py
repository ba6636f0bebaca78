"""Permanent failures are dead-lettered with their reason; dependency outages lose nothing."""

from __future__ import annotations

import asyncio
import json
from uuid import uuid4

import aio_pika
import asyncpg  # type: ignore[import-untyped]
import pytest
from sqlalchemy.engine import make_url

from schemas import INPUT_MESSAGE_TYPE, Accepted, InputEnvelope, Rejected
from tests.integration.conftest import (
    Stack,
    StackFactory,
    assert_applied_exactly_once,
    new_runtime_id,
)
from worker.cli.dlq import list_dead
from worker.cli.publish import build_command, build_prompt

pytestmark = pytest.mark.integration


async def _dead_letters(stack: Stack, expected: int) -> list[dict[str, object]]:
    """The dead queue's messages (left in place), once ``expected`` of them are there."""
    for _ in range(200):
        dead = await list_dead(stack.channel, limit=100, topology=stack.topology)
        if len(dead) >= expected:
            return [d.to_json() for d in dead]
        await asyncio.sleep(0.05)
    raise AssertionError(f"expected {expected} dead letters")


async def test_a_poison_message_lands_in_the_dead_queue_with_its_reason(stack: Stack) -> None:
    exchange = await stack.channel.get_exchange(stack.topology.ingress_exchange)
    await exchange.publish(
        aio_pika.Message(b"{not json", message_id=str(uuid4()), type=INPUT_MESSAGE_TYPE),
        routing_key="rt:poison",
    )
    await stack.settled(1)
    [dead] = await _dead_letters(stack, 1)
    assert "not UTF-8 JSON" in str(dead["error"])
    assert dead["routing_key"] == "rt:poison"


async def test_a_schema_violation_is_rejected_with_an_event_and_a_reply(stack: Stack) -> None:
    runtime_id = new_runtime_id()
    envelope = build_prompt(runtime_id, "x", [])
    body = json.loads(envelope.model_dump_json())
    body["input"]["header"]["durability"] = "forever"
    exchange = await stack.channel.get_exchange(stack.topology.ingress_exchange)
    await exchange.publish(
        aio_pika.Message(json.dumps(body).encode(), message_id=str(envelope.input.header.id),
                         type=INPUT_MESSAGE_TYPE),
        routing_key=runtime_id,
    )
    event = await stack.wait_for_event(
        lambda e: e.code.value == "input.rejected" and e.runtime_id == runtime_id
    )
    assert event.data["reason"]["reject_type"] == "malformed"
    assert "durability" in event.data["reason"]["detail"]
    [dead] = await _dead_letters(stack, 1)
    assert "malformed" in str(dead["error"])


async def test_an_illegal_command_is_dead_lettered_and_answered(stack: Stack) -> None:
    runtime_id = new_runtime_id()
    await stack.request(build_prompt(runtime_id, "hi", []))
    reply = await stack.request(build_command(runtime_id, "resume"))
    assert isinstance(reply.outcome, Rejected)
    assert reply.outcome.reason.reject_type == "illegal_command"
    await stack.wait_for_event(
        lambda e: e.code.value == "command.rejected" and e.runtime_id == runtime_id
    )
    [dead] = await _dead_letters(stack, 1)
    assert "illegal_command" in str(dead["error"])


async def test_input_to_a_retired_runtime_is_refused_as_not_ready(stack: Stack) -> None:
    runtime_id = new_runtime_id()
    await stack.request(build_prompt(runtime_id, "in time", []))
    await stack.request(build_command(runtime_id, "retire"))
    reply = await stack.request(build_prompt(runtime_id, "too late", []))
    assert isinstance(reply.outcome, Rejected)
    assert reply.outcome.reason.model_dump(mode="json") == {
        "reject_type": "not_ready", "state": "retired"}


async def test_connections_cut_mid_stream_lose_nothing_and_apply_nothing_twice(
    stack_factory: StackFactory, postgres_url: str
) -> None:
    # Enough deliveries that a message caught by several cuts is still not dead-lettered.
    stack: Stack = await stack_factory(delivery_limit=50)
    committer = stack.worker.committer
    assert committer is not None
    runtimes = [new_runtime_id() for _ in range(10)]
    url = make_url(postgres_url)
    admin = await asyncpg.connect(host=url.host, port=url.port, user=url.username,
                                  password=url.password, database="postgres")
    stream_done = asyncio.Event()

    async def cut_until_a_commit_fails() -> None:
        """Cut every connection of the worker's database again and again while the stream
        flows, until the worker has seen commits fail (or the stream has ended)."""
        while committer.failures < 3 and not stream_done.is_set():
            await admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = $1 AND pid <> pg_backend_pid()", url.database)
            await asyncio.sleep(0.01)

    envelopes: list[InputEnvelope] = []
    cutter = asyncio.create_task(cut_until_a_commit_fails())
    try:
        # Keep publishing until the cuts have hit commits, so they land mid-stream.
        while len(envelopes) < 200 or (committer.failures < 3 and len(envelopes) < 3000):
            envelope = build_prompt(runtimes[len(envelopes) % 10], f"m{len(envelopes)}", [])
            envelopes.append(envelope)
            await stack.publish(envelope)
        stream_done.set()
        await cutter
        await stack.settled(len(envelopes))
    finally:
        stream_done.set()
        await admin.close()
    assert committer.failures > 0, "no commit failed: the cuts missed the stream"
    store = stack.worker.store
    assert store is not None
    await assert_applied_exactly_once(store, runtimes, envelopes)
    assert await list_dead(stack.channel, limit=10, topology=stack.topology) == []


async def test_a_reply_reports_the_admission(stack: Stack) -> None:
    runtime_id = new_runtime_id()
    reply = await stack.request(build_prompt(runtime_id, "one", []))
    assert isinstance(reply.outcome, Accepted)
    assert reply.outcome.admission_seq == 1
    assert reply.runtime_id == runtime_id
