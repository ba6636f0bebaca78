"""The worker scenarios: ``accept``, ``e2e`` and ``slow`` (see the package docstring).

Each one prepares a fresh database and topology, pre-fills the shard queues, starts one worker,
waits for the count that ends it, stops the worker with SIGTERM, then measures and checks with
:mod:`bench.checks`.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import asyncpg  # type: ignore[import-untyped]
from aio_pika.abc import AbstractRobustConnection

from bench.checks import check_broker, check_store
from bench.errors import BenchFailure
from bench.executors import LATENCY_SECONDS
from bench.report import Row
from bench.services import (
    Prefix,
    bind_event_sink,
    connect_broker,
    delete_broker_names,
    fresh_database,
    queue_depths,
    wait_for_count,
    with_scheme,
)
from bench.workerproc import THIS_CHECKOUT, WorkerBuild, WorkerProcess, run_command, summarise_log
from bench.workload import Message, prompts, publish_all
from schemas import InputPhase
from worker.config import Settings

SHARDS = 16
DEFAULT_MAX_CONCURRENT_RUNS: int = Settings.model_fields["max_concurrent_runs"].default
"""``MEERKAT_MAX_CONCURRENT_RUNS`` when it is not set (the worker's own default)."""
SLOW_EXECUTOR = "bench.executors:sleep_one_second"
CONSUMED = InputPhase.CONSUMED.value


@dataclass(frozen=True)
class Spec:
    name: str
    description: str
    inputs: int
    runtimes: int
    until_consumed: bool
    settings: dict[str, str] = field(default_factory=dict)
    kind: str = ""
    """The scenario (``accept``, ``e2e``, ``slow``) whatever the row is named."""
    own_defaults: bool = False
    """The worker is another build, whose defaults this checkout does not know."""


def accept_spec(inputs: int, runtimes: int) -> Spec:
    return Spec("accept", "worker accept (echo executor)", inputs, runtimes, False, kind="accept")


def e2e_spec(inputs: int, runtimes: int) -> Spec:
    return Spec("e2e", "worker end to end (echo executor)", inputs, runtimes, True, kind="e2e")


def slow_spec(runs: int, max_concurrent_runs: int | None) -> Spec:
    settings = {"MEERKAT_EXECUTOR": SLOW_EXECUTOR}
    if max_concurrent_runs is not None:
        settings["MEERKAT_MAX_CONCURRENT_RUNS"] = str(max_concurrent_runs)
    return Spec("slow", f"worker, executor sleeping {LATENCY_SECONDS:g} s", runs, runs, True,
                settings, kind="slow")


def concurrency(spec: Spec) -> int:
    return int(spec.settings.get("MEERKAT_MAX_CONCURRENT_RUNS", DEFAULT_MAX_CONCURRENT_RUNS))


async def run_worker_scenario(
    spec: Spec, *, admin_url: str, amqp_url: str, stall_seconds: float, logs: Path | None,
    build: WorkerBuild = THIS_CHECKOUT,
) -> Row:
    """Run one scenario with ``build``'s worker; the worker's log is copied to
    ``logs/<name>.log`` (pass or fail)."""
    if build.label:
        spec = dataclasses.replace(spec, name=f"{spec.name}@{build.label}",
                                   description=f"{spec.description} [{build.label}]",
                                   own_defaults=True)
    messages = prompts(spec.inputs, spec.runtimes)
    prefix = Prefix.fresh(SHARDS)
    phases: dict[str, float] = {}
    connection = await connect_broker(amqp_url)
    try:
        with tempfile.TemporaryDirectory(prefix=f"bench-{spec.name}-") as folder:
            workdir = Path(folder)
            try:
                async with fresh_database(admin_url) as url:
                    settings = {
                        "MEERKAT_DATABASE_URL": with_scheme(url, "postgresql+asyncpg"),
                        "MEERKAT_AMQP_URL": amqp_url,
                        "MEERKAT_BLOB_URL": f"file://{workdir / 'blobs'}",
                        "MEERKAT_TOPOLOGY_PREFIX": prefix.name,
                        "MEERKAT_SHARDS": str(SHARDS),
                        "MEERKAT_HTTP_PORT": "0",
                        "MEERKAT_LOG_FORMAT": "json",
                        **spec.settings,
                    }
                    with timed(phases, "prepare"):
                        await asyncio.gather(
                            run_command(["migrate"], settings, workdir, build),
                            run_command(["topology", "declare"], settings, workdir, build),
                        )
                        await bind_event_sink(connection, prefix)
                    with timed(phases, "publish"):
                        await prefill(spec.name, connection, prefix, messages)
                    database = await asyncpg.connect(url)
                    try:
                        row = await _drive(spec, settings, workdir, database, stall_seconds,
                                           phases, build)
                        with timed(phases, "check"):
                            await check_store(spec.name, database, messages,
                                              consumed=spec.until_consumed)
                    finally:
                        await database.close()
                    await check_broker(spec.name, connection, prefix)
            finally:
                keep_log(workdir / "worker.log", logs, spec.name)
            log = summarise_log(workdir / "worker.log")
            row.details["phase_seconds"] = {k: round(v, 2) for k, v in phases.items()}
            row.details["worker_log"] = log.describe()
            row.details["worker_log_samples"] = log.samples
            return row
    finally:
        with contextlib.suppress(Exception):
            await delete_broker_names(connection, [*prefix.queues(), prefix.event_sink],
                                      prefix.exchanges())
        await connection.close()


@contextlib.contextmanager
def timed(phases: dict[str, float], name: str) -> Iterator[None]:
    started = time.monotonic()
    try:
        yield
    finally:
        phases[name] = time.monotonic() - started


def keep_log(path: Path, logs: Path | None, name: str) -> None:
    if logs is not None and path.exists():
        logs.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, logs / f"{name}.log")


