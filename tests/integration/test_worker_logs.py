"""The log of the real program (``python -m worker run`` as a subprocess, real broker, S3 and a
SQLite file): one line per settled delivery and per run, library records in the same format,
a short start-up line, the settings at debug, and no secret anywhere."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote
from uuid import uuid4

import aio_pika
import pytest
from aio_pika.abc import AbstractChannel, AbstractRobustConnection

from schemas import INPUT_MESSAGE_TYPE, Accepted
from tests.fixtures.rabbitmq import TopologyFactory
from tests.fixtures.s3 import S3Server, unique_bucket_name
from tests.integration.conftest import new_runtime_id
from worker.cli.publish import build_prompt, publish_envelope, request_reply
from worker.topology import Topology

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
EXECUTOR_PASSWORD = "exec-pw-5f1d"
WAIT_SECONDS = 60


class WorkerProcess:
    """A worker run as the real program; its standard error kept line by line."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.lines: list[str] = []
        self._changed = asyncio.Condition()
        self._reader = asyncio.get_running_loop().create_task(self._read())

    async def _read(self) -> None:
        assert self.process.stderr is not None
        while line := await self.process.stderr.readline():
            async with self._changed:
                self.lines.append(line.decode().rstrip("\n"))
                self._changed.notify_all()
        async with self._changed:
            self._changed.notify_all()

    async def line(self, what: str, matches: Callable[[str], bool]) -> str:
        """The first line that ``matches``; fails naming ``what`` when none comes in time."""
        def found() -> str | None:
            return next((line for line in self.lines if matches(line)), None)

        async def wait() -> str:
            async with self._changed:
                await self._changed.wait_for(lambda: found() is not None or self._reader.done())
            line = found()
            if line is None:
                pytest.fail(f"the worker exited before logging {what}:\n" + "\n".join(self.lines))
            return line

        try:
            return await asyncio.wait_for(wait(), WAIT_SECONDS)
        except TimeoutError:
            pytest.fail(f"no log line {what} within {WAIT_SECONDS} s:\n" + "\n".join(self.lines))

    async def stop(self) -> int:
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            code = await asyncio.wait_for(self.process.wait(), WAIT_SECONDS)
        except TimeoutError:
            self.process.kill()
            pytest.fail("the worker did not stop within its grace after SIGTERM")
        await self._reader
        return code


@pytest.fixture
def run_worker(
    amqp_url: str, s3_server: S3Server, tmp_path: Path, topology_factory: TopologyFactory
) -> Callable[..., Any]:
    """``async with run_worker(LOG_FORMAT=..., ...) as (worker, topology)``: the program with
    ``MEERKAT_*`` settings of its own (the keywords are more of them), stopped at the end."""

    @asynccontextmanager
    async def run(**settings: str) -> AsyncIterator[tuple[WorkerProcess, Topology]]:
        topology = topology_factory(shards=2)
        values = {
            "AMQP_URL": amqp_url,
            "DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'worker.db'}",
            "BLOB_URL": s3_server.url(unique_bucket_name()),
            "EXECUTOR_URL": f"http://user:{EXECUTOR_PASSWORD}@127.0.0.1:9/run",
            "TOPOLOGY_PREFIX": topology.prefix, "SHARDS": "2", "HTTP_PORT": "0",
            "SHUTDOWN_GRACE_SECONDS": "5", **settings,
        }
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("MEERKAT_", "OTEL_"))}
        env.update({f"MEERKAT_{name}": value for name, value in values.items()})
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "worker", "run", cwd=tmp_path, env=env,
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
        )
        worker = WorkerProcess(process)
        try:
            await worker.line("worker_started", lambda line: "worker_started" in line)
            yield worker, topology
        finally:
            await worker.stop()

    return run


async def _prompt_and_poison(
    connection: AbstractRobustConnection, topology: Topology
) -> tuple[str, str, str]:
    """Send a prompt (awaiting its reply) and a body that is not JSON; returns the runtime id,
    the prompt's message id and the poison's message id."""
    runtime_id = new_runtime_id()
    envelope = build_prompt(runtime_id, "hello", [])

    async def send(channel: AbstractChannel, reply_to: str, correlation_id: str) -> None:
        await publish_envelope(channel, envelope, reply_to=reply_to,
                               correlation_id=correlation_id, topology=topology)

    reply = await request_reply(connection, send, wait_seconds=WAIT_SECONDS)
    assert isinstance(reply.outcome, Accepted)
    poison_id = str(uuid4())
    channel = await connection.channel(publisher_confirms=True)
    try:
        exchange = await channel.get_exchange(topology.ingress_exchange, ensure=False)
        await exchange.publish(
            aio_pika.Message(b"{not json", message_id=poison_id, type=INPUT_MESSAGE_TYPE,
                             content_type="application/json", correlation_id="poison-1"),
            routing_key=runtime_id,
        )
    finally:
        await channel.close()
    return runtime_id, str(envelope.input.header.id), poison_id


