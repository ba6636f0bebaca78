"""``dlq list|replay|purge`` with filters against a real RabbitMQ: what does not match stays in
the dead queue unchanged and in order, ``--dry-run`` touches nothing, ``purge`` asks first, a
failed replay loses nothing, and the worker dates what it dead-letters."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import pty
import sys
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aio_pika
import pytest
from aio_pika.abc import AbstractChannel, AbstractRobustConnection, DeliveryMode
from pydantic import SecretStr

from schemas import INPUT_MESSAGE_TYPE
from tests.integration.conftest import Stack, new_runtime_id
from worker.cli.broker_commands import broker_command
from worker.cli.common import EXIT_FAILED, EXIT_OK
from worker.cli.dead_letters import DeadLetterFilter
from worker.cli.dlq import list_dead
from worker.cli.dlq_commands import purge, replay, show_dead
from worker.cli.publish import build_prompt
from worker.config import Settings
from worker.pipeline.settle import DEAD_LETTERED_AT_HEADER, ERROR_HEADER
from worker.topology import Topology

pytestmark = pytest.mark.integration

PROCESS_SECONDS = 60
IMAGE = '{"reject_type":"image_invalid","detail":"image bytes do not match media type"}'
FAILED = "gave up after 5 failed attempts: RuntimeError: boom"
MALFORMED = '{"reject_type":"malformed","detail":"not JSON"}'


@dataclass(frozen=True)
class Held:
    """A message of the dead queue as it is, but for the broker's own delivery count."""

    message_id: str | None
    body: bytes
    headers: dict[str, Any]
    type: str | None
    content_type: str | None
    delivery_mode: int | None


async def dead_letter(
    channel: AbstractChannel, topology: Topology, runtime_id: str, error: str,
    dead_lettered_at: datetime | None = None,
) -> str:
    """Dead-letter an input as the worker does (with its time, when given); its message id."""
    envelope = build_prompt(runtime_id, "cannot be processed", [])
    headers: dict[str, Any] = {ERROR_HEADER: error, "x-trace": "kept"}
    if dead_lettered_at is not None:
        headers[DEAD_LETTERED_AT_HEADER] = dead_lettered_at
    exchange = await channel.get_exchange(topology.dead_letter_exchange, ensure=False)
    await exchange.publish(
        aio_pika.Message(envelope.model_dump_json().encode(), content_type="application/json",
                         delivery_mode=DeliveryMode.PERSISTENT,
                         message_id=str(envelope.input.header.id), type=INPUT_MESSAGE_TYPE,
                         headers=headers),
        routing_key=runtime_id,
    )
    return str(envelope.input.header.id)


async def dead_queue(channel: AbstractChannel, topology: Topology) -> list[Held]:
    """Every message of the dead queue, oldest first, all given back."""
    queue = await channel.get_queue(topology.dead_queue, ensure=False)
    taken = []
    while (message := await queue.get(no_ack=False, fail=False)) is not None:
        taken.append(message)
    for message in taken:
        await message.nack(requeue=True)
    return [
        Held(m.message_id, m.body,
             {k: v for k, v in (m.headers or {}).items() if k != "x-delivery-count"},
             m.type, m.content_type, m.delivery_mode)
        for m in taken
    ]


async def shard_total(channel: AbstractChannel, topology: Topology) -> int:
    total = 0
    for name in topology.queue_names():
        declared = await (await channel.get_queue(name, ensure=False)).declare()
        total += declared.message_count or 0
    return total


def options(**given: Any) -> argparse.Namespace:
    values: dict[str, Any] = {"reason": None, "runtime": None, "older_than": None,
                              "newer_than": None, "limit": None, "json": False,
                              "dry_run": False, "yes": False}
    return argparse.Namespace(**(values | given))


@pytest.fixture
def settings(amqp_url: str, topology: Topology) -> Settings:
    return Settings(amqp_url=SecretStr(amqp_url), topology_prefix=topology.prefix)


@pytest.fixture
async def channel(amqp_connection: AbstractRobustConnection, topology: Topology
                  ) -> AbstractChannel:
    channel = await amqp_connection.channel()
    await topology.declare(channel)
    return channel


