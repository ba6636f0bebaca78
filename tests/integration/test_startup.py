"""Start-up refusals and the stop of ``meerkat-worker run``, black box, against the real broker
and PostgreSQL.

Each refusal is checked by its exit code and the exact line printed on stderr (besides the JSON
log lines). The topologies have prefixes of their own and are deleted afterwards; databases and
virtual hosts that must not exist have random names.
"""

from __future__ import annotations

import signal
import socket
import sqlite3
import subprocess
from pathlib import Path
from uuid import uuid4

import pytest
import yarl
from aio_pika.abc import AbstractRobustConnection, ExchangeType
from sqlalchemy import URL, text
from sqlalchemy.ext.asyncio import create_async_engine

from persistence.migrate import upgrade_async
from tests.fixtures.rabbitmq import TopologyFactory, delete_topology
from tests.worker_process import (
    Running,
    SilentListener,
    ameerkat,
    environment,
    human_lines,
    log_events,
)
from worker.cli.common import EXIT_FAILED, EXIT_FATAL, EXIT_OK, EXIT_USAGE
from worker.cli.publish import build_prompt, publish_envelope
from worker.shard_count import queue_exists
from worker.topology import Topology

pytestmark = pytest.mark.integration

CLOSED_BROKER = "amqp://guest:guest@127.0.0.1:1/"
"""Refuses at once: a test whose refusal did not happen fails with exit code 3 instead."""


def refused(done: subprocess.CompletedProcess[str], code: int, line: str) -> None:
    assert (done.returncode, human_lines(done.stderr)) == (code, [line]), done.stderr
    assert "Traceback" not in done.stderr


def worker_env(amqp_url: str, topology: Topology, **settings: str) -> dict[str, str]:
    """A worker on ``topology``, SQLite in the working folder, blobs in memory."""
    values = {"amqp_url": amqp_url, "topology_prefix": topology.prefix,
              "shards": str(topology.shards), "blob_url": "memory://", "http_port": "0",
              "broker_delivery_limit": str(topology.delivery_limit)}
    return environment(**{**values, **settings})


async def shard_queue_counts(connection: AbstractRobustConnection, topology: Topology) -> int:
    channel = await connection.channel()
    try:
        total = 0
        for name in topology.queue_names():
            queue = await channel.declare_queue(name, passive=True)
            total += queue.declaration_result.message_count or 0
        return total
    finally:
        await channel.close()


# --- the broker -------------------------------------------------------------------------------


async def test_a_virtual_host_that_does_not_exist_is_a_configuration_error(
    amqp_url: str, tmp_path: Path
) -> None:
    vhost = f"missing-{uuid4().hex[:12]}"
    url = str(yarl.URL(amqp_url).with_path(f"/{vhost}"))
    user = yarl.URL(amqp_url).user
    line = (f"the broker refused the virtual host '{vhost}' of MEERKAT_AMQP_URL: it does not "
            f"exist or user '{user}' may not use it; create it (rabbitmqctl add_vhost {vhost}; "
            f"rabbitmqctl set_permissions -p {vhost} {user} '.*' '.*' '.*') or fix the URL")

    for command in (["run"], ["topology", "check"]):
        done = await ameerkat(command, environment(amqp_url=url, blob_url="memory://",
                                                   http_port="0"), tmp_path)
        refused(done, EXIT_USAGE, f"meerkat-worker {' '.join(command)}: {line}")


async def test_a_shard_count_other_than_the_brokers_is_refused_by_check_declare_and_run(
    amqp_url: str, amqp_connection: AbstractRobustConnection,
    topology_factory: TopologyFactory, tmp_path: Path,
) -> None:
    declared = topology_factory(shards=4)
    await declared.declare(await amqp_connection.channel())
    try:
        for shards in (2, 6):
            line = (f"the broker has 4 shard queues ({declared.prefix}.ingress.00 to "
                    f"{declared.prefix}.ingress.03) but MEERKAT_SHARDS is {shards}; set "
                    "MEERKAT_SHARDS=4 (the shard count is fixed per deployment)")
            configured = Topology(shards=shards, prefix=declared.prefix)
            env = worker_env(amqp_url, configured)

            refused(await ameerkat(["topology", "check"], env, tmp_path), EXIT_FAILED, line)
            refused(await ameerkat(["topology", "declare"], env, tmp_path), EXIT_FAILED,
                    f"meerkat-worker: {line}")
            refused(await ameerkat(["run"], env, tmp_path), EXIT_FAILED,
                    f"meerkat-worker run: {line}")

        for extra in (f"{declared.prefix}.ingress.04", f"{declared.prefix}.ingress.05"):
            assert not await queue_exists(amqp_connection, extra), f"{extra} was declared"
        assert (await ameerkat(["topology", "check"], worker_env(amqp_url, declared),
                               tmp_path)).returncode == EXIT_OK
    finally:
        await delete_topology(amqp_connection, Topology(shards=6, prefix=declared.prefix))