def _event(name: str, **fields: Any) -> Callable[[str], bool]:
    """A JSON line of event ``name`` whose fields include ``fields``."""
    def matches(line: str) -> bool:
        try:
            record = json.loads(line)
        except ValueError:
            return False
        return record.get("event") == name and all(record.get(k) == v for k, v in fields.items())

    return matches


async def test_json_lines_tell_each_settlement_and_run_and_keep_secrets(
    run_worker: Callable[..., Any], amqp_connection: AbstractRobustConnection,
    s3_server: S3Server,
) -> None:
    async with run_worker(LOG_FORMAT="json", LOG_LEVEL="debug") as (worker, topology):
        runtime_id, prompt_id, poison_id = await _prompt_and_poison(amqp_connection, topology)
        acked = json.loads(await worker.line("an acked prompt", _event(
            "delivery_settled", settlement="acked", message_id=prompt_id)))
        dead = json.loads(await worker.line("a dead-lettered poison message", _event(
            "delivery_settled", settlement="dead_lettered", message_id=poison_id)))
        completed = json.loads(await worker.line("the prompt's run completed", _event(
            "run_completed", runtime_id=runtime_id)))
    lines = worker.lines

    assert acked["level"] == "info"
    assert acked["runtime_id"] == runtime_id
    assert acked["correlation_id"]
    assert acked["delivery_count"] == 1
    assert dead["level"] == "info"
    assert dead["correlation_id"] == "poison-1"
    assert dead["reason_type"] == "malformed"
    assert json.loads(dead["reason"])["reject_type"] == "malformed"
    assert completed["inputs"] == 1
    assert completed["duration_seconds"] > 0
    assert completed["executor_seconds"] >= 0
    assert any(_event("run_started", runtime_id=runtime_id)(line) for line in lines)

    records = [json.loads(line) for line in lines]  # every line is JSON, the libraries' too
    libraries = [r for r in records if str(r.get("logger", "")).startswith("aio_pika")]
    assert libraries, "aio-pika logs at debug"
    assert all({"event", "level", "timestamp"} <= r.keys() for r in records)
    assert not [r for r in records if str(r.get("logger", "")).startswith(("aiormq", "sqlalch"))
                and r["level"] == "debug"], "per-frame and per-statement lines are held back"

    started = next(r for r in records if r["event"] == "worker_started")
    assert started["prefix"] == topology.prefix
    assert started["shards"] == 2
    assert started["executor"] == "worker.runs.executors.echo:execute"
    assert isinstance(started["http_port"], int)
    assert started["version"]
    assert "settings" not in started
    full = next(r for r in records if r["event"] == "worker_settings")
    assert full["level"] == "debug"
    assert full["settings"]["executor_url"] == "http://user:***@127.0.0.1:9/run"

    text = "\n".join(lines)
    for secret in (EXECUTOR_PASSWORD, s3_server.secret_key, quote(s3_server.secret_key, safe="")):
        assert secret not in text


async def test_console_lines_are_short_and_the_settings_stay_at_debug(
    run_worker: Callable[..., Any], amqp_connection: AbstractRobustConnection,
) -> None:
    async with run_worker(LOG_FORMAT="console", LOG_LEVEL="info") as (worker, topology):
        _, prompt_id, _ = await _prompt_and_poison(amqp_connection, topology)
        settled = await worker.line("an acked prompt", lambda line: "delivery_settled" in line
                                    and f"message_id={prompt_id}" in line)
    started = next(line for line in worker.lines if "worker_started" in line)

    assert "settlement=acked" in settled
    assert "[info     ]" in started
    assert f"prefix={topology.prefix}" in started
    assert "shards=2" in started
    assert len(started) < 400, started
    assert not any("worker_settings" in line for line in worker.lines)
    assert not any(line.startswith("{") for line in worker.lines)
