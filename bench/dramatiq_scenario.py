"""The ``dramatiq`` scenario: the same messages through Dramatiq, one INSERT per message.

A common way to write such a consumer, measured beside the raw baseline: Dramatiq's
``RabbitmqBroker`` and an actor that inserts each message in a transaction of its own
(:mod:`bench.dramatiq_actor`, run as a subprocess: one process, 8 worker threads). The queues
are the broker's own: Dramatiq declares ``<queue>`` (durable, classic), ``<queue>.DQ`` (delays)
and ``<queue>.XQ`` (dead letters), here before anything is published. The same prompts as
``raw`` (``--inputs`` over ``--runtimes``), each as the actor's arguments (input id, runtime id,
the envelope's JSON) in a Dramatiq message, are published to the queue with confirms before the
consumer starts. Timed from the first to the last insert (``clock_timestamp()`` of each row,
i.e. from the first delivery's insert to the last commit). Checks: exactly the published ids in
the table, and, after the consumer has exited (code 0), nothing left in the three queues.

Needs the ``bench`` extra (``pip install -e '.[bench]'``); without it the scenario is skipped,
which is not a failure: :func:`missing` names what is not installed.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import sys
import tempfile
from pathlib import Path

import asyncpg  # type: ignore[import-untyped]
from aio_pika import DeliveryMode
from aio_pika import Message as AmqpMessage
from aio_pika.abc import AbstractChannel, AbstractRobustConnection
from pamqp.commands import Basic

from bench.errors import BenchFailure
from bench.report import Row
from bench.services import (
    Prefix,
    connect_broker,
    delete_broker_names,
    fresh_database,
    queue_depths,
    wait_for_count,
)
from bench.session import Context, keep_log
from bench.workerproc import REPO_ROOT
from bench.workload import PUBLISH_WINDOW, Message, prompts

NEEDED = ("dramatiq", "pika", "psycopg")
STOP_SECONDS = 60.0


def missing() -> str | None:
    """Why the scenario cannot run here, or ``None`` when it can."""
    absent = [name for name in NEEDED if importlib.util.find_spec(name) is None]
    if not absent:
        return None
    return f"{', '.join(absent)} not installed (pip install -e '.[bench]')"


def _declare(amqp_url: str, queue: str) -> None:
    """Dramatiq declares its queues itself, as its consumer would."""
    from dramatiq.brokers.rabbitmq import RabbitmqBroker

    broker = RabbitmqBroker(url=amqp_url)
    try:
        broker.declare_queue(queue, ensure=True)
    finally:
        broker.close()


async def _publish(channel: AbstractChannel, queue: str, messages: list[Message]) -> None:
    from dramatiq import Message as DramatiqMessage

    from bench.dramatiq_actor import ACTOR

    async def one(message: Message) -> None:
        body = DramatiqMessage(queue_name=queue, actor_name=ACTOR,
                               args=(str(message.input_id), message.runtime_id,
                                     message.body.decode("utf-8")),
                               kwargs={}, options={}).encode()
        confirm = await channel.default_exchange.publish(
            AmqpMessage(body, delivery_mode=DeliveryMode.PERSISTENT), queue, mandatory=True)
        if not isinstance(confirm, Basic.Ack):
            raise BenchFailure(f"the broker did not take message {message.index}: {confirm!r}")

    for start in range(0, len(messages), PUBLISH_WINDOW):
        await asyncio.gather(*(one(m) for m in messages[start:start + PUBLISH_WINDOW]))


def queues_of(queue: str) -> list[str]:
    from dramatiq.common import dq_name, xq_name

    return [queue, dq_name(queue), xq_name(queue)]


async def run_dramatiq(context: Context, *, inputs: int, runtimes: int) -> Row:
    from bench.dramatiq_actor import DEFAULT_THREADS, TABLE

    messages = prompts(inputs, runtimes)
    queue = f"{Prefix.fresh(shards=0).name}.dramatiq"
    names = queues_of(queue)
    connection = await connect_broker(context.amqp_url)
    try:
        with tempfile.TemporaryDirectory(prefix="bench-dramatiq-") as folder:
            log_path = Path(folder) / "dramatiq.log"
            try:
                async with fresh_database(context.admin_url) as url:
                    database = await asyncpg.connect(url)
                    try:
                        await database.execute(TABLE)
                        await asyncio.to_thread(_declare, context.amqp_url, queue)
                        channel = await connection.channel(publisher_confirms=True)
                        await _publish(channel, queue, messages)
                        await channel.close()
                        depth = (await queue_depths(connection, [queue]))[queue]
                        if depth != len(messages):
                            raise BenchFailure(f"dramatiq: {depth} messages in {queue} after "
                                               f"publishing {len(messages)}")
                        await _consume(context, url, queue, DEFAULT_THREADS, database,
                                       len(messages), log_path)
                        span = await database.fetchrow(
                            "SELECT min(received_at) AS first, max(received_at) AS last "
                            "FROM bench_messages")
                        await _check(database, messages, connection, names)
                    finally:
                        await database.close()
            finally:
                keep_log(log_path, context.logs, "dramatiq")
    finally:
        with contextlib.suppress(Exception):
            await delete_broker_names(connection, names, [])
        await connection.close()
    seconds = (span["last"] - span["first"]).total_seconds()
    if seconds <= 0:
        raise BenchFailure("dramatiq: first and last inserts at the same time")
    return Row("dramatiq", f"Dramatiq actor, 1 INSERT/message, {DEFAULT_THREADS} threads",
               len(messages), seconds, len(messages) / seconds, "msg/s",
               details={"threads": DEFAULT_THREADS, "processes": 1,
                        "queue": "classic, declared by Dramatiq"})


async def _consume(context: Context, url: str, queue: str, threads: int,
                   database: asyncpg.Connection, expected: int, log_path: Path) -> None:
    """Run the consumer until every row is in, then SIGTERM; it must exit with code 0."""
    with log_path.open("ab") as log:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bench.dramatiq_actor", "--amqp-url", context.amqp_url,
            "--database-url", url, "--queue", queue, "--threads", str(threads),
            cwd=REPO_ROOT, stdout=log, stderr=asyncio.subprocess.STDOUT,
        )
    try:
        def alive() -> None:
            if process.returncode is not None:
                raise BenchFailure(f"the Dramatiq consumer exited with code "
                                   f"{process.returncode}; log: {_tail(log_path)}")

        async def count() -> int:
            value: int = await database.fetchval("SELECT count(*) FROM bench_messages")
            return value

        await wait_for_count("rows inserted (dramatiq)", count, expected,
                             stall_seconds=context.stall_seconds, alive=alive)
        process.terminate()
        try:
            code = await asyncio.wait_for(process.wait(), STOP_SECONDS)
        except TimeoutError:
            raise BenchFailure("the Dramatiq consumer did not exit after SIGTERM") from None
        if code != 0:
            raise BenchFailure(f"the Dramatiq consumer exited with code {code} after SIGTERM; "
                               f"log: {_tail(log_path)}")
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


def _tail(path: Path, lines: int = 5) -> str:
    if not path.exists():
        return "(no log)"
    return " | ".join(path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])


async def _check(database: asyncpg.Connection, messages: list[Message],
                 connection: AbstractRobustConnection, names: list[str]) -> None:
    rows = await database.fetch("SELECT message_id FROM bench_messages")
    stored = {row["message_id"] for row in rows}
    published = {m.input_id for m in messages}
    if len(rows) != len(messages) or stored != published:
        raise BenchFailure(
            f"dramatiq: {len(rows)} rows for {len(messages)} published, "
            f"{len(published - stored)} missing, {len(stored - published)} unknown")
    left = {name: n for name, n in (await queue_depths(connection, names)).items() if n}
    if left:
        raise BenchFailure(f"dramatiq: messages left after the consumer exited: {left}")