async def prefill(
    name: str, connection: AbstractRobustConnection, prefix: Prefix, messages: list[Message]
) -> None:
    """Publish every message and check that the shard queues hold them all."""
    channel = await connection.channel(publisher_confirms=True)
    exchange = await channel.get_exchange(prefix.ingress, ensure=False)
    await publish_all(exchange, messages)
    await channel.close()
    queued = sum((await queue_depths(connection, prefix.shard_queues())).values())
    if queued != len(messages):
        raise BenchFailure(
            f"{name}: {queued} messages in the shard queues after publishing {len(messages)}"
        )


async def _drive(
    spec: Spec, settings: dict[str, str], workdir: Path, database: asyncpg.Connection,
    stall_seconds: float, phases: dict[str, float], build: WorkerBuild,
) -> Row:
    """Start the worker, wait for the end condition, stop it; the measured row."""
    worker = WorkerProcess(settings, workdir, build)
    query = "SELECT count(*) FROM inputs"
    if spec.until_consumed:
        query += f" WHERE phase = '{CONSUMED}'"
    what = "inputs consumed" if spec.until_consumed else "inputs accepted"

    async def count() -> int:
        value: int = await database.fetchval(query)
        return value

    started_wall = time.time()
    started = time.monotonic()
    await worker.start()
    try:
        seen = await wait_for_count(f"{what} ({spec.name})", count, spec.inputs,
                                    stall_seconds=stall_seconds, alive=worker.check_alive)
        phases["run"] = seen - started
        with timed(phases, "stop"):
            code = await worker.stop()
    finally:
        await worker.kill()
    if code != 0:
        raise BenchFailure(f"{spec.name}: the worker exited with code {code} after SIGTERM; "
                           f"log: {worker.log_path} ({worker.log_tail()})")
    accepted: int = await database.fetchval("SELECT count(*) FROM inputs")
    first: datetime = await database.fetchval("SELECT min(created_at) FROM inputs")
    if spec.until_consumed:
        last: datetime = await database.fetchval(
            f"SELECT max(updated_at) FROM inputs WHERE phase = '{CONSUMED}'"
        )
    else:
        last = await database.fetchval("SELECT max(created_at) FROM inputs")
    seconds = (last - first).total_seconds()
    if seconds <= 0:
        raise BenchFailure(f"{spec.name}: first and last timestamps coincide ({first})")
    details: dict[str, object] = {
        "runtimes": spec.runtimes,
        "startup_seconds": round(first.timestamp() - started_wall, 3),
        "settings": {k: v for k, v in spec.settings.items()},
    }
    runs: int = await database.fetchval("SELECT count(*) FROM boundary_receipts")
    details["runs"] = runs
    events = await database.fetchrow(
        "SELECT count(*) AS total, count(*) FILTER (WHERE sent_at IS NULL) AS unsent "
        "FROM event_outbox"
    )
    details["events"] = events["total"]
    details["events_unsent_after_stop"] = events["unsent"]
    if spec.kind != "slow":
        return Row(spec.name, spec.description, accepted, seconds, accepted / seconds,
                   "inputs/s", details=details)
    details["latency_seconds"] = LATENCY_SECONDS
    if spec.own_defaults and "MEERKAT_MAX_CONCURRENT_RUNS" not in spec.settings:
        return Row(spec.name, f"{spec.description}, its default concurrency", runs, seconds,
                   runs / seconds, "runs/s", details=details)
    limit = concurrency(spec)
    details["max_concurrent_runs"] = limit
    return Row(spec.name, f"{spec.description}, {limit} at once", runs, seconds, runs / seconds,
               "runs/s", ideal=limit / LATENCY_SECONDS, details=details)
