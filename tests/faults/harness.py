"""One fault run: a fresh world, traffic, a fault, and the history checker's verdict.

Each run gets a topology prefix, a database (a copy of the migrated template), a bucket and
runtime ids of its own on the session's private broker, cluster and S3, so three runs of a
scenario are three independent measurements and a run that leaves a mess cannot fail the next.

Worker processes are supervised by a background task while the run lasts. A worker started with
``MEERKAT_FAULT`` that dies by SIGKILL after logging ``fault_injected`` is the fault firing: it
is counted and a replacement without the fault is started at once, as an orchestrator would.
Any other exit is a failure of the run, reported with the worker's log tail.

Waits poll conditions and stop on one of: done (every valid input has a terminal event in the
capture, every hostile message is in the dead queue, every live worker is idle), a condition
the scenario gives, no progress for :data:`STALL_SECONDS`, or :data:`RUN_SECONDS` in all. A
stalled run is not an exception: the run goes on to ``verify`` so that the table shows what the
stall cost (lost messages, stuck runs), and only then fails.

Problems are collected, not raised, for the same reason; :meth:`FaultRun.conclude` records the
outcome for the table and then fails the test with every problem found.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Protocol
from uuid import UUID, uuid4

from schemas import InputEnvelope
from tests.faults.observe import EventTap, dead_message_ids, delete_topology
from tests.faults.report import REPORT_DIR, RunOutcome, record
from tests.faults.traffic import (
    Hostile,
    Producer,
    Traffic,
    build_prompts,
    new_runtimes,
    write_png,
)
from tests.faults.verdict import verify_run
from tests.faults.workers import WorkerProcess
from tests.fixtures.private_postgres import PrivatePostgres
from tests.fixtures.stoppable_s3 import StoppableS3
from worker.history.published import PublishedLog
from worker.topology import Topology

SHARDS = 4
RUNTIMES = 20
MESSAGES = 300
HEARTBEAT_SECONDS = 1
STALL_SECONDS = 30.0
RUN_SECONDS = 240.0
POLL_SECONDS = 0.25
PUBLISH_PER_SECOND = 50.0
"""The producer's pace: 300 messages take 6 s, long enough for a fault to land mid-stream."""
RUNS_DIR = REPORT_DIR / "runs"


class Broker(Protocol):
    """A private node or cluster: what the tools connect to, and a way to heal it."""

    @property
    def amqp_url(self) -> str: ...

    def ensure_running(self) -> None: ...


@dataclass(frozen=True)
class Dependencies:
    """The session's private services, which scenarios may stop and restart."""

    rabbitmq: Broker
    postgres: PrivatePostgres
    s3: StoppableS3

    def ensure_running(self) -> None:
        """Start again whatever an earlier run left stopped (a failed run may)."""
        self.rabbitmq.ensure_running()
        self.postgres.ensure_running()
        self.s3.start()


