"""A worker session: one fresh database, topology prefix and blob store, and the worker on them.

Every worker scenario runs in a session (several scenarios may share one: ``accept``, ``e2e``
and ``latency`` measure the same worker run one after the other). :func:`open_session` makes a
database on the PostgreSQL server as a copy of the build's template (:class:`Templates`: one
database per build, migrated once per benchmark run with the build's ``meerkat-worker
migrate``), a topology prefix of its own declared with the build's ``meerkat-worker topology
declare``, the event sink (see :func:`bench.services.bind_event_sink`) and a ``file://`` blob
store in a temporary directory that is also the worker's working directory. The session starts
and stops workers (one at a time; their output goes to one ``worker.log``, kept in ``--logs``),
publishes, and counts in the database. :meth:`Session.finish` stops the worker and checks what
it left (:mod:`bench.checks`): only then are the session's figures worth anything. Everything
is removed afterwards, whatever the outcome.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import tempfile
import time
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from uuid import uuid4

import asyncpg  # type: ignore[import-untyped]
from aio_pika.abc import AbstractRobustConnection

from bench.checks import check_broker, check_store
from bench.errors import BenchFailure
from bench.services import (
    Prefix,
    bind_event_sink,
    connect_admin,
    connect_broker,
    create_database,
    delete_broker_names,
    fresh_database,
    queue_depths,
    wait_for_count,
    with_database,
    with_scheme,
)
from bench.workerproc import WorkerBuild, WorkerProcess, run_command, summarise_log
from bench.workload import Message, publish_all

SHARDS = 16


class Templates:
    """One migrated database per worker build, copied for each session (``CREATE DATABASE ...
    TEMPLATE``): the migration runs once per build and benchmark run, not once per session."""

    def __init__(self, admin_url: str) -> None:
        self._admin_url = admin_url
        self._names: dict[Path, str] = {}
        self._lock = asyncio.Lock()

    async def for_build(self, build: WorkerBuild) -> str:
        async with self._lock:
            if build.root not in self._names:
                name = f"bench_template_{uuid4().hex[:12]}"
                admin = await connect_admin(self._admin_url)
                try:
                    await create_database(admin, name, None)
                finally:
                    await admin.close()
                self._names[build.root] = name
                url = with_database(self._admin_url, name)
                settings = {"MEERKAT_DATABASE_URL": with_scheme(url, "postgresql+asyncpg")}
                with tempfile.TemporaryDirectory(prefix="bench-migrate-") as folder:
                    await run_command(["migrate"], settings, Path(folder), build)
            return self._names[build.root]

    async def drop(self) -> None:
        if not self._names:
            return
        admin = await connect_admin(self._admin_url)
        try:
            for name in self._names.values():
                await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()
        self._names.clear()


@dataclass(frozen=True)
class Context:
    """What every scenario takes from the command line."""

    admin_url: str
    amqp_url: str
    stall_seconds: float
    logs: Path | None
    templates: Templates


@dataclass
class StopReport:
    """What the last worker of a session left, for the rows' details."""

    runs: int
    events: int
    events_unsent: int
    log: str
    log_samples: list[str]


