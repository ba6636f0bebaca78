"""The producer client against a real worker: every input kind and command gets its typed
outcome, an unroutable or misdirected publish is a typed error, and the blocking facade works
from code without an event loop."""

from __future__ import annotations

import asyncio

import pytest
from aio_pika.abc import AbstractRobustConnection

from schemas import Accepted, CommandCompleted, InputPhase, PeerRequest, Rejected
from tests.integration.conftest import new_runtime_id
from tests.unit.images import png_bytes
from worker.client import (
    Client,
    ExchangeMissing,
    NoReply,
    SyncClient,
    Unroutable,
    connect,
    messages,
)
from worker.testing import WorkerFactory, WorkerHarness
from worker.topology import CONSISTENT_HASH, Topology

pytestmark = pytest.mark.integration


@pytest.fixture
async def harness(meerkat_worker: WorkerFactory) -> WorkerHarness:
    return await meerkat_worker()


async def test_every_input_kind_is_answered(harness: WorkerHarness) -> None:
    runtime_id = new_runtime_id()
    envelopes = [
        messages.prompt(runtime_id, "hello", images=[png_bytes()]),
        messages.peer(runtime_id, "hi", peer_id="agent-2"),
        messages.peer(runtime_id, "please", peer_id="agent-2",
                      convention=PeerRequest(request_id="r-1", intent="summarise")),
        messages.flow_step(runtime_id, "step", flow_id="f-1", step_index=0, step_id="s-0"),
        messages.external_event(runtime_id, "build.finished", {"ok": True}, source_name="ci"),
        messages.continuation(runtime_id, "resume pending work"),
        messages.operation(runtime_id, "op-1", {"progress": 50}),
    ]
    async with await connect(harness.settings.amqp_url.get_secret_value(),
                             prefix=harness.topology.prefix) as client:
        outcomes = [await client.request(envelope) for envelope in envelopes]

    assert all(isinstance(o, Accepted) for o in outcomes), outcomes
    assert [o.input_id for o in outcomes if isinstance(o, Accepted)] == [
        e.input.header.id for e in envelopes]
    operation = outcomes[-1]
    assert isinstance(operation, Accepted)
    assert operation.phase is InputPhase.CONSUMED


async def test_commands_go_through_the_commands_exchange_and_report(
    harness: WorkerHarness,
) -> None:
    runtime_id = new_runtime_id()
    await harness.request(messages.prompt(runtime_id, "hello"))
    client = harness.client
    assert client.user_id == "guest"

    stopped = await client.request(messages.stop(runtime_id, reason="maintenance"))
    resumed = await client.request(messages.command(runtime_id, "resume"))
    illegal = await client.request(messages.resume(runtime_id))

    assert isinstance(stopped, CommandCompleted)
    assert stopped.state.value == "stopped"
    assert isinstance(resumed, CommandCompleted)
    assert resumed.state.value == "idle"
    assert isinstance(illegal, Rejected)
    assert illegal.reason.reject_type == "illegal_command"


async def test_a_prompt_without_a_bound_queue_is_unroutable(
    amqp_connection: AbstractRobustConnection, topology: Topology,
) -> None:
    channel = await amqp_connection.channel()
    await channel.declare_exchange(topology.ingress_exchange, CONSISTENT_HASH, durable=True)
    client = Client(amqp_connection, topology=topology)

    with pytest.raises(Unroutable) as raised:
        await client.prompt("rt:nowhere", "hello")

    assert raised.value.exchange == topology.ingress_exchange
    assert raised.value.routing_key == "rt:nowhere"
    assert "meerkat-worker topology declare" in str(raised.value)
    # The publish channel is still usable after a returned message.
    with pytest.raises(Unroutable):
        await client.prompt("rt:nowhere", "again")
    await client.close()


async def test_a_missing_exchange_is_named_and_the_client_recovers(
    amqp_connection: AbstractRobustConnection, topology: Topology,
) -> None:
    client = Client(amqp_connection, topology=topology)
    with pytest.raises(ExchangeMissing) as raised:
        await client.command("rt:nowhere", "stop")
    assert raised.value.exchange == topology.commands_exchange

    await topology.declare(await amqp_connection.channel())
    envelope = await client.prompt("rt:somewhere", "now it is routed")
    assert envelope.runtime_id == "rt:somewhere"
    await client.close()


async def test_no_reply_in_time_is_a_typed_error(
    amqp_connection: AbstractRobustConnection, topology: Topology,
) -> None:
    await topology.declare(await amqp_connection.channel())
    client = Client(amqp_connection, topology=topology)
    with pytest.raises(NoReply) as raised:
        await client.request(messages.prompt("rt:unanswered", "hello"), wait_seconds=0.2)
    assert raised.value.wait_seconds == 0.2
    await client.close()


async def test_the_blocking_client_works_from_a_thread(harness: WorkerHarness) -> None:
    runtime_id = new_runtime_id()
    url = harness.settings.amqp_url.get_secret_value()

    def produce() -> tuple[object, object]:
        with SyncClient(url, prefix=harness.topology.prefix) as client:
            client.prompt(runtime_id, "sent without waiting")
            accepted = client.request(messages.prompt(runtime_id, "and one answered"))
            report = client.request(messages.retire(runtime_id))
            return accepted, report

    accepted, report = await asyncio.to_thread(produce)

    assert isinstance(accepted, Accepted)
    assert accepted.admission_seq == 2
    assert isinstance(report, CommandCompleted)
    await harness.wait_for_event("input.accepted", runtime_id=runtime_id, count=2)
