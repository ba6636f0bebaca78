"""The worker process: wires the store, blob store, driver, broker, run loop and HTTP endpoint,
and shuts them down gracefully.

Shutdown order matters: stop receiving first, let the committer finish the batch it holds (its
acks follow its commit), give back deliveries never started, let running executors reach a
checkpoint within the grace period (or abandon them to recovery), publish what the outbox holds,
then close connections. Closing the channels returns every unacked delivery to its queue.

With membership the heartbeat loop ends first, so no shard is taken on while stopping, and the
worker leaves the membership as soon as its batch in flight is settled: the others take its
shards at their next heartbeat instead of after the heartbeat ttl.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any

import aio_pika
import structlog
from aio_pika.abc import AbstractChannel, AbstractRobustConnection

from persistence.blobs import open_blob_store
from persistence.factory import open_runtime_store
from persistence.migrate import upgrade_async
from persistence.ports import BlobStore, RuntimeStore
from worker.committer import Committer
from worker.config import Settings
from worker.consumer import ShardConsumers
from worker.driver import RuntimeDriver
from worker.executors import Executor, load_executor
from worker.health import HealthServer, ReadinessError
from worker.membership import Membership, new_worker_id
from worker.metrics import Metrics
from worker.outbox import OutboxRelay
from worker.replies import ReplyPublisher
from worker.runloop import RunLoop
from worker.topology import Topology

log = structlog.get_logger(__name__)


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
    committer: Committer | None = None
    run_loop: RunLoop | None = None
    outbox: OutboxRelay | None = None
    consumers: ShardConsumers | None = None
    health: HealthServer | None = None
    membership: Membership | None = None
    _stopped: bool = False
    _connection: AbstractRobustConnection | None = None
    _publish_channel: AbstractChannel | None = None
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)

    async def start(self) -> None:
        settings = self.settings
        database_url = settings.database_url.get_secret_value()
        if database_url.startswith("sqlite"):
            await upgrade_async(database_url)  # the embedded default needs no separate step
        self.store = await open_runtime_store(database_url)
        self.worker_id = self.worker_id or new_worker_id()
        self.store.writer_id = self.worker_id
        self.blobs = open_blob_store(settings.blob_url.get_secret_value(),
                                     max_blob_bytes=settings.limits.max_image_bytes)
        await self.blobs.ping()
        self.driver = RuntimeDriver(self.store, self.blobs, limits=settings.limits.to_limits(),
                                    max_cached_runtimes=settings.max_cached_runtimes)
        executor = self.executor or load_executor(settings.executor)
        self.run_loop = RunLoop(self.driver, executor,
                                max_concurrent=settings.max_concurrent_runs,
                                executor_timeout=settings.executor_timeout_seconds,
                                metrics=self.metrics)

        self._connection = await aio_pika.connect_robust(settings.amqp_url.get_secret_value())
        await self.topology.declare(await self._connection.channel())
        self._publish_channel = await self._connection.channel(publisher_confirms=True)
        dead_letters = await self._publish_channel.get_exchange(self.topology.dead_letter_exchange)
        events = await self._publish_channel.get_exchange(self.topology.events_exchange)
        self.outbox = OutboxRelay(self.store, events, metrics=self.metrics)
        self.committer = Committer(
            self.driver, dead_letters, ReplyPublisher(self._publish_channel),
            limits=settings.limits.to_limits(), delivery_limit=settings.delivery_limit,
            window_seconds=settings.group_commit_window_ms / 1000,
            max_batch=settings.prefetch, on_commit=self.outbox.notify, metrics=self.metrics,
        )
        self.metrics.refreshers.append(self._refresh_gauges)
        self._spawn(self.committer.run(), "committer")
        self._spawn(self.outbox.run(), "outbox")
        self.consumers = await self._start_consuming()
        await self.resume_left_work()
        if self.membership is not None:
            self._spawn(self._sweep(), "sweep")
        if self.serve_http:
            self.health = HealthServer(self.metrics)
            self.health.add_check("database", self.store.ping)
            self.health.add_check("blob_store", self.blobs.ping)
            self.health.add_check("broker", self._broker_ready)
            self.health.add_check("consumers", self.consumers.readiness)
            await self.health.start(port=settings.http_port)
        log.info("worker_started", shards=len(self.topology.queue_names()),
                 owned=len(self.consumers.owned) if self.consumers else 0,
                 worker_id=self.membership.worker_id if self.membership else None,
                 settings=settings.redacted())

    async def _start_consuming(self) -> ShardConsumers:
        """Every shard, or with membership the shards this worker owns after one heartbeat
        (a worker alone owns them all from the start)."""
        assert self._connection is not None
        assert self.committer is not None
        assert self.store is not None
        settings = self.settings
        shards = self.topology.queue_names()
        consumers = ShardConsumers(self._connection, self.committer,
                                   [] if settings.membership else shards,
                                   prefetch=settings.prefetch)
        self.consumers = consumers  # stop() finds them even if the first heartbeat fails
        await consumers.start()
        if settings.membership:
            self.membership = Membership(
                self.store, shards, consumers.assign,
                heartbeat_seconds=settings.heartbeat_seconds, group=self.topology.prefix,
                worker_id=self.worker_id,
            )
            await self.membership.start()
        return consumers

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        self._tasks.append(asyncio.get_running_loop().create_task(coro, name=name))

    def _refresh_gauges(self) -> None:
        if self.driver is not None:
            self.metrics.runtimes_cached.set(len(self.driver.cached_ids()))
        if self.consumers is not None:
            self.metrics.consumers_registered.set(self.consumers.registered)

    async def _broker_ready(self) -> None:
        if self._connection is None or self._connection.is_closed:
            raise ReadinessError("not connected to the broker")
        if self.committer is not None and not self.committer.healthy:
            raise ReadinessError("waiting for the database or blob store to come back")

    async def resume_left_work(self) -> int:
        """Load runtimes with queued or interrupted work that no live worker wrote last (left
        by a worker that crashed or stopped); loading wakes their run loop here. Returns how
        many were taken on. Work last written by a live peer is that peer's: taking it would
        re-run a batch its executor is still working on."""
        assert self.store is not None
        assert self.driver is not None
        peers = set(self.membership.live) - {self.worker_id} if self.membership else set()
        taken = 0
        for runtime_id in await self.store.runtimes_with_pending_work(exclude_writers=peers):
            if self.driver.cached(runtime_id) is not None:
                continue
            try:
                await self.driver.load(runtime_id)
                taken += 1
            except Exception as exc:
                log.warning("resume_failed", runtime_id=runtime_id, error=repr(exc))
        return taken

    async def _sweep(self) -> None:
        """Every heartbeat, take on work left behind by workers that are no longer live."""
        while True:
            await asyncio.sleep(self.settings.heartbeat_seconds)
            try:
                taken = await self.resume_left_work()
            except Exception as exc:  # the store is away; the next sweep tries again
                log.warning("sweep_failed", error=repr(exc))
                continue
            if taken:
                log.info("left_work_resumed", runtimes=taken)

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

    async def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        grace = self.settings.shutdown_grace_seconds
        if self.membership is not None:
            await self.membership.stop(grace)
        if self.consumers is not None:
            await self.consumers.stop()
        if self.committer is not None:
            self.committer.stop()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.committer.wait_idle(), grace)
        await self._leave()
        if self.run_loop is not None:
            await self.run_loop.stop(grace)
        if self.outbox is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.outbox.publish_pending(), min(grace, 5.0))
            self.outbox.stop()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self.committer is not None:
            await self.committer.release_pending()
        await self._close()

    async def _leave(self) -> None:
        if self.membership is None:
            return
        try:
            await asyncio.wait_for(self.membership.leave(),
                                   min(self.settings.shutdown_grace_seconds, 5.0))
        except Exception as exc:
            # The row then expires after the heartbeat ttl; the others take over then.
            log.warning("leave_failed", error=repr(exc))

    async def _close(self) -> None:
        if self.health is not None:
            await self.health.stop()
        if self.consumers is not None:
            await self.consumers.close()
        if self._connection is not None:
            await self._connection.close()
        if self.store is not None:
            await self.store.close()
        if self.blobs is not None:
            await self.blobs.close()


async def serve(settings: Settings) -> None:
    """``meerkat-worker run``: start, then drain and stop on SIGTERM or SIGINT."""
    worker = Worker(settings, Topology.from_settings(settings))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await worker.start()
    try:
        await stop.wait()
        log.info("worker_stopping", grace_seconds=settings.shutdown_grace_seconds)
    finally:
        await worker.stop()
    log.info("worker_stopped")
