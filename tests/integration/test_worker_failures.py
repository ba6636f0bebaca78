"""Permanent failures are dead-lettered with their reason; dependency outages lose nothing."""

from __future__ import annotations

import asyncio
import json
from uuid import uuid4

import asyncpg  # type: ignore[import-untyped]
import pytest
from aio_pika.abc import AbstractChannel
from sqlalchemy.engine import make_url

from schemas import Accepted, InputEnvelope, Rejected
from tests.integration.conftest import assert_applied_exactly_once, new_runtime_id
from worker.client import messages
from worker.client.wire import publish_envelope, request_reply
from worker.testing import WorkerFactory, WorkerHarness

pytestmark = pytest.mark.integration


@pytest.fixture
async def harness(meerkat_worker: WorkerFactory) -> WorkerHarness:
    return await meerkat_worker()


async def test_a_poison_message_lands_in_the_dead_queue_with_its_reason(
    harness: WorkerHarness,
) -> None:
    await harness.publish_raw(b"{not json", routing_key="rt:poison", message_id=str(uuid4()))

    await harness.wait_for_dead_letter()
    await harness.run_until_idle()
    [dead] = await harness.dead_letters()
    assert "not UTF-8 JSON" in str(dead.error)
    assert dead.routing_key == "rt:poison"


async def test_a_schema_violation_is_rejected_with_an_event_and_a_reply(
    harness: WorkerHarness,
) -> None:
    runtime_id = new_runtime_id()
    envelope = messages.prompt(runtime_id, "x")
    body = json.loads(envelope.model_dump_json())
    body["input"]["header"]["durability"] = "forever"
    await harness.publish_raw(json.dumps(body).encode(), routing_key=runtime_id,
                              message_id=str(envelope.input.header.id))

    event = await harness.wait_for_event("input.rejected", runtime_id=runtime_id)
    assert event.data["reason"]["reject_type"] == "malformed"
    assert "durability" in event.data["reason"]["detail"]
    dead = await harness.wait_for_dead_letter()
    assert "malformed" in str(dead.error)


async def test_an_illegal_command_is_dead_lettered_and_answered(harness: WorkerHarness) -> None:
    runtime_id = new_runtime_id()
    await harness.request(messages.prompt(runtime_id, "hi"))
    outcome = await harness.request(messages.resume(runtime_id))
    assert isinstance(outcome, Rejected)
    assert outcome.reason.reject_type == "illegal_command"
    await harness.wait_for_event("command.rejected", runtime_id=runtime_id)
    dead = await harness.wait_for_dead_letter()
    assert "illegal_command" in str(dead.error)


async def test_input_to_a_retired_runtime_is_refused_as_not_ready(harness: WorkerHarness) -> None:
    runtime_id = new_runtime_id()
    await harness.request(messages.prompt(runtime_id, "in time"))
    await harness.request(messages.retire(runtime_id))
    outcome = await harness.request(messages.prompt(runtime_id, "too late"))
    assert isinstance(outcome, Rejected)
    assert outcome.reason.model_dump(mode="json") == {
        "reject_type": "not_ready", "state": "retired"}


async def test_connections_cut_mid_stream_lose_nothing_and_apply_nothing_twice(
    meerkat_worker: WorkerFactory,
) -> None:
    # Enough deliveries that a message caught by several cuts is still not dead-lettered.
    harness = await meerkat_worker(delivery_limit=50)
    assert harness.worker is not None
    committer = harness.worker.committer
    assert committer is not None
    runtimes = [new_runtime_id() for _ in range(10)]
    url = make_url(harness.settings.database_url.get_secret_value())
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
            envelope = messages.prompt(runtimes[len(envelopes) % 10], f"m{len(envelopes)}")
            envelopes.append(envelope)
            await harness.send(envelope)
        stream_done.set()
        await cutter
        await harness.run_until_idle()
    finally:
        stream_done.set()
        await admin.close()
    assert committer.failures > 0, "no commit failed: the cuts missed the stream"
    store = harness.worker.store
    assert store is not None
    await assert_applied_exactly_once(store, runtimes, envelopes)
    assert await harness.dead_letters(limit=10) == []


async def test_a_reply_reports_the_admission(harness: WorkerHarness) -> None:
    runtime_id = new_runtime_id()
    envelope = messages.prompt(runtime_id, "one")

    async def publish(channel: AbstractChannel, reply_to: str, correlation_id: str) -> None:
        await publish_envelope(channel, envelope, reply_to=reply_to,
                               correlation_id=correlation_id, topology=harness.topology)

    reply = await request_reply(harness.client.connection, publish, wait_seconds=30)
    assert isinstance(reply.outcome, Accepted)
    assert reply.outcome.admission_seq == 1
    assert reply.runtime_id == runtime_id
