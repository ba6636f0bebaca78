"""``send input`` / ``send command`` against a real RabbitMQ, with a stand-in replier where the
test needs an answer (the worker itself is tested elsewhere)."""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from aio_pika import Message
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage, AbstractRobustConnection
from pydantic import SecretStr

from schemas import (
    COMMAND_MESSAGE_TYPE,
    INPUT_MESSAGE_TYPE,
    Accepted,
    CommandEnvelope,
    IllegalCommand,
    ImageMediaType,
    InlineImageBlock,
    InputEnvelope,
    InputPhase,
    Outcome,
    PromptInput,
    Rejected,
    Reply,
    RuntimePhase,
    TextBlock,
)
from tests.unit.images import IMAGE_BYTES
from worker.cli.broker_commands import (
    broker_command,
    cmd_send_input,
    send_command,
    send_input,
)
from worker.cli.common import EXIT_FAILED
from worker.config import Settings
from worker.topology import Topology

pytestmark = pytest.mark.integration

Answer = Callable[[AbstractIncomingMessage], Outcome]


@pytest.fixture
def settings(amqp_url: str) -> Settings:
    return Settings(amqp_url=SecretStr(amqp_url))


@pytest.fixture
async def one_shard(
    amqp_connection: AbstractRobustConnection, topology_factory: Callable[..., Topology]
) -> Topology:
    topology = topology_factory(shards=1)
    await topology.declare(await amqp_connection.channel())
    return topology


def input_args(runtime: str, **options: Any) -> argparse.Namespace:
    values: dict[str, Any] = {"text": "hello", "image": [], "idempotency_key": None,
                              "wait": False, "timeout": None}
    return argparse.Namespace(runtime=runtime, **(values | options))


def command_args(runtime: str, name: str, **options: Any) -> argparse.Namespace:
    values: dict[str, Any] = {"reason": None, "input_id": None, "wait": False, "timeout": None}
    return argparse.Namespace(runtime=runtime, name=name, **(values | options))


async def next_message(channel: AbstractChannel, queue_name: str) -> AbstractIncomingMessage:
    arrived: asyncio.Future[AbstractIncomingMessage] = asyncio.get_running_loop().create_future()

    async def take(message: AbstractIncomingMessage) -> None:
        await message.ack()
        if not arrived.done():
            arrived.set_result(message)

    queue = await channel.get_queue(queue_name, ensure=False)
    consumer = await queue.consume(take)
    try:
        return await asyncio.wait_for(arrived, 30)
    finally:
        await queue.cancel(consumer)


@pytest.fixture
async def replier(
    amqp_connection: AbstractRobustConnection,
) -> AsyncIterator[Callable[[Topology, Answer], Any]]:
    """``await start(topology, answer)``: answers every request on the shard queue."""
    channel = await amqp_connection.channel()

    async def start(topology: Topology, answer: Answer) -> None:
        async def reply(message: AbstractIncomingMessage) -> None:
            body = Reply(
                correlation_id=message.correlation_id,
                runtime_id=json.loads(message.body)["runtime_id"],
                outcome=answer(message),
            )
            await channel.default_exchange.publish(
                Message(body.model_dump_json().encode(), correlation_id=message.correlation_id,
                        content_type="application/json"),
                routing_key=message.reply_to or "",
            )
            await message.ack()

        queue = await channel.get_queue(topology.shard_queue(0), ensure=False)
        await queue.consume(reply)

    yield start
    await channel.close()