@pytest.fixture
async def five(channel: AbstractChannel, topology: Topology) -> list[str]:
    """Five dead letters, alternating a failure to keep and one to take ("failed attempts")."""
    now = datetime.now(UTC)
    return [
        await dead_letter(channel, topology, "rt:keep-0", IMAGE, now - timedelta(hours=3)),
        await dead_letter(channel, topology, "rt:take-1", FAILED, now - timedelta(minutes=10)),
        await dead_letter(channel, topology, "rt:keep-2", MALFORMED),
        await dead_letter(channel, topology, "rt:take-3", FAILED, now - timedelta(hours=2)),
        await dead_letter(channel, topology, "rt:keep-4", IMAGE, now - timedelta(minutes=5)),
    ]


async def test_list_filters_by_reason_runtime_and_age(
    channel: AbstractChannel, topology: Topology, five: list[str],
    settings: Settings, capsys: pytest.CaptureFixture[str],
) -> None:
    async def listed(**criteria: Any) -> list[str]:
        select = DeadLetterFilter(**criteria)
        return [d.message_id or "" for d in await list_dead(channel, None, topology=topology,
                                                           select=select)]

    hour = timedelta(hours=1)
    assert await listed(reason="image_invalid") == [five[0], five[4]]
    assert await listed(reason="failed attempts") == [five[1], five[3]]
    assert await listed(runtime="rt:keep-*") == [five[0], five[2], five[4]]
    assert await listed(runtime="rt:take-3") == [five[3]]
    assert await listed(older_than=hour) == [five[0], five[3]]  # five[2] has no time
    assert await listed(newer_than=hour) == [five[1], five[4]]
    assert await listed(reason="image_invalid", newer_than=hour) == [five[4]]
    assert await listed() == five

    code = await broker_command(show_dead(options(runtime="rt:keep-*", json=True, limit=2),
                                          settings, topology), settings)
    assert code == EXIT_OK
    shown = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [s["message_id"] for s in shown] == [five[0], five[2]]
    assert datetime.fromisoformat(shown[0]["dead_lettered_at"]) < datetime.now(UTC) - hour
    assert shown[1]["dead_lettered_at"] is None
    assert [h.message_id for h in await dead_queue(channel, topology)] == five


async def test_replay_takes_the_matching_and_leaves_the_rest_unchanged_in_order(
    channel: AbstractChannel, topology: Topology, five: list[str],
    settings: Settings, capsys: pytest.CaptureFixture[str],
) -> None:
    before = await dead_queue(channel, topology)

    code = await broker_command(replay(options(reason="failed attempts"), settings, topology),
                                settings)

    assert code == EXIT_OK
    out = capsys.readouterr().out
    assert "replayed 2 message(s)" in out
    assert "3 not matching left in place" in out
    assert await dead_queue(channel, topology) == [before[0], before[2], before[4]]
    assert await shard_total(channel, topology) == 2


async def test_replay_limit_counts_the_matching_messages(
    channel: AbstractChannel, topology: Topology, five: list[str], settings: Settings,
) -> None:
    before = await dead_queue(channel, topology)

    code = await broker_command(replay(options(runtime="rt:take-*", limit=1), settings,
                                       topology), settings)

    assert code == EXIT_OK
    assert await dead_queue(channel, topology) == [before[0], *before[2:]]
    assert await shard_total(channel, topology) == 1


async def test_replay_dry_run_lists_what_it_would_replay_and_replays_nothing(
    channel: AbstractChannel, topology: Topology, five: list[str],
    settings: Settings, capsys: pytest.CaptureFixture[str],
) -> None:
    before = await dead_queue(channel, topology)

    code = await broker_command(
        replay(options(older_than=timedelta(hours=1), dry_run=True), settings, topology),
        settings)

    assert code == EXIT_OK
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[2] for line in lines[:-1]] == [five[0], five[3]]
    assert lines[-1].startswith(f"would replay 2 message(s) from {topology.dead_queue}")
    assert await dead_queue(channel, topology) == before
    assert await shard_total(channel, topology) == 0