class FaultRun:
    def __init__(self, deps: Dependencies, scenario: str, run: int, slug: str,
                 shards: int = SHARDS, *, in_table: bool = True, runtimes: int = RUNTIMES,
                 run_seconds: float = RUN_SECONDS, amqp_url: str | None = None) -> None:
        self.deps = deps
        self.in_table = in_table
        """False for the harness's own tests, which are no measurement of the worker."""
        self.outcome = RunOutcome(scenario, run)
        self.directory = RUNS_DIR / f"{slug}-run{run}"
        self.topology = Topology(shards=shards, prefix=f"f{uuid4().hex[:10]}")
        self.runtimes = new_runtimes(runtimes)
        self.run_seconds = run_seconds
        self.worker_amqp_url = amqp_url or deps.rabbitmq.amqp_url
        """What the workers connect to (a cluster's addresses; the tools use one node)."""
        self.database = ""
        self.workers: list[WorkerProcess] = []
        self.valid_ids: set[UUID] = set()
        self.hostile_ids: set[str] = set()
        self._dead_seen: set[str] = set()
        self._handled_exits: set[int] = set()
        self._fault_fired = asyncio.Event()
        self._started = time.monotonic()
        self._supervisor: asyncio.Task[None] | None = None
        self._stream: asyncio.Task[None] | None = None
        self.broken = False
        """A worker exited unexpectedly: waiting for more progress is pointless."""
        self._recorded = False
        self.notes: list[str] = []
        """What happened when, for ``run.json`` (the table needs none of it)."""
        shutil.rmtree(self.directory, ignore_errors=True)
        self.directory.mkdir(parents=True)
        self.env: dict[str, str] = {}
        self.png = write_png(self.directory)
        self.log = PublishedLog(self.directory / "published.jsonl")
        self.tap = EventTap(self.amqp_url, self.topology, self.directory / "events.jsonl")
        self.producer = Producer(self.amqp_url, self.topology, self.log)

    # --- setup and teardown ---------------------------------------------------------------

    async def __aenter__(self) -> FaultRun:
        try:
            await asyncio.to_thread(self.deps.ensure_running)
            self.database = await asyncio.to_thread(self.deps.postgres.new_database)
            self.env = self._environment()
            await self.tap.start()
        except BaseException as exc:
            await self.__aexit__(type(exc), exc, exc.__traceback__)
            raise
        self._supervisor = asyncio.get_running_loop().create_task(self._supervise())
        return self

    @property
    def amqp_url(self) -> str:
        return self.deps.rabbitmq.amqp_url

    def _environment(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("MEERKAT_")}
        env.update({
            "MEERKAT_AMQP_URL": self.worker_amqp_url,
            "MEERKAT_DATABASE_URL": self.deps.postgres.url(self.database),
            "MEERKAT_BLOB_URL": self.deps.s3.url(f"meerkat-faults-{uuid4().hex[:12]}"),
            "MEERKAT_SHARDS": str(self.topology.shards),
            "MEERKAT_TOPOLOGY_PREFIX": self.topology.prefix,
            "MEERKAT_MEMBERSHIP": "true",
            "MEERKAT_HEARTBEAT_SECONDS": str(HEARTBEAT_SECONDS),
            "MEERKAT_SHUTDOWN_GRACE_SECONDS": "5",
            "MEERKAT_LOG_FORMAT": "json",
        })
        return env

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        for task in (self._supervisor, self._stream):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        for worker in self.workers:
            await asyncio.to_thread(worker.close)
        await self.producer.close()
        await self.tap.close()
        self.log.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(delete_topology(self.amqp_url, self.topology), 30)
        if not self._recorded:
            # The scenario raised before conclude(): still a row in the table.
            self.outcome.problems.append(f"the run raised {type(exc).__name__}: {exc}")
            self._finish_outcome()
        if self.outcome.passed and self.database:
            with contextlib.suppress(Exception):
                await asyncio.to_thread(self.deps.postgres.drop_database, self.database)

    # --- workers --------------------------------------------------------------------------

    def start_worker(self, fault: str | None = None, **settings: str) -> WorkerProcess:
        env = {**self.env, **settings}
        if fault is not None:
            env["MEERKAT_FAULT"] = fault
        name = f"worker-{len(self.workers)}"
        worker = WorkerProcess(env, self.directory / f"{name}.log", name=name,
                               cwd=self.directory)
        self.workers.append(worker)
        return worker

    async def ready(self, worker: WorkerProcess) -> None:
        await asyncio.to_thread(worker.wait_ready)

    @property
    def live_workers(self) -> list[WorkerProcess]:
        return [w for w in self.workers if w.alive]

    async def _supervise(self) -> None:
        while True:
            for worker in list(self.workers):
                if worker.alive or id(worker) in self._handled_exits:
                    continue
                self._handled_exits.add(id(worker))
                self._on_exit(worker)
            await asyncio.sleep(POLL_SECONDS)

    def expect_exit(self, worker: WorkerProcess) -> None:
        """The scenario itself stops ``worker`` (a kill, a scale-down): no problem, no
        replacement."""
        self._handled_exits.add(id(worker))

    def _on_exit(self, worker: WorkerProcess) -> None:
        point = worker.fault.split(":", 1)[0] if worker.fault else None
        if point is not None and worker.killed_by_sigkill and point in worker.fault_points_fired():
            self.outcome.faults_injected += 1
            self._fault_fired.set()
            self.note(f"{worker.name} killed itself at {worker.fault}")
            self.start_worker()
            return
        self.broken = True
        self.outcome.problems.append(
            f"{worker.name} (MEERKAT_FAULT={worker.fault or '-'}) exited unexpectedly with "
            f"{worker.returncode}\n{worker.log_tail()}")

    def note(self, event: str) -> None:
        """Remember when something happened, and how far the traffic was then."""
        self.notes.append(f"{time.monotonic() - self._started:6.1f}s {event} "
                          f"({self.finished()}/{len(self.valid_ids)} inputs finished)")

    # --- traffic --------------------------------------------------------------------------

    def prompts(self, count: int = MESSAGES) -> list[InputEnvelope]:
        return build_prompts(self.runtimes, count, self.png, self.topology.prefix)

    def stream(self, items: Sequence[Traffic], per_second: float = PUBLISH_PER_SECOND,
               lanes: int = 1) -> None:
        """Start publishing ``items`` as a steady stream in the background; waits include it."""
        for item in items:
            if isinstance(item, Hostile):
                self.hostile_ids.add(item.message_id)
                self.outcome.faults_injected += 1
            else:
                self.valid_ids.add(item.input.header.id)
        self._stream = asyncio.get_running_loop().create_task(
            self.producer.publish_stream(items, per_second, lanes))
        self._stream.add_done_callback(self._stream_ended)

    def _stream_ended(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            self.broken = True
            self.outcome.problems.append(f"publishing failed after {self.producer.published} "
                                         f"messages: {task.exception()!r}")

    @property
    def streaming(self) -> bool:
        return self._stream is not None and not self._stream.done()

    def published_at_least(self, count: int) -> Callable[[], bool]:
        return lambda: self.producer.published >= count

    # --- waiting --------------------------------------------------------------------------

    def finished(self) -> int:
        return len(self.valid_ids.intersection(self.tap.finished))

    async def _hostile_dead(self) -> int:
        if self.hostile_ids - self._dead_seen:
            with contextlib.suppress(Exception):  # the broker may be down right now
                ids = await dead_message_ids(self.amqp_url, self.topology)
                self._dead_seen.update(i for i in ids if i is not None)
        return len(self.hostile_ids & self._dead_seen)

    async def _done(self) -> bool:
        if self.streaming or self.finished() < len(self.valid_ids):
            return False
        if await self._hostile_dead() < len(self.hostile_ids):
            return False
        live = self.live_workers
        idle = await asyncio.gather(*(asyncio.to_thread(w.idle) for w in live))
        return bool(live) and all(idle)

    async def wait(self, what: str = "every input finished and the workers idle",
                   until: Callable[[], bool] | None = None) -> bool:
        """Until done, or ``until()`` holds; False (with a problem recorded) when it stalled."""
        progress, last_change = -1, time.monotonic()
        while not self.broken:
            if until is not None and until():
                return True
            if await self._done():
                return True
            now_progress = (self.finished() + len(self.hostile_ids & self._dead_seen)
                            + self.producer.published)
            if now_progress != progress:
                progress, last_change = now_progress, time.monotonic()
            stalled = time.monotonic() - last_change > STALL_SECONDS
            if stalled or time.monotonic() - self._started > self.run_seconds:
                self._stalled(what, "no progress for" if stalled else "run longer than",
                              STALL_SECONDS if stalled else self.run_seconds)
                return False
            await asyncio.sleep(POLL_SECONDS)
        return False

    def _stalled(self, what: str, how: str, seconds: float) -> None:
        tails = "\n".join(w.log_tail(15) for w in self.live_workers)
        self.outcome.problems.append(
            f"gave up waiting for {what} ({how} {seconds:g}s): "
            f"{self.finished()}/{len(self.valid_ids)} valid inputs finished, "
            f"{len(self.hostile_ids & self._dead_seen)}/{len(self.hostile_ids)} hostile "
            f"messages dead-lettered, {len(self.live_workers)} workers alive\n{tails}")

    async def wait_published(self, count: int) -> bool:
        """Until ``count`` messages of the stream are confirmed (the moment to inject)."""
        return await self.wait(f"{count} messages published", self.published_at_least(count))

    # --- the verdict ----------------------------------------------------------------------

    async def wait_fault_fired(self, seconds: float) -> None:
        """Until a planned kill has fired (its worker seen dead at its point), or ``seconds``:
        for a fault that does not follow the traffic (a handover comes with a heartbeat), so
        that a stream finished first does not end the run before it. A fault that never fires
        is then reported by :meth:`expect_fault_fired`."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._fault_fired.wait(), seconds)

    def expect_fault_fired(self, worker: WorkerProcess) -> None:
        if self.outcome.faults_injected == 0:
            state = "still alive" if worker.alive else f"exited with {worker.returncode}"
            self.outcome.problems.append(
                f"the fault never fired: {worker.name} was started with "
                f"MEERKAT_FAULT={worker.fault} and is {state} after the traffic was done")

    async def conclude(self) -> None:
        """Run the checker, record the outcome for the table, fail on any problem."""
        try:
            await self.tap.barrier()
        except Exception as exc:
            self.outcome.problems.append(f"the event capture may be incomplete: {exc}")
        self.log.close()
        self.tap.capture.close()
        verdict = await asyncio.to_thread(verify_run, self.directory, self.env,
                                          self.producer.published)
        self.outcome.counts = verdict.counts
        self.outcome.problems += verdict.problems
        self._finish_outcome()
        if self.outcome.problems:
            raise AssertionError(f"{self.outcome.scenario} run {self.outcome.run}:\n"
                                 + "\n\n".join(self.outcome.problems))

    def _finish_outcome(self) -> None:
        self.outcome.messages = self.producer.published
        self.outcome.seconds = time.monotonic() - self._started
        self._recorded = True
        if self.in_table:
            record(self.outcome)
        summary = {**dataclasses.asdict(self.outcome), "notes": self.notes,
                   "topology_prefix": self.topology.prefix, "database": self.database}
        (self.directory / "run.json").write_text(json.dumps(summary, indent=2))
