"""Broker authorization against the real broker: who may publish where, what the worker refuses,
and where it replies (README "Security").

Broker users are made with ``rabbitmqctl`` on the local broker (one per test, unique names,
deleted at teardown), so these tests run only when the test broker is the local one.
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from urllib.parse import urlsplit
from uuid import uuid4

import aio_pika
import pytest
from aio_pika.abc import AbstractChannel, AbstractConnection
from aiormq.exceptions import ChannelAccessRefused
from pydantic import SecretStr

from schemas import (
    COMMAND_MESSAGE_TYPE,
    Accepted,
    CommandCompleted,
    CommandEnvelope,
    InputEnvelope,
    Rejected,
    Reply,
    RuntimePhase,
    Unauthorized,
)
from tests.fixtures.rabbitmq import TopologyFactory
from tests.integration.conftest import Stack, StackFactory, new_runtime_id
from worker.cli.dlq import list_dead, replay_dead
from worker.cli.publish import (
    build_command,
    build_prompt,
    publish_command,
    publish_confirmed,
    publish_input,
    request_reply,
)
from worker.topology import Topology

pytestmark = pytest.mark.integration

LOCAL_HOSTS = ("127.0.0.1", "localhost")


@dataclass(frozen=True)
class BrokerUser:
    name: str
    url: str


UserFactory = Callable[..., Awaitable[BrokerUser]]


async def _ctl(*args: str) -> None:
    process = await asyncio.create_subprocess_exec(
        "rabbitmqctl", "-q", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    if process.returncode != 0:
        raise RuntimeError(f"rabbitmqctl {args[0]} failed: {(out + err).decode()!r}")


@pytest.fixture
async def broker_user(amqp_url: str) -> AsyncIterator[UserFactory]:
    """``await make(write=REGEX, configure="^$", read="^$")``: a broker user of its own on
    vhost ``/``, deleted after the test."""
    parts = urlsplit(amqp_url)
    if shutil.which("rabbitmqctl") is None or parts.hostname not in LOCAL_HOSTS:
        pytest.skip("broker users are made with rabbitmqctl on the local broker")
    made: list[str] = []

    async def make(write: str, configure: str = "^$", read: str = "^$") -> BrokerUser:
        name, password = f"meerkat-test-{uuid4().hex[:12]}", uuid4().hex
        await _ctl("add_user", name, password)
        made.append(name)
        await _ctl("set_permissions", "-p", "/", name, configure, write, read)
        return BrokerUser(name, f"amqp://{name}:{password}@{parts.hostname}:{parts.port}/")

    yield make
    for name in made:
        await _ctl("delete_user", name)


def only(name: str) -> str:
    return f"^{re.escape(name)}$"


async def request(
    connection: AbstractConnection, envelope: InputEnvelope | CommandEnvelope,
    topology: Topology, *, user_id: str | None = None, exchange: str | None = None,
) -> Reply:
    """Publish with direct reply-to and wait for the reply: a command to the commands exchange
    (or to ``exchange``) with ``user_id``."""
    async def send(channel: AbstractChannel, reply_to: str, correlation_id: str) -> None:
        if isinstance(envelope, InputEnvelope):
            await publish_input(channel, envelope, reply_to=reply_to,
                                correlation_id=correlation_id, topology=topology)
        elif exchange is None:
            await publish_command(channel, envelope, reply_to=reply_to,
                                  correlation_id=correlation_id, topology=topology,
                                  user_id=user_id)
        else:
            message = aio_pika.Message(
                envelope.model_dump_json().encode(), message_id=str(envelope.command.command_id),
                type=COMMAND_MESSAGE_TYPE, content_type="application/json",
                reply_to=reply_to, correlation_id=correlation_id, user_id=user_id,
            )
            await publish_confirmed(channel, message, envelope.runtime_id, exchange=exchange)

    return await request_reply(connection, send, wait_seconds=30)


async def phase(stack: Stack, runtime_id: str) -> RuntimePhase | None:
    assert stack.worker.store is not None
    row = (await stack.worker.store.load_runtime(runtime_id)).row
    return None if row is None else row.phase


def unauthorized(reply: Reply) -> str:
    assert isinstance(reply.outcome, Rejected), reply.outcome
    assert isinstance(reply.outcome.reason, Unauthorized), reply.outcome.reason
    return reply.outcome.reason.detail


def refused_replies(stack: Stack) -> float | None:
    return stack.worker.metrics.registry.get_sample_value("meerkat_replies_refused_total")


async def test_a_producer_of_inputs_cannot_publish_commands_but_can_publish_inputs(
    stack_factory: StackFactory, broker_user: UserFactory
) -> None:
    stack: Stack = await stack_factory()
    producer = await broker_user(write=only(stack.topology.ingress_exchange))
    runtime_id = new_runtime_id()
    connection = await aio_pika.connect(producer.url)
    try:
        channel = await connection.channel(publisher_confirms=True)
        with pytest.raises(ChannelAccessRefused, match="ACCESS_REFUSED"):
            await publish_command(channel, build_command(runtime_id, "destroy"),
                                  topology=stack.topology)

        # Direct reply-to needs no permission beyond writing to the ingress exchange.
        reply = await request(connection, build_prompt(runtime_id, "hi", []), stack.topology)
    finally:
        await connection.close()
    assert isinstance(reply.outcome, Accepted)
    assert await phase(stack, runtime_id) is not RuntimePhase.DESTROYED


async def test_a_command_published_to_the_ingress_exchange_is_dead_lettered_as_unauthorized(
    stack_factory: StackFactory,
) -> None:
    stack: Stack = await stack_factory()
    topology = stack.topology
    runtime_id = new_runtime_id()
    assert isinstance((await stack.request(build_prompt(runtime_id, "hi", []))).outcome, Accepted)
    await stack.settled(1)
    before = await phase(stack, runtime_id)
    destroy = build_command(runtime_id, "destroy")

    reply = await request(stack.connection, destroy, topology,
                          exchange=topology.ingress_exchange)

    assert f"must be published to {topology.commands_exchange}" in unauthorized(reply)
    await stack.settled(2)
    [dead] = await list_dead(stack.channel, topology=topology)
    assert dead.message_id == str(destroy.command.command_id)
    assert dead.runtime_id == runtime_id
    assert dead.error is not None
    assert json.loads(dead.error)["reject_type"] == "unauthorized"
    rejected = await stack.wait_for_event(
        lambda e: e.code.value == "command.rejected" and e.runtime_id == runtime_id)
    assert rejected.data["reason"]["reject_type"] == "unauthorized"
    assert await phase(stack, runtime_id) == before
    assert before is not RuntimePhase.DESTROYED

    # Replayed, the command goes through the commands exchange and is applied.
    assert await replay_dead(stack.channel, topology=topology) == 1
    await stack.wait_for_event(
        lambda e: e.code.value == "command.completed" and e.runtime_id == runtime_id)
    assert await phase(stack, runtime_id) is RuntimePhase.DESTROYED
    assert await list_dead(stack.channel, topology=topology) == []


async def test_an_input_published_to_the_commands_exchange_is_dead_lettered_as_unauthorized(
    stack_factory: StackFactory,
) -> None:
    stack: Stack = await stack_factory()
    topology = stack.topology
    runtime_id = new_runtime_id()
    prompt = build_prompt(runtime_id, "hi", [])
    await publish_input(stack.channel, prompt, topology=topology)  # the usual way
    commands = await stack.channel.get_exchange(topology.commands_exchange, ensure=False)
    other = build_prompt(runtime_id, "through the wrong door", [])
    await publish_input(commands, other, topology=topology)

    await stack.settled(2)

    [dead] = await list_dead(stack.channel, topology=topology)
    assert dead.message_id == str(other.input.header.id)
    assert dead.error is not None
    assert "an input must be published to" in json.loads(dead.error)["detail"]
    assert stack.worker.store is not None
    stored = {r.input_id for r in await stack.worker.store.list_inputs(runtime_id)}
    assert stored == {prompt.input.header.id}


async def test_an_allow_listed_command_is_applied_only_from_a_listed_user(
    stack_factory: StackFactory, broker_user: UserFactory, topology_factory: TopologyFactory
) -> None:
    topology = topology_factory(shards=4)
    operator = await broker_user(write=only(topology.commands_exchange))
    stack: Stack = await stack_factory(topology=topology,
                                       command_users={"destroy": [operator.name]})
    runtime_id = new_runtime_id()
    assert isinstance((await stack.request(build_prompt(runtime_id, "hi", []))).outcome, Accepted)

    as_guest = await request(stack.connection, build_command(runtime_id, "destroy"), topology,
                             user_id="guest")
    anonymous = await request(stack.connection, build_command(runtime_id, "destroy"), topology)

    assert unauthorized(as_guest) == "destroy is not allowed for user 'guest'"
    assert unauthorized(anonymous) == "destroy is not allowed for a publisher with no user_id"
    assert await phase(stack, runtime_id) is not RuntimePhase.DESTROYED
    stopped = await request(stack.connection, build_command(runtime_id, "stop"), topology)
    assert isinstance(stopped.outcome, CommandCompleted)  # no entry for stop: anyone may

    connection = await aio_pika.connect(operator.url)
    try:
        applied = await request(connection, build_command(runtime_id, "destroy"), topology,
                                user_id=operator.name)
    finally:
        await connection.close()
    assert isinstance(applied.outcome, CommandCompleted), applied.outcome
    assert applied.outcome.state is RuntimePhase.DESTROYED
    dead = await list_dead(stack.channel, topology=topology)
    assert len(dead) == 2
    assert all(d.error and json.loads(d.error)["reject_type"] == "unauthorized" for d in dead)


async def test_a_reply_to_a_queue_outside_the_allowed_names_is_not_published(
    stack_factory: StackFactory,
) -> None:
    prefix = f"replies-{uuid4().hex[:8]}."
    stack: Stack = await stack_factory(reply_queue_prefix=prefix)
    runtime_id = new_runtime_id()
    elsewhere = await stack.channel.declare_queue(f"elsewhere-{uuid4().hex}", exclusive=True)
    allowed = await stack.channel.declare_queue(f"{prefix}client", exclusive=True)
    first = build_prompt(runtime_id, "one", [])
    second = build_prompt(runtime_id, "two", [])

    await publish_input(stack.channel, first, reply_to=elsewhere.name, correlation_id="c-1",
                        topology=stack.topology)
    await stack.settled(1)

    assert refused_replies(stack) == 1
    assert (await elsewhere.declare()).message_count == 0
    await stack.wait_for_event(lambda e: e.code.value == "input.accepted"
                               and e.data.get("input_id") == str(first.input.header.id))

    await publish_input(stack.channel, second, reply_to=allowed.name, correlation_id="c-2",
                        topology=stack.topology)
    await stack.settled(2)

    reply = await allowed.get(timeout=5, fail=True)
    assert reply is not None
    assert Reply.model_validate_json(reply.body).correlation_id == "c-2"
    assert refused_replies(stack) == 1
    assert (await elsewhere.declare()).message_count == 0
    assert stack.worker.store is not None
    stored = {r.input_id for r in await stack.worker.store.list_inputs(runtime_id)}
    assert stored == {first.input.header.id, second.input.header.id}


async def test_the_least_privileges_of_the_readme_are_enough_for_every_role(
    stack_factory: StackFactory, broker_user: UserFactory, topology_factory: TopologyFactory
) -> None:
    topology = topology_factory(shards=4)
    p = re.escape(topology.prefix)
    worker = await broker_user(configure=f"^{p}\\.", write=f"^({p}\\..*|amq\\.default)$",
                               read=f"^{p}\\.")
    producer = await broker_user(write=f"^{p}\\.ingress$")
    operator = await broker_user(write=f"^{p}\\.commands$")
    stack: Stack = await stack_factory(topology=topology, amqp_url=SecretStr(worker.url),
                                       command_users={"destroy": [operator.name]})
    runtime_id = new_runtime_id()

    connection = await aio_pika.connect(producer.url)
    try:
        accepted = await request(connection, build_prompt(runtime_id, "hi", []), topology)
    finally:
        await connection.close()
    connection = await aio_pika.connect(operator.url)
    try:
        destroyed = await request(connection, build_command(runtime_id, "destroy"), topology,
                                  user_id=operator.name)
    finally:
        await connection.close()

    assert isinstance(accepted.outcome, Accepted)
    assert isinstance(destroyed.outcome, CommandCompleted)
    assert await phase(stack, runtime_id) is RuntimePhase.DESTROYED