async def test_a_shard_queue_of_another_type_or_delivery_limit_is_refused(
    amqp_url: str, amqp_connection: AbstractRobustConnection,
    topology_factory: TopologyFactory, tmp_path: Path,
) -> None:
    topology = topology_factory(shards=1)
    queue = topology.shard_queue(0)
    channel = await amqp_connection.channel()
    classic = {k: v for k, v in topology.shard_arguments().items()
               if k not in ("x-queue-type", "x-delivery-limit")}
    await channel.declare_queue(queue, durable=True, arguments=classic)
    reason = (f"PRECONDITION_FAILED - inequivalent arg 'x-queue-type' for queue '{queue}' in "
              "vhost '/': received the value 'quorum' of type 'longstr' but current is none")

    refused(await ameerkat(["run"], worker_env(amqp_url, topology, broker_delivery_limit="5"),
                           tmp_path), EXIT_FAILED,
            f"meerkat-worker run: queue {queue} was declared with other arguments: {reason}; "
            "meerkat-worker topology check lists every difference (the README's contract notes "
            "say how to re-declare the shard queues)")

    await channel.queue_delete(queue)
    await topology.declare(channel)
    done = await ameerkat(["topology", "check"],
                          worker_env(amqp_url, topology, broker_delivery_limit="9"), tmp_path)
    refused(done, EXIT_FAILED,
            f"queue {queue} differs from the expected declaration: PRECONDITION_FAILED - "
            f"inequivalent arg 'x-delivery-limit' for queue '{queue}' in vhost '/': received "
            "'9' but current is '5'")


async def test_an_exchange_of_another_type_is_refused(
    amqp_url: str, amqp_connection: AbstractRobustConnection,
    topology_factory: TopologyFactory, tmp_path: Path,
) -> None:
    topology = topology_factory(shards=1)
    channel = await amqp_connection.channel()
    await channel.declare_exchange(topology.commands_exchange, ExchangeType.TOPIC, durable=True)
    name = topology.commands_exchange

    refused(await ameerkat(["run"], worker_env(amqp_url, topology), tmp_path), EXIT_FAILED,
            f"meerkat-worker run: exchange {name} was declared otherwise: PRECONDITION_FAILED - "
            f"inequivalent arg 'type' for exchange '{name}' in vhost '/': received 'fanout' but "
            "current is 'topic'; meerkat-worker topology check lists every difference (delete "
            "the exchange and run meerkat-worker topology declare)")


