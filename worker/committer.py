"""Group commit: the deliveries of a few milliseconds become one transaction.

Deliveries from every shard consumer of this process enter one :class:`~worker.intake.Intake`,
which hands them out in per-runtime publish order. A batch is decided message by message (each
on the state the previous one produced), committed once, and only then settled: acks for what
committed, dead letters for permanent rejections, replies after both.

No failure gives a delivery back to the broker, because a returned message both loses its place
(the runtime's later messages would overtake it) and spends one of the broker's deliveries,
which belong to the message, not to the worker's troubles:

- **A dependency outage** (database or blob store unreachable, or a COMMIT whose outcome is
  unknown): nothing was swapped in; processing pauses until the dependency answers again
  (readiness says so, the watchdog counts each probe as progress), then the *same* batch is
  decided again. A redelivery of something that did commit is recognised by dedupe.
- **Any other failure of a batch** retries it one message at a time, which isolates the culprit.
- **A single message that fails** is held in the intake with backoff, its runtime's later
  deliveries behind it, and decided again; a version conflict is first retried at once on a
  fresh load. After ``delivery_limit`` failed attempts it is dead-lettered with the reason in
  ``x-meerkat-error``. The count lives in this process; the queues' own delivery limit is only a
  backstop against a message that crashes the whole process.
- **A delivery whose channel closed** (broker restart, connection loss, a hand-over) is
  dropped, never settled on another channel: the broker has already put it back.

The loop is a supervised task. If it dies anyway, the batch it held is retried first, one
message at a time, each attempt counted, so a message that kills the loop is dead-lettered
after ``delivery_limit`` tries instead of stopping the worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import itertools
from collections import OrderedDict
from collections.abc import Awaitable, Callable

import aiormq.abc
import structlog
from aio_pika.abc import AbstractIncomingMessage

from persistence.errors import StoreError, StoreUnavailable, VersionConflict
from schemas import Limits
from worker.broker import BrokerLink, backoff
from worker.decide import decide_batch
from worker.driver import RuntimeDriver
from worker.faults import NO_FAULTS, FaultPlan
from worker.intake import Delivery, Intake
from worker.metrics import Metrics
from worker.parsing import ParsedCommand, ParsedInput, parse_delivery
from worker.policy import Settlement
from worker.settle import settle_batch
from worker.watchdog import Watchdog

log = structlog.get_logger(__name__)

FREE_CONFLICT_RETRIES = 3
"""Version conflicts retried at once on a fresh load before one counts as a failure."""
MAX_TRACKED_FAILURES = 100_000


def is_outage(exc: BaseException) -> bool:
    """A dependency could not be reached (as opposed to a message-specific failure)."""
    # CommitOutcomeUnknown is a StoreUnavailable: the commit is decided again, dedupe decides.
    return isinstance(exc, StoreUnavailable | ConnectionError | OSError | TimeoutError)


class Committer:
    def __init__(
        self,
        driver: RuntimeDriver,
        broker: BrokerLink,
        *,
        limits: Limits,
        delivery_limit: int,
        window_seconds: float = 0.005,
        max_batch: int = 256,
        on_commit: Callable[[], None] = lambda: None,
        metrics: Metrics | None = None,
        watchdog: Watchdog | None = None,
        faults: FaultPlan = NO_FAULTS,
    ) -> None:
        self._metrics = metrics or Metrics()
        self._driver = driver
        self._broker = broker
        self._limits = limits
        self._delivery_limit = delivery_limit
        self._window = window_seconds
        self._max_batch = max_batch
        self._on_commit = on_commit
        self._watchdog = watchdog or Watchdog(stall_seconds=60.0)
        self._faults = faults
        self._intake = Intake(on_drop=self._dropped)
        self._in_flight: list[Delivery] = []
        self._failures: OrderedDict[str, int] = OrderedDict()
        self._stopping = False
        self.healthy = True
        self.settled = 0
        """Deliveries settled for good: acked after their commit, or dead-lettered."""
        self.failures = 0
        """Batches whose decide-and-commit failed (each then retried)."""
        self._changed = asyncio.Condition()
        self._idle = asyncio.Event()
        self._idle.set()

    # -- intake ------------------------------------------------------------------------------

    def submit(self, message: AbstractIncomingMessage) -> None:
        """Called by a shard consumer for each delivery (which counted it as received)."""
        self._idle.clear()
        try:
            channel = message.channel
        except Exception:  # closed already: the broker has it back
            self._dropped(1)
            return
        parsed = parse_delivery(message.body, message.type, self._limits,
                                routing_key=message.routing_key, message_id=message.message_id)
        kind = {ParsedInput: "input", ParsedCommand: "command"}.get(type(parsed), "malformed")
        self._metrics.messages_received.labels(kind=kind).inc()
        self._intake.put(Delivery(message, channel, parsed))

    def pause_intake(self, seconds: float) -> None:
        """Decide nothing for ``seconds`` (the consumers ask after a reconnect)."""
        self._intake.pause(seconds)

    def _dropped(self, count: int) -> None:
        if count:
            self._metrics.messages_requeued.labels(reason="channel_closed").inc(count)
            self._watchdog.settled(count)
        self._refresh_idle()

    def _refresh_idle(self) -> None:
        if self.idle:
            self._idle.set()

    async def release(self, channel: aiormq.abc.AbstractChannel, grace: float) -> None:
        """Stop deciding deliveries of ``channel`` and wait (up to ``grace`` s) until the
        ones already being committed are settled; the caller then closes the channel."""
        self._intake.release(channel)

        def finished() -> bool:
            return not any(d.channel is channel for d in self._in_flight)

        async with self._changed:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait_for(finished), grace)

    # -- the loop ----------------------------------------------------------------------------

    async def run(self) -> None:
        """Take batches for as long as the worker runs (a supervised task, cancelled at
        shutdown once the consumers have been released; see the module docstring)."""
        if self._in_flight:
            crashed, self._in_flight = self._in_flight, []
            log.warning("committer_resumed_after_crash", deliveries=len(crashed))
            crash = RuntimeError("the committer stopped on this batch")
            await self._in_runtime_order(crashed, lambda d: self._fail(d, crash))
        while True:
            batch = self._in_flight = await self._intake.take(self._max_batch, self._window)
            await self._faults.reach("committer_loop")
            await self._process(batch)
            await self._done_with_batch()

    async def _done_with_batch(self) -> None:
        async with self._changed:
            self._in_flight = []
            self._changed.notify_all()
        self._refresh_idle()

    def stop(self) -> None:
        """Shutting down: an outage is no longer waited out (the loop itself is cancelled)."""
        self._stopping = True

    async def _process(self, batch: list[Delivery]) -> None:
        conflicts = 0
        while batch := [d for d in batch if self._alive(d)]:
            try:
                decided = await decide_batch(self._driver, batch, self._metrics)
            except Exception as exc:
                self._note_failure(batch, exc)
                if is_outage(exc):
                    await self._wait_until_healthy(batch)
                    continue
                if isinstance(exc, VersionConflict) and conflicts < FREE_CONFLICT_RETRIES:
                    conflicts += 1  # the driver dropped the stale copy; decide on a fresh load
                    continue
                if len(batch) > 1:
                    await self._in_runtime_order(batch, lambda d: self._process([d]))
                else:
                    await self._fail(batch[0], exc)
                return
            self._metrics.commits.inc()
            self._metrics.commit_batch_size.observe(len(batch))
            self._on_commit()
            await self._faults.reach("after_commit_before_ack")
            await self._settle(decided)
            return

    async def _in_runtime_order(
        self, batch: list[Delivery], each: Callable[[Delivery], Awaitable[None]]
    ) -> None:
        """``each`` delivery in turn, except those of a runtime held meanwhile: they queue
        behind its failed delivery, in order."""
        for delivery in batch:
            if self._intake.is_held(delivery.runtime_id):
                self._intake.hold_behind(delivery)
            else:
                await each(delivery)

    def _note_failure(self, batch: list[Delivery], exc: Exception) -> None:
        log.warning("commit_failed", size=len(batch), error=repr(exc))
        self.failures += 1
        self._metrics.commit_failures.labels(error=type(exc).__name__).inc()
        if isinstance(exc, StoreError) and not is_outage(exc) and len(batch) == 1:
            runtime_id = batch[0].runtime_id
            if runtime_id is not None:  # the cached copy may disagree with the store
                self._driver.drop(runtime_id)

    async def _fail(self, delivery: Delivery, exc: BaseException) -> None:
        """The delivery's own processing failed: hold it for a retry, or give up on it."""
        key = _identity(delivery.message)
        attempts = self._failures.pop(key, 0) + 1
        if attempts >= self._delivery_limit:
            reason = f"gave up after {attempts} failed attempts: {type(exc).__name__}: {exc}"
            await self._settle([(delivery, Settlement.dead_letter(reason))])
            return
        self._failures[key] = attempts
        while len(self._failures) > MAX_TRACKED_FAILURES:
            self._failures.popitem(last=False)
        self._metrics.messages_requeued.labels(reason=type(exc).__name__).inc()
        self._watchdog.progressed()
        self._intake.hold(delivery, backoff(attempts, base=0.1))

    async def _settle(self, decided: list[tuple[Delivery, Settlement]]) -> None:
        link = self._broker.link
        settled, lost = await settle_batch(decided, link, self._metrics)
        for delivery in lost:  # its channel died, or settling broke it: the broker has it back
            await _close_quietly(delivery.channel)
        if self._failures:
            for delivery, _ in decided:
                self._failures.pop(_identity(delivery.message), None)
        self._dropped(len(lost))
        self._watchdog.settled(len(settled))
        async with self._changed:
            self.settled += len(settled)
            self._changed.notify_all()

    async def _wait_until_healthy(self, batch: list[Delivery]) -> None:
        """Back off until the database and the blob store answer again (or nothing of the
        batch is left to decide, because its channels closed)."""
        self.healthy = False
        try:
            for attempt in itertools.count(1):
                if self._stopping or not any(self._alive(d) for d in batch):
                    return
                try:
                    await self._driver.store.ping()
                    await self._driver.blobs.ping()
                    return
                except Exception:
                    self._watchdog.progressed()
                    await asyncio.sleep(backoff(attempt, base=0.1))
        finally:
            self.healthy = True

    def _alive(self, delivery: Delivery) -> bool:
        if self._intake.alive(delivery):
            return True
        self._dropped(1)
        return False

    # -- for shutdown and tests --------------------------------------------------------------

    @property
    def idle(self) -> bool:
        return not self._in_flight and len(self._intake) == 0

    async def wait_idle(self) -> None:
        """Until nothing is waiting or being decided (a held delivery counts as waiting)."""
        await self._idle.wait()

    async def wait_settled(self, count: int) -> None:
        """Until at least ``count`` deliveries have been settled for good (tests use it)."""
        async with self._changed:
            await self._changed.wait_for(lambda: self.settled >= count)


def _identity(message: AbstractIncomingMessage) -> str:
    """What the failure count of a message is kept under, across its redeliveries."""
    if message.message_id:
        return f"{message.routing_key}\0{message.message_id}"
    return hashlib.blake2b(message.body, digest_size=16).hexdigest()


async def _close_quietly(channel: aiormq.abc.AbstractChannel) -> None:
    if channel.is_closed:
        return
    with contextlib.suppress(Exception):
        await channel.close()

