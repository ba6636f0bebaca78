"""The broker topology against a real RabbitMQ: declare, check, consistent-hash sharding."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import subprocess
import sys
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable

import aio_pika
import pytest
from aio_pika.abc import AbstractIncomingMessage, AbstractRobustConnection, ExchangeType
from pydantic import SecretStr

from tests.fixtures.rabbitmq import TopologyFactory
from worker.cli.broker_commands import broker_command, check_topology, declare_topology
from worker.cli.common import EXIT_FAILED
from worker.cli.publish import Unroutable, build_prompt, publish_input
from worker.config import Settings
from worker.topology import (
    CONSISTENT_HASH,
    PLUGIN_MISSING,
    Topology,
    TopologyError,
    consistent_hash_available,
    exchange_type_available,
)

pytestmark = pytest.mark.integration


async def message_counts(connection: AbstractRobustConnection, queues: list[str]) -> list[int]:
    channel = await connection.channel()
    try:
        counts = []
        for name in queues:
            queue = await channel.declare_queue(name, passive=True)
            counts.append(queue.declaration_result.message_count or 0)
        return counts
    finally:
        await channel.close()


async def test_declaring_twice_is_idempotent_and_check_finds_no_problem(
    amqp_connection: AbstractRobustConnection, topology: Topology
) -> None:
    channel = await amqp_connection.channel()
    await topology.declare(channel)
    await topology.declare(channel)

    assert await topology.check(amqp_connection) == []
    assert topology.queue_names() == [f"{topology.prefix}.ingress.{k:02d}" for k in range(4)]


async def test_check_reports_every_missing_exchange_and_queue(
    amqp_connection: AbstractRobustConnection, topology: Topology
) -> None:
    problems = await topology.check(amqp_connection)

    names = topology.exchange_names() + topology.all_queue_names()
    assert len(problems) == len(names)
    for name, problem in zip(names, problems, strict=True):
        assert name in problem
        assert "missing" in problem


async def test_check_reports_a_deleted_shard_queue(
    amqp_connection: AbstractRobustConnection, topology: Topology
) -> None:
    channel = await amqp_connection.channel()
    await topology.declare(channel)
    await channel.queue_delete(topology.shard_queue(2))

    problems = await topology.check(amqp_connection)

    assert problems == [
        f"queue {topology.shard_queue(2)} is missing; "
        "declare it with: meerkat-worker topology declare"
    ]


async def test_check_reports_queues_declared_with_another_delivery_limit(
    amqp_connection: AbstractRobustConnection, topology: Topology
) -> None:
    await topology.declare(await amqp_connection.channel())
    stricter = Topology(shards=topology.shards, delivery_limit=9, prefix=topology.prefix)

    problems = await stricter.check(amqp_connection)

    assert len(problems) == topology.shards
    assert all("differs" in p and "x-delivery-limit" in p for p in problems)


async def test_a_worker_meeting_queues_declared_with_another_delivery_limit_says_so(
    amqp_url: str, amqp_connection: AbstractRobustConnection, topology: Topology
) -> None:
    """``run`` against shard queues of an older declaration: one line naming the queue and
    the way out, exit code 1, no traceback."""
    await topology.declare(await amqp_connection.channel())
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEERKAT_")}
    env.update({
        "MEERKAT_AMQP_URL": amqp_url, "MEERKAT_TOPOLOGY_PREFIX": topology.prefix,
        "MEERKAT_SHARDS": str(topology.shards), "MEERKAT_HTTP_PORT": "0",
        "MEERKAT_BROKER_DELIVERY_LIMIT": str(topology.delivery_limit + 1),
        "MEERKAT_DATABASE_URL": "sqlite+aiosqlite:///:memory:",
        "MEERKAT_BLOB_URL": "memory://",
    })
    done = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "worker", "run"], env=env,
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert done.returncode == EXIT_FAILED, done.stderr
    assert f"queue {topology.shard_queue(0)} was declared with other arguments" in done.stderr
    assert "Traceback" not in done.stderr


async def test_check_reports_an_exchange_of_another_type(
    amqp_connection: AbstractRobustConnection, topology: Topology
) -> None:
    channel = await amqp_connection.channel()
    await topology.declare(channel)
    await channel.exchange_delete(topology.events_exchange)
    await channel.declare_exchange(topology.events_exchange, ExchangeType.FANOUT, durable=True)

    problems = await topology.check(amqp_connection)

    assert len(problems) == 1
    assert topology.events_exchange in problems[0]
    assert "differs" in problems[0]


async def test_the_plugin_probe_tells_known_from_unknown_exchange_types(
    amqp_connection: AbstractRobustConnection,
) -> None:
    assert await consistent_hash_available(amqp_connection)
    # An unknown type closes the probe's own connection, never the caller's.
    assert not await exchange_type_available(amqp_connection, "x-meerkat-no-such-type")
    assert not amqp_connection.is_closed
    channel = await amqp_connection.channel()
    await channel.close()


def test_the_missing_plugin_message_says_how_to_enable_it() -> None:
    assert PLUGIN_MISSING == (
        "the RabbitMQ plugin rabbitmq_consistent_hash_exchange is not enabled; enable it with: "
        "rabbitmq-plugins enable rabbitmq_consistent_hash_exchange"
    )


async def test_runtime_ids_spread_over_shards_and_each_stays_on_one(
    amqp_connection: AbstractRobustConnection, topology: Topology
) -> None:
    channel = await amqp_connection.channel()
    await topology.declare(channel)
    runtime_ids = [f"rt:spread:{n}" for n in range(25)]
    for _ in range(4):
        for runtime_id in runtime_ids:
            await publish_input(channel, build_prompt(runtime_id, "hi", []), topology=topology)

    counts = await message_counts(amqp_connection, topology.queue_names())
    assert sum(counts) == 100
    assert sum(1 for count in counts if count) >= 2

    shards_of = await consume_routing_keys(amqp_connection, topology, counts)
    assert set(shards_of) == set(runtime_ids)
    assert all(len(shards) == 1 for shards in shards_of.values())


async def consume_routing_keys(
    connection: AbstractRobustConnection, topology: Topology, counts: list[int]
) -> dict[str, set[str]]:
    """Runtime id -> the shard queues its messages were found in, consuming them all."""
    shards_of: dict[str, set[str]] = defaultdict(set)
    received: Counter[str] = Counter()
    done = asyncio.Event()
    expected = dict(zip(topology.queue_names(), counts, strict=True))
    channel = await connection.channel()

    def collector(queue: str) -> Callable[[AbstractIncomingMessage], Awaitable[None]]:
        async def collect(message: AbstractIncomingMessage) -> None:
            shards_of[message.routing_key or ""].add(queue)
            received[queue] += 1
            await message.ack()
            if received == Counter({q: n for q, n in expected.items() if n}):
                done.set()

        return collect

    for name in topology.queue_names():
        queue = await channel.get_queue(name, ensure=False)
        await queue.consume(collector(name))
    await asyncio.wait_for(done.wait(), 30)
    await channel.close()
    return shards_of


async def test_a_publish_nobody_can_receive_raises(
    amqp_connection: AbstractRobustConnection, topology: Topology
) -> None:
    channel = await amqp_connection.channel()
    envelope = build_prompt("rt:lost", "hello", [])

    with pytest.raises(TopologyError, match="does not exist"):
        await publish_input(channel, envelope, topology=topology)

    # The exchange alone, without shard queues bound to it: the broker returns the message.
    channel = await amqp_connection.channel()
    await channel.declare_exchange(topology.ingress_exchange, CONSISTENT_HASH, durable=True)
    with pytest.raises(Unroutable, match="no queue is bound"):
        await publish_input(channel, envelope, topology=topology)


async def test_topology_commands_declare_then_check(
    amqp_url: str,
    amqp_connection: AbstractRobustConnection,
    topology_factory: TopologyFactory,
    capsys: pytest.CaptureFixture[str],
) -> None:
    settings = Settings(amqp_url=SecretStr(amqp_url))
    topology = topology_factory(shards=2)

    assert await broker_command(check_topology(settings, topology), settings) == EXIT_FAILED
    assert f"exchange {topology.ingress_exchange} is missing" in capsys.readouterr().err

    assert await broker_command(declare_topology(settings, topology), settings) == 0
    assert await broker_command(check_topology(settings, topology), settings) == 0
    assert "topology ok" in capsys.readouterr().out
    assert await topology.check(amqp_connection) == []


async def test_topology_check_without_a_broker_exits_3(
    topology: Topology, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = Settings(amqp_url=SecretStr("amqp://guest:s3cret@127.0.0.1:1/"))

    assert await broker_command(check_topology(settings, topology), settings) == 3

    err = capsys.readouterr().err
    assert "cannot reach the broker" in err
    assert "s3cret" not in err


async def test_a_dead_queue_declared_without_its_bound_is_reported_and_refused(
    amqp_connection: AbstractRobustConnection, topology: Topology
) -> None:
    """A dead queue of an older declaration (no ``x-max-length``): ``check`` names the
    difference, ``declare`` refuses with the way out (drain, delete, declare again)."""
    channel = await amqp_connection.channel()
    await topology.declare(channel)
    await channel.queue_delete(topology.dead_queue)
    await channel.declare_queue(topology.dead_queue, durable=True,
                                arguments={"x-queue-type": "quorum"})

    problems = await topology.check(amqp_connection)

    assert len(problems) == 1
    assert problems[0].startswith(f"queue {topology.dead_queue} ")
    assert "differs" in problems[0]
    assert "x-max-length" in problems[0]
    with pytest.raises(TopologyError, match=f"queue {topology.dead_queue} was declared with"):
        await topology.declare(await amqp_connection.channel())


async def test_the_dead_queue_keeps_the_newest_dead_letters_up_to_its_bound(
    amqp_connection: AbstractRobustConnection, topology: Topology
) -> None:
    bounded = dataclasses.replace(topology, dead_letter_max_length=2)
    channel = await amqp_connection.channel(publisher_confirms=True)
    await bounded.declare(channel)
    assert bounded.dead_queue_arguments()["x-overflow"] == "drop-head"
    exchange = await channel.get_exchange(bounded.dead_letter_exchange)
    for k in range(3):
        await exchange.publish(aio_pika.Message(f"dead {k}".encode()), routing_key="rt:bound")

    assert await message_counts(amqp_connection, [bounded.dead_queue]) == [2]
    queue = await channel.get_queue(bounded.dead_queue)
    kept = [await queue.get(no_ack=True) for _ in range(2)]
    assert [m.body for m in kept] == [b"dead 1", b"dead 2"], "the oldest was dropped"