async def test_send_input_publishes_a_prompt_and_prints_its_id(
    settings: Settings,
    one_shard: Topology,
    amqp_connection: AbstractRobustConnection,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    image = tmp_path / "pixel.bin"
    image.write_bytes(IMAGE_BYTES[ImageMediaType.PNG])
    args = input_args("rt:send-1", image=[image], idempotency_key="k-1")

    assert await broker_command(send_input(args, settings, one_shard), settings) == 0

    printed = capsys.readouterr().out.strip()
    message = await next_message(await amqp_connection.channel(), one_shard.shard_queue(0))
    assert message.message_id == printed
    assert message.type == INPUT_MESSAGE_TYPE
    assert message.content_type == "application/json"
    assert message.delivery_mode == 2
    assert message.routing_key == "rt:send-1"
    assert message.exchange == one_shard.ingress_exchange
    assert message.reply_to is None
    envelope = InputEnvelope.model_validate_json(message.body)
    assert isinstance(envelope.input, PromptInput)
    assert envelope.input.header.id == UUID(printed)
    assert envelope.input.header.idempotency_key == "k-1"
    assert envelope.input.header.id.version == 7
    assert isinstance(envelope.input.content, list)
    text, picture = envelope.input.content
    assert text == TextBlock(text="hello")
    assert isinstance(picture, InlineImageBlock)
    assert picture.media_type == "image/png"
    assert base64.b64decode(picture.data) == image.read_bytes()


async def test_send_input_refuses_a_file_that_is_no_image(
    settings: Settings, one_shard: Topology, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("not an image")

    args = input_args("rt:send-2", image=[notes])
    assert await broker_command(send_input(args, settings, one_shard), settings) == 2
    assert "not a PNG, JPEG, GIF or WebP image" in capsys.readouterr().err


async def test_send_input_wait_without_a_worker_times_out(
    settings: Settings, one_shard: Topology, capsys: pytest.CaptureFixture[str]
) -> None:
    args = input_args("rt:send-3", wait=True, timeout=0.2)

    assert await broker_command(send_input(args, settings, one_shard), settings) == 3

    captured = capsys.readouterr()
    UUID(captured.out.strip())
    assert "no reply within 0.2s" in captured.err


async def test_send_input_wait_prints_the_outcome(
    settings: Settings,
    one_shard: Topology,
    replier: Callable[[Topology, Answer], Any],
    capsys: pytest.CaptureFixture[str],
) -> None:
    def accept(message: AbstractIncomingMessage) -> Outcome:
        return Accepted(input_id=UUID(message.message_id), phase=InputPhase.QUEUED,
                        lane=None, admission_seq=1)

    await replier(one_shard, accept)
    args = input_args("rt:send-4", wait=True, timeout=30)

    assert await broker_command(send_input(args, settings, one_shard), settings) == 0

    input_id, outcome = capsys.readouterr().out.strip().splitlines()
    assert json.loads(outcome) == {"outcome_type": "accepted", "input_id": input_id,
                                   "phase": "queued", "lane": None, "admission_seq": 1}


async def test_send_command_wait_exits_4_when_rejected(
    settings: Settings,
    one_shard: Topology,
    replier: Callable[[Topology, Answer], Any],
    amqp_connection: AbstractRobustConnection,
    capsys: pytest.CaptureFixture[str],
) -> None:
    commands: list[CommandEnvelope] = []

    def refuse(message: AbstractIncomingMessage) -> Outcome:
        assert message.type == COMMAND_MESSAGE_TYPE
        assert (message.reply_to or "").startswith("amq.rabbitmq.reply-to.")
        commands.append(CommandEnvelope.model_validate_json(message.body))
        return Rejected(reason=IllegalCommand(command_type="resume", state=RuntimePhase.IDLE,
                                              detail="not stopped"))

    await replier(one_shard, refuse)
    args = command_args("rt:send-5", "resume", reason="try", wait=True, timeout=30)

    assert await broker_command(send_command(args, settings, one_shard), settings) == 4

    command_id, outcome = capsys.readouterr().out.strip().splitlines()
    assert json.loads(outcome)["reason"]["reject_type"] == "illegal_command"
    [envelope] = commands
    assert envelope.runtime_id == "rt:send-5"
    assert str(envelope.command.command_id) == command_id
    assert envelope.command.command_type == "resume"
    assert envelope.command.reason == "try"


async def test_send_command_publishes_an_abandon_input(
    settings: Settings,
    one_shard: Topology,
    amqp_connection: AbstractRobustConnection,
    capsys: pytest.CaptureFixture[str],
) -> None:
    target = UUID("01900000-0000-7000-8000-000000000001")
    args = command_args("rt:send-6", "abandon_input", input_id=target)

    assert await broker_command(send_command(args, settings, one_shard), settings) == 0

    message = await next_message(await amqp_connection.channel(), one_shard.shard_queue(0))
    assert message.message_id == capsys.readouterr().out.strip()
    assert message.type == COMMAND_MESSAGE_TYPE
    # Through the commands exchange, with the CLI's broker user as user_id.
    assert message.exchange == one_shard.commands_exchange
    assert message.user_id == "guest"
    envelope = CommandEnvelope.model_validate_json(message.body)
    assert envelope.command.command_type == "abandon_input"
    assert envelope.command.input_id == target


async def test_send_command_carries_the_abandon_reason(
    settings: Settings,
    one_shard: Topology,
    amqp_connection: AbstractRobustConnection,
    capsys: pytest.CaptureFixture[str],
) -> None:
    args = command_args("rt:send-10", "abandon_pending", abandon_reason="stopped")

    assert await broker_command(send_command(args, settings, one_shard), settings) == 0

    message = await next_message(await amqp_connection.channel(), one_shard.shard_queue(0))
    assert message.message_id == capsys.readouterr().out.strip()
    envelope = CommandEnvelope.model_validate_json(message.body)
    assert envelope.command.command_type == "abandon_pending"
    assert envelope.command.abandon_reason == "stopped"


async def test_send_command_abandon_input_needs_the_input_id(
    settings: Settings, one_shard: Topology, capsys: pytest.CaptureFixture[str]
) -> None:
    args = command_args("rt:send-7", "abandon_input")

    assert await broker_command(send_command(args, settings, one_shard), settings) == 2
    assert "input_id" in capsys.readouterr().err


async def test_send_without_a_declared_topology_says_to_declare_it(
    settings: Settings, topology: Topology, capsys: pytest.CaptureFixture[str]
) -> None:
    args = input_args("rt:send-8")

    assert await broker_command(send_input(args, settings, topology), settings) == EXIT_FAILED
    assert "meerkat-worker topology declare" in capsys.readouterr().err


async def test_send_without_a_broker_exits_3(capsys: pytest.CaptureFixture[str]) -> None:
    settings = Settings(amqp_url=SecretStr("amqp://guest:s3cret@127.0.0.1:1/"))

    # The handler runs its own event loop, so it gets a thread of its own.
    code = await asyncio.to_thread(cmd_send_input, input_args("rt:send-9"), settings)

    assert code == 3
    err = capsys.readouterr().err
    assert "cannot reach the broker" in err
    assert "s3cret" not in err