@dataclass
class Session:
    name: str
    build: WorkerBuild
    context: Context
    connection: AbstractRobustConnection
    prefix: Prefix
    url: str
    """The database's asyncpg URL."""
    database: asyncpg.Connection
    workdir: Path
    settings: dict[str, str]
    phases: dict[str, float] = field(default_factory=dict)
    published: list[Message] = field(default_factory=list)
    """Every message published in the session: what :meth:`finish` checks the store against."""
    worker: WorkerProcess | None = None

    @property
    def log_path(self) -> Path:
        return self.workdir / "worker.log"

    @property
    def blob_folder(self) -> Path:
        return self.workdir / "blobs"

    @contextlib.contextmanager
    def timed(self, phase: str) -> Iterator[None]:
        started = time.monotonic()
        try:
            yield
        finally:
            self.phases[phase] = self.phases.get(phase, 0.0) + time.monotonic() - started

    async def publish(self, messages: Sequence[Message]) -> None:
        """Publish to the ingress exchange (confirmed), whether a worker runs or not."""
        channel = await self.connection.channel(publisher_confirms=True)
        try:
            exchange = await channel.get_exchange(self.prefix.ingress, ensure=False)
            await publish_all(exchange, messages)
        finally:
            await channel.close()
        self.published.extend(messages)

    async def prefill(self, messages: Sequence[Message]) -> None:
        """Publish before any worker runs, and check that the shard queues hold them all."""
        before = sum((await queue_depths(self.connection, self.prefix.shard_queues())).values())
        with self.timed("publish"):
            await self.publish(messages)
        queued = sum((await queue_depths(self.connection, self.prefix.shard_queues())).values())
        if queued != before + len(messages):
            raise BenchFailure(f"{self.name}: {queued - before} messages in the shard queues "
                               f"after publishing {len(messages)}")

    async def start_worker(self, settings: Mapping[str, str] | None = None) -> WorkerProcess:
        if self.worker is not None:
            raise BenchFailure(f"{self.name}: a worker is already running")
        self.worker = WorkerProcess({**self.settings, **(settings or {})}, self.workdir,
                                    self.build)
        await self.worker.start()
        return self.worker

    async def stop_worker(self) -> None:
        """SIGTERM; the worker must exit with code 0."""
        worker, self.worker = self.worker, None
        if worker is None:
            return
        try:
            with self.timed("stop"):
                code = await worker.stop()
        finally:
            await worker.kill()
        if code != 0:
            raise BenchFailure(f"{self.name}: the worker exited with code {code} after SIGTERM; "
                               f"log: {worker.log_path} ({worker.log_tail()})")

    async def count(self, query: str, *args: object) -> int:
        value: int = await self.database.fetchval(query, *args)
        return value

    async def wait(self, what: str, query: str, target: int, *, falling: bool = False) -> float:
        """Poll ``query`` (a count) until it is ``target``; the monotonic time it was."""
        worker = self.worker

        def alive() -> None:
            if worker is not None:
                worker.check_alive()

        async def count() -> int:
            return await self.count(query)

        return await wait_for_count(f"{what} ({self.name})", count, target, falling=falling,
                                    stall_seconds=self.context.stall_seconds, alive=alive)

    async def finish(self, *, consumed: bool) -> StopReport:
        """Stop the worker, then check the store (every published input there exactly once,
        in order; all consumed when ``consumed``) and the broker (nothing left queued,
        unacked or dead-lettered)."""
        await self.stop_worker()
        with self.timed("check"):
            await check_store(self.name, self.database, self.published, consumed=consumed)
            await check_broker(self.name, self.connection, self.prefix)
        events = await self.database.fetchrow(
            "SELECT count(*) AS total, count(*) FILTER (WHERE sent_at IS NULL) AS unsent "
            "FROM event_outbox"
        )
        log = summarise_log(self.log_path)
        return StopReport(runs=await self.count("SELECT count(*) FROM boundary_receipts"),
                          events=events["total"], events_unsent=events["unsent"],
                          log=log.describe(), log_samples=log.samples)


def worker_settings(url: str, amqp_url: str, workdir: Path, prefix: Prefix) -> dict[str, str]:
    return {
        "MEERKAT_DATABASE_URL": with_scheme(url, "postgresql+asyncpg"),
        "MEERKAT_AMQP_URL": amqp_url,
        "MEERKAT_BLOB_URL": f"file://{workdir / 'blobs'}",
        "MEERKAT_TOPOLOGY_PREFIX": prefix.name,
        "MEERKAT_SHARDS": str(prefix.shards),
        "MEERKAT_HTTP_PORT": "0",
        "MEERKAT_LOG_FORMAT": "json",
    }


@contextlib.asynccontextmanager
async def open_session(
    context: Context, name: str, build: WorkerBuild, settings: Mapping[str, str] | None = None,
) -> AsyncIterator[Session]:
    """A prepared session named ``name``; the worker log goes to ``logs/<name>.log``."""
    prefix = Prefix.fresh(SHARDS)
    template = await context.templates.for_build(build)
    connection = await connect_broker(context.amqp_url)
    try:
        with tempfile.TemporaryDirectory(prefix=f"bench-{name}-") as folder:
            workdir = Path(folder)
            try:
                async with fresh_database(context.admin_url, template) as url:
                    environment = {**worker_settings(url, context.amqp_url, workdir, prefix),
                                   **(settings or {})}
                    database = await asyncpg.connect(url)
                    session = Session(name, build, context, connection, prefix, url, database,
                                      workdir, environment)
                    try:
                        with session.timed("prepare"):
                            await run_command(["topology", "declare"], environment, workdir,
                                              build)
                            await bind_event_sink(connection, prefix)
                        yield session
                    finally:
                        if session.worker is not None:
                            await session.worker.kill()
                        await database.close()
            finally:
                keep_log(workdir / "worker.log", context.logs, name)
    finally:
        with contextlib.suppress(Exception):
            await delete_broker_names(connection, [*prefix.queues(), prefix.event_sink],
                                      prefix.exchanges())
        await connection.close()


def keep_log(path: Path, logs: Path | None, name: str) -> None:
    if logs is not None and path.exists():
        logs.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, logs / f"{name}.log")


def session_details(session: Session, report: StopReport) -> dict[str, object]:
    """What every row of a session reports besides its figure."""
    return {
        "phase_seconds": {k: round(v, 2) for k, v in session.phases.items()},
        "runs": report.runs,
        "events": report.events,
        "events_unsent_after_stop": report.events_unsent,
        "worker_log": report.log,
        "worker_log_samples": report.log_samples,
    }
