"""Retention: the pruner that keeps the tables from growing, and the dead queue's depth.

Every ``MEERKAT_RETENTION_INTERVAL_SECONDS`` (and once at start-up) a supervised task:

1. measures the dead queue (a passive declare on the broker link gives its message count) and
   sets ``meerkat_dead_letter_queue_messages``, next to ``meerkat_dead_letter_queue_max_length``
   (the queue's ``x-max-length``), so an alert can fire before the bound drops dead letters;
2. prunes the store (:meth:`persistence.ports.RetentionStore.prune`): outbox events sent more
   than ``MEERKAT_OUTBOX_RETENTION_SECONDS`` ago; terminal inputs, receipts none of whose
   inputs is live, and processed commands older than ``MEERKAT_DEDUPE_WINDOW_SECONDS``.

Why these bounds are safe: an event is pruned only once the relay marked it sent (published
with a confirm); an input only once terminal, so no run, recovery or cold load needs it again.
What pruning gives up is dedupe beyond the window: a redelivered or re-published input id,
idempotency key or command id older than the window is accepted as new. The window is meant to
outlast any redelivery the broker or a producer's retry can make (days, not seconds).

One worker is enough: with membership, the first of the live workers (their ids sorted) prunes
and the others only measure. Two workers that disagree for a heartbeat both prune, which is
harmless: the store deletes in small batches, each row once, and PostgreSQL's ``SKIP LOCKED``
keeps two prunes from waiting on each other. A failure (database or broker away) is logged
(``retention_failed``), counted in ``meerkat_retention_failures_total{step}`` and tried again at
the next interval; it never ends the task, and a failed measurement leaves the gauge as it was.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import structlog

from persistence.ports import PruneReport, RetentionStore
from worker.config import Settings
from worker.metrics import Metrics

log = structlog.get_logger(__name__)

MeasureQueue = Callable[[], Awaitable[int]]
"""Returns the dead queue's message count (raises when it cannot be read)."""


@dataclass(frozen=True)
class RetentionPolicy:
    """How long what is kept, and how often the pruner looks."""

    outbox_retention: timedelta = timedelta(hours=1)
    dedupe_window: timedelta = timedelta(days=7)
    interval_seconds: float = 60.0

    def __post_init__(self) -> None:
        if (self.outbox_retention <= timedelta(0) or self.dedupe_window <= timedelta(0)
                or self.interval_seconds <= 0):
            raise ValueError(f"not a usable retention policy: {self}")

    @classmethod
    def from_settings(cls, settings: Settings) -> RetentionPolicy:
        return cls(
            outbox_retention=timedelta(seconds=settings.outbox_retention_seconds),
            dedupe_window=timedelta(seconds=settings.dedupe_window_seconds),
            interval_seconds=settings.retention_interval_seconds,
        )

    def cutoffs(self, now: datetime) -> tuple[datetime, datetime]:
        """``(sent_events_before, terminal_before)`` for a prune at ``now``."""
        return now - self.outbox_retention, now - self.dedupe_window


def prunes_here(worker_id: str | None, live: Sequence[str]) -> bool:
    """Whether this worker prunes: the first of the live workers does; without a membership
    view (none yet, or membership off) every worker does."""
    if worker_id is None or not live:
        return True
    return min(live) == worker_id


def _utc_now() -> datetime:
    return datetime.now(UTC)


class Retention:
    """The periodic task; :meth:`run` is supervised, :meth:`tick` is one pass (for tests)."""

    def __init__(
        self,
        store: RetentionStore,
        policy: RetentionPolicy,
        metrics: Metrics,
        *,
        measure_dead_queue: MeasureQueue | None = None,
        dead_letter_max_length: int | None = None,
        should_prune: Callable[[], bool] = lambda: True,
        clock: Callable[[], datetime] = _utc_now,
    ) -> None:
        self._store = store
        self.policy = policy
        self._metrics = metrics
        self._measure = measure_dead_queue
        self._should_prune = should_prune
        self._clock = clock
        self.passes = 0
        """Passes finished (whether or not a step of them failed)."""
        self.deleted = PruneReport()
        """Everything this worker's prunes deleted so far."""
        if dead_letter_max_length is not None:
            metrics.dead_letter_queue_max_length.set(dead_letter_max_length)
        for table in PruneReport().counts():
            metrics.retention_deleted.labels(table=table)  # at 0 from the start
        for step in ("prune", "dead_letter_queue"):
            metrics.retention_failures.labels(step=step)

    async def run(self) -> None:
        while True:
            await self.tick()
            await asyncio.sleep(self.policy.interval_seconds)

    async def tick(self) -> PruneReport | None:
        """Measure the dead queue, then prune if this worker is the one to; the prune's report,
        or None when it did not prune or the prune failed."""
        try:
            await self.measure_dead_queue()
            return await self.prune() if self._should_prune() else None
        finally:
            self.passes += 1

    async def measure_dead_queue(self) -> None:
        if self._measure is None:
            return
        try:
            depth = await self._measure()
        except Exception as exc:  # the broker is away: the gauge keeps its last value
            self._failed("dead_letter_queue", exc)
            return
        self._metrics.dead_letter_queue_messages.set(depth)

    async def prune(self) -> PruneReport | None:
        now = self._clock()
        sent_before, terminal_before = self.policy.cutoffs(now)
        started = time.monotonic()
        try:
            report = await self._store.prune(
                now, sent_events_before=sent_before, terminal_before=terminal_before
            )
        except Exception as exc:  # the database is away: the next interval tries again
            self._failed("prune", exc)
            return None
        self.deleted += report
        for table, count in report.counts().items():
            if count:
                self._metrics.retention_deleted.labels(table=table).inc(count)
        if report.total:
            log.info("retention_pruned", **report.counts(),
                     seconds=round(time.monotonic() - started, 3))
        return report

    def _failed(self, step: str, exc: Exception) -> None:
        self._metrics.retention_failures.labels(step=step).inc()
        log.warning("retention_failed", step=step, error=repr(exc),
                    retry_in_seconds=self.policy.interval_seconds)
