"""The committer: inbox → decide → commit → settle, for every shard of this process.

Deliveries from every shard consumer and run steps from the run loop enter one
:class:`~worker.pipeline.inbox.Inbox`, which hands them out in windows, in per-runtime order. A
window is decided in one driver transaction and committed once; only then are its deliveries
settled (acks, dead letters, replies) and its run steps answered. The loop decides the next
window while earlier ones commit, up to ``commits_in_flight`` at a time; a window that touches
a runtime an earlier one is still committing depends on it (see :mod:`worker.driver.transaction`).

No failure gives a delivery back to the broker: a returned message would lose its place behind
the runtime's later ones, and spend one of the broker's deliveries. What a failure leads to is
the policy's (:mod:`worker.pipeline.policy`), carried out by :mod:`worker.pipeline.isolation`:
an outage pauses the loop until the database and the blob store answer and the same items are
decided again; another failure retries the window one item at a time; an item failing alone is
held with backoff and dead-lettered after ``delivery_limit`` attempts. A delivery whose channel
closed is dropped, never settled on another channel: the broker has already put it back.
A window that fails while the next one is being decided puts that one back too, behind its own
items, when they share a runtime: the next window may not have reached that runtime yet (so it
does not depend on the failed one), and committing it would let a runtime's later message
overtake the earlier one that failed (a version conflict at a hand-over, typically).

The loop is a supervised task. If it dies while deciding a window, that window counts as failed
when the loop starts again, so a message that kills the loop is dead-lettered in the end.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import Callable, Sequence

import aiormq.abc
from aio_pika.abc import AbstractIncomingMessage

from schemas import Limits
from worker import tracing
from worker.broker import BrokerLink
from worker.deadline import bounded
from worker.driver import Aborted, RuntimeDriver
from worker.faults import NO_FAULTS, FaultPlan
from worker.metrics import Metrics
from worker.pipeline.authz import Access
from worker.pipeline.decide import Window, decide_window
from worker.pipeline.inbox import Delivery, Inbox, Item
from worker.pipeline.isolation import Isolation
from worker.pipeline.parsing import parse_delivery
from worker.pipeline.policy import OUTAGE_PROBE
from worker.pipeline.settle import Settler
from worker.pipeline.steps import RunStep
from worker.watchdog import Watchdog


class Committer:
    def __init__(
        self, driver: RuntimeDriver, broker: BrokerLink, *, limits: Limits, access: Access,
        delivery_limit: int,
        window_seconds: float = 0.005, max_batch: int = 256, commits_in_flight: int = 2,
        on_commit: Callable[[], None] = lambda: None, metrics: Metrics | None = None,
        watchdog: Watchdog | None = None, faults: FaultPlan = NO_FAULTS,
    ) -> None:
        metrics = metrics or Metrics()
        watchdog = watchdog or Watchdog(stall_seconds=60.0)
        self._driver = driver
        self._limits = limits
        self._access = access
        self._window = window_seconds
        self._max_batch = max_batch
        self._slots = asyncio.Semaphore(commits_in_flight)
        self._metrics = metrics
        self._watchdog = watchdog
        self._faults = faults
        self._settler = Settler(broker, metrics=metrics, watchdog=watchdog, on_commit=on_commit,
                                on_settled=lambda settled: self._isolation.settled(settled),
                                reply_allowed=access.reply_allowed)
        self._inbox = Inbox(on_drop=self._dropped)
        self._isolation = Isolation(self._inbox, delivery_limit=delivery_limit, metrics=metrics,
                                    drop=driver.drop, progressed=watchdog.progressed)
        self._windows: dict[object, Window] = {}
        """Windows being decided or committed, by transaction, oldest first."""
        self._deciding: Window | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._stopping = False
        self.healthy = True

    def submit(self, message: AbstractIncomingMessage) -> None:
        """Called by a shard consumer for each delivery (which counted it as received)."""
        received = time.monotonic()
        try:
            channel = message.channel
        except Exception:  # closed already: the broker has it back
            self._settler.gone(message)
            return
        parsed = parse_delivery(message.body, message.type, self._limits,
                                routing_key=message.routing_key, message_id=message.message_id,
                                exchange=message.exchange, user_id=message.user_id,
                                access=self._access)
        self._settler.received(message, channel, parsed)
        self._inbox.put(Delivery(message, channel, parsed, received=received,
                                 trace=tracing.received(message)))

    def _dropped(self, items: Sequence[Item]) -> None:
        self._settler.dropped([i for i in items if isinstance(i, Delivery)])
        self._settler.changed(self.idle)

    def submit_step(self, step: RunStep) -> None:
        """Called by the run loop: a run to stage or to end, in the next window."""
        self._settler.busy()
        self._inbox.put_step(step)

    def pause_intake(self, seconds: float) -> None:
        """Decide nothing for ``seconds`` (the consumers ask after a reconnect)."""
        self._inbox.pause(seconds)

    def abandon(self, channel: aiormq.abc.AbstractChannel) -> None:
        """Decide no delivery of ``channel`` from now on: it is being closed, and every
        delivery it had not settled returns to the queue in order."""
        self._inbox.release(channel)

    async def release(self, channel: aiormq.abc.AbstractChannel, grace: float) -> None:
        """Stop deciding deliveries of ``channel`` and wait (up to ``grace`` s) until the ones
        already decided are settled; the caller then closes the channel."""
        self._inbox.release(channel)
        with contextlib.suppress(TimeoutError):
            await bounded(self._settler.wait_for(lambda: not any(
                isinstance(i, Delivery) and i.channel is channel
                for w in self._windows.values() for i in w.items)), grace)

    async def run(self) -> None:
        if self._deciding is not None:
            crashed, self._deciding = self._deciding, None
            self._windows.pop(crashed.transaction, None)
            await self._settler.settle(self._isolation.crashed(crashed))
        try:
            while True:
                if self._isolation.outage:
                    await self._wait_until_healthy()
                items = await self._inbox.take(self._max_batch, self._window)
                # From here the window is the one being decided: if the loop dies before it is
                # committed, the restart finds it in ``_deciding`` and puts its items back.
                window = self._deciding = Window(items, self._driver.transaction())
                self._windows[window.transaction] = window
                await self._faults.reach("committer_loop")
                try:
                    window.decisions = await decide_window(window.transaction, items)
                except Exception as exc:
                    self._deciding = None
                    window.transaction.discard()
                    if not self._overtaken(window):
                        self._failed(window, exc)
                    continue
                self._deciding = None
                if self._overtaken(window):
                    window.transaction.discard()
                    continue
                await self._slots.acquire()
                task = asyncio.get_running_loop().create_task(self._commit(window))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
        except asyncio.CancelledError:
            for task in self._tasks:
                task.cancel()
            raise

    async def _commit(self, window: Window) -> None:
        try:
            began = time.time_ns() if tracing.active() else 0
            with self._metrics.commit_seconds.time():
                await window.transaction.commit()
            if began:
                _trace_commit(window.items, began, time.time_ns())
            self._metrics.commits.inc()
            self._metrics.commit_batch_size.observe(len(window.items))
            await self._faults.reach("after_commit_before_ack")
            await self._settler.committed(window)
        except Aborted:
            pass  # put back by the failure of the window it depended on
        except Exception as exc:
            self._failed(window, exc)
        finally:
            self._slots.release()
            self._windows.pop(window.transaction, None)
            self._settler.changed(self.idle)

    def _overtaken(self, window: Window) -> bool:
        """Whether an earlier window failed while this one was being decided, and put its
        items back behind its own (see :meth:`_failed`)."""
        return window.transaction not in self._windows

    def _failed(self, window: Window, exc: BaseException) -> None:
        self._settler.failures += 1
        dependents = [self._windows[t] for t in window.transaction.dependents()
                      if t in self._windows]
        for dependent in dependents:
            del self._windows[dependent.transaction]
        # The window being decided may hold later items of the failed window's runtimes
        # without depending on it yet (it had not reached them): were it committed, they would
        # overtake the failed ones. It goes back too, behind them, and is never committed.
        deciding = self._deciding
        behind: list[Window] = []
        if deciding is not None and deciding is not window and _shares_runtime(
                deciding, [window, *dependents]):
            self._windows.pop(deciding.transaction, None)
            behind.append(deciding)
        dead = self._isolation.failed(window, exc, dependents, behind=behind)
        self._windows.pop(window.transaction, None)
        if dead:
            task = asyncio.get_running_loop().create_task(self._settler.settle(dead))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            task.add_done_callback(lambda _: self._settler.changed(self.idle))

    async def _wait_until_healthy(self) -> None:
        """Back off until the database and the blob store answer again."""
        self.healthy = False
        try:
            for attempt in itertools.count(1):
                if self._stopping:
                    return
                try:
                    await self._driver.ping()
                    return
                except Exception:
                    self._watchdog.progressed()
                await asyncio.sleep(OUTAGE_PROBE.delay(attempt))
        finally:
            self._isolation.outage = False
            self.healthy = True

    def stop(self) -> None:
        """Shutting down: an outage is no longer waited out (the loop itself is cancelled)."""
        self._stopping = True

    @property
    def settled(self) -> int:
        return self._settler.settled

    @property
    def failures(self) -> int:
        return self._settler.failures

    async def wait_idle(self) -> None:
        """Until nothing is waiting or being decided (a held delivery counts as waiting)."""
        await self._settler.wait_idle()

    async def wait_settled(self, count: int) -> None:
        """Until at least ``count`` deliveries have been settled for good (tests use it)."""
        await self._settler.wait_settled(count)

    def describe(self) -> dict[str, object]:
        """What is under way, for the log of a stop."""
        return {"waiting": len(self._inbox), "windows": len(self._windows),
                "deciding": self._deciding is not None, "settling": self._settler.settling}

    @property
    def idle(self) -> bool:
        return (not self._windows and self._deciding is None and len(self._inbox) == 0
                and self._settler.settling == 0)


def _trace_commit(items: Sequence[Item], began: int, ended: int) -> None:
    """A ``commit`` span under each delivery's ``accept`` span; the run steps' spans end."""
    size = {"meerkat.batch_size": len(items)}
    for item in items:
        if isinstance(item, Delivery):
            tracing.child(item.trace, "commit", began, ended, size)
        else:
            tracing.step_committed(item.trace, ended)


def _shares_runtime(window: Window, others: list[Window]) -> bool:
    runtimes = {i.runtime_id for w in others for i in w.items if i.runtime_id is not None}
    return any(i.runtime_id in runtimes for i in window.items)
