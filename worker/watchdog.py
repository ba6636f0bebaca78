"""Liveness from progress: the pipeline is wedged when deliveries wait and nothing moves.

Supervision sees a task that raises or returns; it cannot see one that awaits forever (a lost
wake-up, a lock never released, a future nobody resolves). Such a worker keeps its consumers
and its prefetch window full and processes nothing, so the only outside sign is that received
deliveries stop being settled. The watchdog counts both and fails :meth:`Watchdog.check` when
deliveries wait and the last sign of progress is older than ``stall_seconds``; ``/healthz``
runs that check, so the orchestrator restarts the process and the broker redelivers.

Settled means the worker is done with a delivery by any path: acked, dead-lettered, requeued,
or dropped because its channel closed. Progress is also any meaningful step that settles
nothing, such as one more attempt while the database is away: an outage holds deliveries
without settling them, and restarting a worker for a dependency's outage helps nobody.

The stall clock starts again when work arrives at an idle pipeline, so the first delivery
after an hour of quiet is not taken for an hour-long stall. Time comes from the injected
``clock``, so tests decide when time passes.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from worker.health import ReadinessError
from worker.metrics import Metrics


class Watchdog:
    def __init__(
        self,
        stall_seconds: float,
        clock: Callable[[], float] = time.monotonic,
        *,
        metrics: Metrics | None = None,
    ) -> None:
        if stall_seconds <= 0:
            raise ValueError("stall_seconds must be positive")
        self.stall_seconds = stall_seconds
        self._clock = clock
        self.received_count = 0
        self.settled_count = 0
        self.last_progress = clock()
        """The clock's time of the last settle, progress, or work arriving at an idle pipeline."""
        if metrics is not None:
            metrics.refreshers.append(lambda: self.export(metrics))

    @property
    def waiting(self) -> int:
        """Deliveries received and not yet settled."""
        # Never below zero, should a settle be counted for a receipt that was not.
        return max(self.received_count - self.settled_count, 0)

    def received(self, n: int = 1) -> None:
        if self.waiting == 0:
            self.last_progress = self._clock()
        self.received_count += n

    def settled(self, n: int = 1) -> None:
        self.settled_count += n
        self.last_progress = self._clock()

    def progressed(self) -> None:
        """The pipeline did something meaningful without settling a delivery."""
        self.last_progress = self._clock()

    def seconds_since_progress(self) -> float:
        """How long waiting deliveries have gone without progress; 0 while none wait."""
        if self.waiting == 0:
            return 0.0
        return max(self._clock() - self.last_progress, 0.0)

    def check(self) -> None:
        """The liveness check: raises while deliveries wait longer than ``stall_seconds``."""
        stalled_for = self.seconds_since_progress()
        if stalled_for > self.stall_seconds:
            raise ReadinessError(
                f"no delivery settled for {stalled_for:.0f}s while {self.waiting} wait"
            )

    def export(self, metrics: Metrics) -> None:
        metrics.deliveries_waiting.set(self.waiting)
        metrics.seconds_since_progress.set(self.seconds_since_progress())