async def test_purge_deletes_only_the_matching(
    channel: AbstractChannel, topology: Topology, five: list[str],
    settings: Settings, capsys: pytest.CaptureFixture[str],
) -> None:
    before = await dead_queue(channel, topology)

    code = await broker_command(purge(options(reason="image_invalid", yes=True), settings,
                                      topology), settings)

    assert code == EXIT_OK
    assert capsys.readouterr().out.strip() == (
        f"purged 2 message(s) from {topology.dead_queue}; 3 not matching left in place")
    assert await dead_queue(channel, topology) == before[1:4]
    assert await shard_total(channel, topology) == 0


async def purge_on_a_terminal(
    amqp_url: str, topology: Topology, cwd: Path, answer: str, *args: str
) -> tuple[int, str, str]:
    """``meerkat-worker dlq purge ARGS`` with a terminal as standard input, answering."""
    leader, follower = pty.openpty()
    try:
        env = {**os.environ, "MEERKAT_AMQP_URL": amqp_url,
               "MEERKAT_TOPOLOGY_PREFIX": topology.prefix}
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "worker", "dlq", "purge", *args, env=env, cwd=cwd,
            stdin=follower, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        os.write(leader, f"{answer}\n".encode())
        out, err = await asyncio.wait_for(process.communicate(), PROCESS_SECONDS)
    finally:
        os.close(follower)
        os.close(leader)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_purge_asks_on_a_terminal_and_deletes_only_after_a_yes(
    amqp_url: str, channel: AbstractChannel, topology: Topology, five: list[str],
    tmp_path: Path,
) -> None:
    before = await dead_queue(channel, topology)

    code, out, err = await purge_on_a_terminal(amqp_url, topology, tmp_path, "n",
                                               "--runtime", "rt:take-*")
    assert code == EXIT_OK, err
    assert "Delete 2 dead-lettered message(s) matching --runtime rt:take-*" in err
    assert out.strip() == "nothing purged"
    assert await dead_queue(channel, topology) == before

    code, out, err = await purge_on_a_terminal(amqp_url, topology, tmp_path, "y",
                                               "--runtime", "rt:take-*")
    assert code == EXIT_OK, err
    assert out.strip().startswith(f"purged 2 message(s) from {topology.dead_queue}")
    assert await dead_queue(channel, topology) == [before[0], before[2], before[4]]


async def test_a_replay_that_cannot_publish_loses_nothing(
    amqp_connection: AbstractRobustConnection, channel: AbstractChannel, topology: Topology,
    five: list[str], settings: Settings, capsys: pytest.CaptureFixture[str],
) -> None:
    before = await dead_queue(channel, topology)
    await channel.exchange_delete(topology.ingress_exchange)

    code = await broker_command(replay(options(reason="failed attempts"), settings, topology),
                                settings)

    assert code == EXIT_FAILED
    assert "does not exist" in capsys.readouterr().err
    assert await dead_queue(await amqp_connection.channel(), topology) == before


async def test_the_worker_dates_what_it_dead_letters(stack: Stack) -> None:
    runtime_id = new_runtime_id()
    before = datetime.now(UTC).replace(microsecond=0)
    exchange = await stack.channel.get_exchange(stack.topology.ingress_exchange)
    await exchange.publish(
        aio_pika.Message(b"{not json", message_id="hostile-dated", type=INPUT_MESSAGE_TYPE,
                         content_type="application/json", delivery_mode=DeliveryMode.PERSISTENT),
        routing_key=runtime_id,
    )
    await stack.settled(1)

    channel = await stack.connection.channel()
    [letter] = await list_dead(channel, None, topology=stack.topology)
    assert letter.message_id == "hostile-dated"
    assert letter.dead_lettered_at is not None
    assert before <= letter.dead_lettered_at <= datetime.now(UTC)
    hour = timedelta(hours=1)
    select_newer = DeadLetterFilter(newer_than=hour, reason="malformed")
    assert await list_dead(channel, None, topology=stack.topology, select=select_newer) == [
        letter]
    select_older = DeadLetterFilter(older_than=hour)
    assert await list_dead(channel, None, topology=stack.topology, select=select_older) == []
