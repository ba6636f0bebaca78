"""The worker process: wires the store, blob store, driver, broker link, consumers, committer,
run loop, outbox relay (inline, or in a child process: :mod:`worker.relay_process`), membership,
retention (the pruner, :mod:`worker.retention`) and HTTP endpoint, supervises them, and stops
gracefully.

Every long-lived task runs under the :class:`~worker.supervisor.Supervisor`: a task that dies
is logged with its exception and restarted with backoff, and one that keeps dying brings the
worker down with a non-zero exit (``serve`` returns :data:`EXIT_FATAL`). Nothing dies silently:
``/readyz`` names any part that is down (a task restarting, the broker link away, a dependency
unreachable, a stale membership heartbeat), and ``/healthz`` fails when deliveries wait and the
pipeline settles none of them for ``MEERKAT_STALL_SECONDS`` (the watchdog), so an orchestrator
restarts a wedged worker but never one that is only waiting out a dependency outage.

Start-up order finds what is wrong before any message is taken: the HTTP endpoint first (a
port clash stops the worker at once, and ``/readyz`` answers 503 naming the start-up step until
the worker consumes), then the executor is imported, then the database (its schema must be at
head) and the blob store, then the broker (its shard count and declarations checked before
anything is consumed), then membership, then the outbox relay's first pass (its child process
up, where it runs apart). Each first contact with a dependency is bounded by
``MEERKAT_CONNECT_TIMEOUT_SECONDS``. A start-up that fails or is cancelled stops whatever it
had started, as a drain would, so a membership row it wrote is deleted at once.

Shutdown order matters: the heartbeat loop ends first, so no shard is taken on while stopping;
the membership row is marked leaving, so the others subscribe to its shards at once (standbys);
then every shard is released (the committer finishes the commits it has under way and acks
them, then the shard's channel is closed, which returns everything else to the queue, in
order, and the broker makes the standby active); the row is deleted; running
executors get the grace period to reach a checkpoint (or are abandoned to recovery); the outbox
is flushed; then the tasks are cancelled and the connections closed. :meth:`Worker.drain_state`
says what the step under way waits for. Signals and exit codes are :mod:`worker.lifecycle`'s.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeVar

import structlog

from persistence.blobs import open_blob_store
from persistence.factory import open_runtime_store
from persistence.ports import BlobStore, RuntimeStore
from worker.broker import BrokerLink, Link
from worker.config import Settings
from worker.consumer import ShardConsumers
from worker.deadline import bounded
from worker.driver import RuntimeDriver
from worker.event_selection import EventSelection
from worker.faults import FaultPlan
from worker.health import HealthServer, ReadinessError
from worker.membership import MISSED_HEARTBEATS, Membership, new_worker_id
from worker.metrics import Metrics
from worker.outbox import EventRelay
from worker.pipeline.access import access_of
from worker.pipeline.committer import Committer
from worker.relay_process import outbox_relay
from worker.resume import LeftWork
from worker.retention import Retention, RetentionPolicy, prunes_here
from worker.runs.executors import Executor, load_executor
from worker.runs.loop import RunLoop
from worker.runs.restore import Restorer
from worker.supervisor import RestartPolicy, Supervisor
from worker.topology import Topology
from worker.watchdog import Watchdog

log = structlog.get_logger(__name__)

T = TypeVar("T")

EXIT_FATAL = 5
"""``meerkat-worker run`` exit code when a part of the worker failed for good."""
STARTUP_CHECK = "startup"
"""The readiness part that fails, naming the step, until start-up is done."""

COMMITTER_POLICY = RestartPolicy(max_restarts=20, window_seconds=60.0)
"""Each restart after a crash retries the crashed batch one message at a time, counting each
attempt, so a message that kills the loop is dead-lettered long before this gives up."""


@dataclass
class Worker:
    settings: Settings
    topology: Topology
    executor: Executor | None = None
    serve_http: bool = True
    metrics: Metrics = field(default_factory=Metrics)
    worker_id: str | None = None
    """The membership id; by default ``hostname-pid-random``."""

    store: RuntimeStore | None = None
    blobs: BlobStore | None = None
    driver: RuntimeDriver | None = None
    broker: BrokerLink | None = None
    committer: Committer | None = None
    run_loop: RunLoop | None = None
    outbox: EventRelay | None = None
    consumers: ShardConsumers | None = None
    health: HealthServer | None = None
    membership: Membership | None = None
    watchdog: Watchdog | None = None
    retention: Retention | None = None
    left_work: LeftWork | None = None
    supervisor: Supervisor | None = None
    fatal: tuple[str, BaseException] | None = None
    """The task that failed for good, and why; the worker is then stopping."""
    phase: str | None = "not started"
    """The start-up step under way; ``None`` once started."""
    stage: str | None = None
    """The shutdown step under way, once stopping."""
    _failed: asyncio.Event = field(default_factory=asyncio.Event)
    _stopped: bool = False

    async def start(self) -> None:
        """Start every part (see the module's start-up order). On failure or cancellation
        whatever was started is stopped and the exception goes on."""
        try:
            await self._start()
        except BaseException:
            await self.stop()
            raise

    async def _start(self) -> None:
        settings = self.settings
        faults = FaultPlan.parse(settings.fault)
        if self.serve_http:
            self.phase = "opening the HTTP port"
            self.health = HealthServer(self.metrics)
            self.health.add_check(STARTUP_CHECK, self._started)
            await self.health.start(port=settings.http_port)
        self.phase = "loading the executor"
        executor = self.executor or load_executor(settings.executor)
        self.phase = "opening the database and the blob store"
        await self._open_stores()
        assert self.store is not None
        assert self.blobs is not None
        self.driver = RuntimeDriver(self.store, self.blobs, limits=settings.limits.to_limits(),
                                    max_cached_runtimes=settings.max_cached_runtimes,
                                    destroy_unknown_runtimes=settings.destroy_unknown_runtimes,
                                    live_peers=self._live_peers, faults=faults,
                                    events=EventSelection.parse(settings.events))
        self.phase = "connecting to the broker"
        self.broker = BrokerLink(settings.amqp_url.get_secret_value(), self.topology,
                                 faults=faults, connect_timeout=settings.connect_timeout_seconds)
        first_link = await self.broker.connect_once()  # an unreachable broker fails start-up
        self.watchdog = Watchdog(settings.stall_seconds)
        self.outbox = outbox_relay(settings, self.topology, self.store, self.broker,
                                   worker_id=self.worker_id, metrics=self.metrics, faults=faults)
        self.committer = Committer(
            self.driver, self.broker, limits=settings.limits.to_limits(),
            access=access_of(settings, self.topology), delivery_limit=settings.delivery_limit,
            window_seconds=settings.group_commit_window_ms / 1000,
            max_batch=settings.prefetch, commits_in_flight=settings.commits_in_flight,
            on_commit=self.outbox.notify, metrics=self.metrics, watchdog=self.watchdog,
            faults=faults,
        )
        self.run_loop = RunLoop(self.driver, executor, submit=self.committer.submit_step,
                                restorer=Restorer(self.blobs, self.driver.session),
                                max_concurrent=settings.max_concurrent_runs,
                                executor_timeout=settings.executor_timeout_seconds,
                                metrics=self.metrics, faults=faults)
        self.left_work = LeftWork(self.store, self.driver, self.run_loop, me=self.worker_id,
                                  group=self.topology.prefix, live_peers=self._live_peers,
                                  every=settings.heartbeat_seconds * MISSED_HEARTBEATS)
        shards = self.topology.queue_names()
        self.consumers = ShardConsumers(
            self.broker, self.committer, [] if settings.membership else shards,
            prefetch=settings.prefetch, release_timeout=settings.shutdown_grace_seconds,
            watchdog=self.watchdog, faults=faults, runtimes=self.driver,
            handover_wait=self._handover_wait,
        )
        self.metrics.refreshers.append(self._refresh_gauges)
        self._supervise(first_link)
        await self._bounded(self.broker.wait_up(), "the broker")
        if settings.membership:
            self.phase = "joining the membership"
            self.membership = Membership(
                self.store, shards, self.consumers.assign,
                heartbeat_seconds=settings.heartbeat_seconds, group=self.topology.prefix,
                worker_id=self.worker_id, faults=faults,
            )
            await self._bounded(self.membership.join(), "the database")
            await self.membership.start()
        self.phase = "resuming work left behind"
        await self.resume_left_work()
        self.phase = "starting the outbox relay"
        await self._bounded(self.outbox.wait_started(), "the outbox relay")
        self._start_retention()
        self._add_health_checks()
        self.phase = "finishing start-up"
        await faults.reach("startup_end")
        self.phase = None
        if self.health is not None:
            self.health.remove_check(STARTUP_CHECK)

    async def _bounded(self, step: Awaitable[T], what: str) -> T:
        """A start-up step that waits on a dependency, within the connect timeout."""
        timeout = self.settings.connect_timeout_seconds
        try:
            return await bounded(step, timeout)
        except TimeoutError:
            raise TimeoutError(
                f"{what} did not answer within {timeout:g}s (MEERKAT_CONNECT_TIMEOUT_SECONDS)"
            ) from None

    async def _started(self) -> None:
        if self.phase is not None:
            raise ReadinessError(f"starting: {self.phase}")

    async def _open_stores(self) -> None:
        settings = self.settings
        database_url = settings.database_url.get_secret_value()
        # The embedded default needs no separate migrate step; a local file, no connect bound.
        sqlite = database_url.startswith("sqlite")
        self.worker_id = self.worker_id or new_worker_id()
        opening = open_runtime_store(database_url, writer_id=self.worker_id,
                                     writer_group=self.topology.prefix, create_schema=sqlite,
                                     require_schema=True)
        self.store = await (opening if sqlite else self._bounded(opening, "the database"))
        self.blobs = open_blob_store(settings.blob_url.get_secret_value(),
                                     max_blob_bytes=settings.limits.max_image_bytes)
        await self._bounded(self.blobs.ping(), "the blob store")

    def _supervise(self, first_link: Link) -> None:
        assert self.broker is not None
        assert self.committer is not None
        assert self.outbox is not None
        self.supervisor = Supervisor(on_fatal=self._on_fatal, metrics=self.metrics)
        links = [first_link]
        broker = self.broker
        self.supervisor.spawn("broker", lambda: broker.run(links.pop() if links else None))
        self.supervisor.spawn("committer", self.committer.run, policy=COMMITTER_POLICY)
        self.supervisor.spawn("outbox", self.outbox.run)
        if self.settings.membership:
            assert self.left_work is not None
            self.supervisor.spawn("sweep", self.left_work.sweep)

    def _start_retention(self) -> None:
        """The pruner and the dead queue's gauge (measured at once), the broker link up."""
        assert self.store is not None
        assert self.supervisor is not None
        broker, dead_queue = self.broker, self.topology.dead_queue
        assert broker is not None
        self.retention = Retention(
            self.store, RetentionPolicy.from_settings(self.settings), self.metrics,
            measure_dead_queue=lambda: broker.message_count(dead_queue),
            dead_letter_max_length=self.topology.dead_letter_max_length,
            should_prune=lambda: prunes_here(
                self.worker_id, self.membership.live if self.membership else []
            ),
        )
        self.supervisor.spawn("retention", self.retention.run)

    def _on_fatal(self, name: str, exc: BaseException) -> None:
        log.error("task_fatal", task=name, error=repr(exc))
        if self.fatal is None:
            self.fatal = (name, exc)
        self._failed.set()

    async def wait_failed(self) -> tuple[str, BaseException]:
        await self._failed.wait()
        assert self.fatal is not None
        return self.fatal

    def _add_health_checks(self) -> None:
        if self.health is None:
            return
        assert self.store is not None
        assert self.blobs is not None
        assert self.consumers is not None
        assert self.supervisor is not None
        assert self.watchdog is not None
        self.health.add_check("database", self.store.ping)
        self.health.add_check("blob_store", self.blobs.ping)
        self.health.add_check("broker", self._broker_ready)
        self.health.add_check("consumers", self.consumers.readiness)
        self.health.add_check("tasks", self.supervisor.readiness)
        if self.membership is not None:
            self.health.add_check("membership", self.membership.readiness)
        assert self.outbox is not None
        assert self.run_loop is not None
        stall = self.settings.stall_seconds
        outbox, run_loop = self.outbox, self.run_loop
        self.health.add_check("outbox", outbox.readiness)
        self.health.add_liveness_check("pipeline", self.watchdog.check)
        self.health.add_liveness_check("outbox", lambda: outbox.check(stall))
        self.health.add_liveness_check("runs", lambda: run_loop.check(stall))

    def _refresh_gauges(self) -> None:
        if self.driver is not None:
            self.metrics.runtimes_cached.set(len(self.driver.cached_ids()))
        if self.consumers is not None:
            self.metrics.consumers_registered.set(self.consumers.registered)
            self.metrics.shards_owned.set(len(self.consumers.owned))
        if self.watchdog is not None:
            self.watchdog.export(self.metrics)

    async def _broker_ready(self) -> None:
        if self.broker is not None:
            await self.broker.readiness()
        if self.committer is not None and not self.committer.healthy:
            raise ReadinessError("waiting for the database or blob store to come back")

    async def resume_left_work(self) -> int:
        """Take on work left by workers no longer live (:mod:`worker.resume`); how many."""
        assert self.left_work is not None
        return await self.left_work.resume()

    def _handover_wait(self) -> float:
        return self.membership.handover_wait() if self.membership is not None else 0.0

    def _live_peers(self) -> set[str]:
        if self.membership is None:
            return set()
        return set(self.membership.live) - {self.worker_id}

    async def run_until_idle(self) -> None:
        """Until every received delivery is settled, no run is pending and the outbox is empty."""
        assert self.committer
        assert self.run_loop
        assert self.outbox
        while True:
            await self.committer.wait_idle()
            await self.run_loop.wait_idle()
            await self.outbox.publish_pending()
            if self.committer.idle and self.run_loop.idle:
                return

    @property
    def stopping(self) -> bool:
        return self._stopped

    def drain_state(self) -> dict[str, object]:
        """What stopping waits for: the step under way, the deliveries and commits of the
        pipeline, the runs, the shards still held."""
        return {
            "waiting_for": self.stage,
            "pipeline": self.committer.describe() if self.committer else None,
            "runs": self.run_loop.describe() if self.run_loop else None,
            "shards_held": self.consumers.registered if self.consumers else 0,
        }

    async def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        grace = self.settings.shutdown_grace_seconds
        log.info("worker_draining" if self.phase is None else "worker_start_abandoned",
                 phase=self.phase, grace_seconds=grace, **self.drain_state())
        if self.membership is not None:
            self.stage = "the heartbeat loop to end"
            await self.membership.stop(grace)
            self.stage = "the membership row's mark as leaving"
            await self._leave(self.membership.set_leaving)
        if self.consumers is not None:
            self.stage = "the commits under way on each shard, then the shards' release"
            await self.consumers.stop()
        if self.committer is not None:
            self.committer.stop()
        if self.membership is not None:
            self.stage = "the membership row's deletion"
            await self._leave(self.membership.leave)
        if self.run_loop is not None:
            self.stage = "running executors to reach a checkpoint"
            await self.run_loop.stop(grace)
        if self.outbox is not None and self.broker is not None and self.broker.link:
            self.stage = "the outbox to publish its events"
            with contextlib.suppress(Exception):
                await bounded(self.outbox.publish_pending(), min(grace, 5.0))
        if self.supervisor is not None:
            self.stage = "the tasks to end"
            await self.supervisor.stop(min(grace, 5.0))
        self.stage = "the connections to close"
        await self._close()
        self.stage = None

    async def _leave(self, step: Callable[[], Awaitable[None]]) -> None:
        """Mark the row leaving, or delete it; on failure the row expires after its ttl."""
        try:
            await bounded(step(), min(self.settings.shutdown_grace_seconds, 5.0))
        except Exception as exc:
            log.warning("leave_failed", step=step.__name__, error=repr(exc))

    async def _close(self) -> None:
        if self.health is not None:
            await self.health.stop()
        if self.broker is not None:
            await self.broker.close()
        if self.store is not None:
            await self.store.close()
        if self.blobs is not None:
            await self.blobs.close()