async def test_a_port_clash_is_found_before_any_message_is_taken(
    amqp_url: str, amqp_connection: AbstractRobustConnection,
    topology_factory: TopologyFactory, tmp_path: Path,
) -> None:
    topology = topology_factory(shards=2)
    channel = await amqp_connection.channel(publisher_confirms=True)
    await topology.declare(channel)
    await publish_envelope(channel, build_prompt("rt:waiting", "hello", []), topology=topology)

    with socket.socket() as taken:
        taken.bind(("0.0.0.0", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = await ameerkat(["run"], worker_env(amqp_url, topology, http_port=str(port)),
                              tmp_path)

    refused(done, EXIT_USAGE,
            f"meerkat-worker run: MEERKAT_HTTP_PORT {port} is in use by another process; stop "
            "that process or choose another port with MEERKAT_HTTP_PORT")
    assert await shard_queue_counts(amqp_connection, topology) == 1, "the message still waits"


# --- the database -----------------------------------------------------------------------------


async def test_a_postgres_database_that_does_not_exist_is_a_configuration_error(
    postgres_server: URL, tmp_path: Path
) -> None:
    name = f"meerkat_missing_{uuid4().hex[:12]}"
    url = postgres_server.set(database=name).render_as_string(hide_password=False)
    line = (f'database "{name}" does not exist on the PostgreSQL server: create it (then run: '
            "meerkat-worker migrate), or set MEERKAT_DATABASE_URL to an existing database")

    for command in ("run", "inspect"):
        args = [command] if command == "run" else [command, "rt:anyone"]
        env = environment(database_url=url, amqp_url=CLOSED_BROKER, blob_url="memory://",
                          http_port="0")
        refused(await ameerkat(args, env, tmp_path), EXIT_USAGE,
                f"meerkat-worker {command}: {line}")


async def test_a_postgres_schema_not_migrated_or_newer_is_refused(
    fresh_postgres_url: str, tmp_path: Path
) -> None:
    env = environment(database_url=fresh_postgres_url, amqp_url=CLOSED_BROKER,
                      blob_url="memory://", http_port="0")

    refused(await ameerkat(["run"], env, tmp_path), EXIT_FAILED,
            "meerkat-worker run: the database schema is not migrated (revision none, this "
            "version needs 0008); run: meerkat-worker migrate")

    await upgrade_async(fresh_postgres_url)
    engine = create_async_engine(fresh_postgres_url)
    try:
        async with engine.begin() as conn:
            await conn.execute(text("UPDATE alembic_version SET version_num = '9999'"))
    finally:
        await engine.dispose()
    refused(await ameerkat(["run"], env, tmp_path), EXIT_FAILED,
            "meerkat-worker run: the database schema is at revision 9999, which this version "
            "does not know (its latest is 0008): a newer version migrated it; run a version of "
            "meerkat-worker that knows it")


# --- start-up failures and the stop -----------------------------------------------------------


def membership_rows(database: Path, group: str) -> int:
    with sqlite3.connect(database) as connection:
        row = connection.execute("SELECT count(*) FROM workers WHERE group_name = ?",
                                 (group,)).fetchone()
    count: int = row[0]
    return count


async def test_a_start_up_that_fails_after_joining_deletes_its_membership_row(
    amqp_url: str, topology_factory: TopologyFactory, tmp_path: Path
) -> None:
    topology = topology_factory(shards=2)
    env = worker_env(amqp_url, topology, fault="startup_end:1:raise")

    done = await ameerkat(["run"], env, tmp_path)

    refused(done, EXIT_FATAL,
            "meerkat-worker run: start-up failed while finishing start-up: FaultInjected: fault "
            "injected at startup_end (reach 1) (the log has worker_start_failed with the "
            "traceback)")
    assert any(e["event"] == "shards_assigned" for e in log_events(done.stderr)), \
        "the worker had joined"
    assert membership_rows(tmp_path / "meerkat.db", topology.prefix) == 0


async def test_a_signal_to_a_hanging_start_up_deletes_its_membership_row(
    amqp_url: str, topology_factory: TopologyFactory, tmp_path: Path
) -> None:
    topology = topology_factory(shards=2)
    worker = await Running.start(worker_env(amqp_url, topology, fault="startup_end:1:hang"),
                                 tmp_path)
    try:
        await worker.wait_for_event("fault_injected", lambda e: e["event"] == "fault_injected")
        assert membership_rows(tmp_path / "meerkat.db", topology.prefix) == 1

        worker.send(signal.SIGTERM)

        assert await worker.exit_code(within=20) == EXIT_OK
    finally:
        await worker.kill()
    assert membership_rows(tmp_path / "meerkat.db", topology.prefix) == 0


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
async def test_a_second_signal_during_the_drain_forces_the_exit(
    sig: signal.Signals, amqp_url: str, amqp_connection: AbstractRobustConnection,
    topology_factory: TopologyFactory, tmp_path: Path,
) -> None:
    """A run whose executor never answers holds the drain; the drain says so every few
    seconds; a second signal ends the process at once with 128 + the signal's number."""
    topology = topology_factory(shards=2)
    async with SilentListener() as executor:
        env = worker_env(amqp_url, topology, executor="worker.runs.executors.http:execute",
                         executor_url=f"http://127.0.0.1:{executor.port}/run",
                         shutdown_grace_seconds="120")
        worker = await Running.start(env, tmp_path)
        try:
            await worker.wait_for_event("worker_started", lambda e: e["event"] == "worker_started")
            channel = await amqp_connection.channel(publisher_confirms=True)
            await publish_envelope(channel, build_prompt("rt:slow", "take your time", []),
                                   topology=topology)
            await executor.wait_accepted("the executor call of the run")

            worker.send(sig)
            report = await worker.wait_for_event(
                "a periodic drain report", lambda e: e["event"] == "worker_draining"
                and "elapsed_seconds" in e, within=30)
            assert report["waiting_for"] == "running executors to reach a checkpoint"
            assert report["runs"]["executing"] == 1
            worker.send(sig)

            assert await worker.exit_code(within=10) == 128 + sig
        finally:
            await worker.kill()
    forced = [e for e in worker.events() if e["event"] == "worker_stop_forced"]
    assert [e["exit_code"] for e in forced] == [128 + sig]
