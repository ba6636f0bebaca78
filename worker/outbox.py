"""The outbox relay: committed events go to ``meerkat.events`` at least once.

Events are written by the same transaction as the state change they describe, with the
deployment (writer group) that wrote them. One relay per deployment publishes them: the one
whose store holds the group's lease (:mod:`persistence.sql.relay_lease`); the others stand by
and take over at their next pass once it is free. The relay reads
unsent ones in order, publishes them a batch at a time, in one write, with publisher confirms
(:mod:`worker.batch_publish`; routing key = event code, message id = event id, header
``x-runtime-id``), and marks them sent only after the broker confirmed the whole batch.
A crash in between publishes them again after a restart; consumers dedupe by event id.

The relay publishes on the broker link's publish channel of the moment: while the broker is
away, events wait in the outbox, and the relay's next pass after a reconnect sends them.

An event committed with a trace context (its outbox row's ``traceparent``, see
:mod:`worker.tracing`) is published with a ``traceparent`` header: with tracing on, that of a
``publish <code>`` span under the stored context, which ends when the batch is confirmed;
with tracing off, the stored one.

:class:`EventRelay` is what the worker uses of a relay: this one, run on the worker's event
loop, or :class:`worker.relay_process.RelayProcess`, which runs this one in a child process of
its own (``MEERKAT_OUTBOX_RELAY``). ``on_pass`` is told at the end of every pass (the child
reports its passes to the worker with it); ``min_pass_seconds`` spaces the passes of a relay
that is woken by every commit, so that each publishes more events for its round trips.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Protocol

import structlog

from persistence.ports import OutboxEvent, OutboxStore
from worker import tracing
from worker.batch_publish import Outgoing, publish_batch
from worker.broker import BrokerLink
from worker.deadline import event_set
from worker.faults import NO_FAULTS, FaultPlan
from worker.health import ReadinessError
from worker.metrics import Metrics

if TYPE_CHECKING:
    from opentelemetry.trace import Span

log = structlog.get_logger(__name__)


MIN_PASS_SECONDS = 0.02
"""The shortest time from one pass to the next: every commit wakes the relay, and a pass costs
its lease check and its database round trips whatever it publishes, so a relay woken by commit
after commit (a paced load commits in small windows) publishes the commits of 20 ms at once
rather than one pass each. An event waits that much longer for its publish at most."""

CONFIRM_SECONDS = 30.0
"""How long a batch waits for the broker's confirms before the pass gives up (the events stay
unsent and the next pass publishes them again)."""


def event_message(item: OutboxEvent, trace: Mapping[str, str] | None = None) -> Outgoing:
    """The message of an outbox event; ``trace``: its propagation headers."""
    headers = {"x-runtime-id": item.runtime_id}
    if trace:
        headers.update(trace)
    return Outgoing(
        body=item.body,
        routing_key=item.code,
        message_id=str(item.event_id),
        message_type=item.code,
        timestamp=item.at,
        headers=headers,
    )


class EventRelay(Protocol):
    """What the worker uses of its outbox relay, wherever it runs."""

    @property
    def leading(self) -> bool | None:
        """Whether this relay holds its group's lease (None: not asked yet)."""
        ...

    def notify(self) -> None:
        """A commit wrote events: publish them now rather than at the next poll."""

    async def publish_pending(self) -> int:
        """Publish every unsent event of the group now (if leading); how many."""
        ...

    async def run(self) -> None:
        """The relay's loop (a supervised task)."""

    async def wait_started(self) -> None:
        """Until the relay has finished its first pass (at once when it runs inline)."""

    async def readiness(self) -> None:
        """Raises while the relay cannot publish for a reason of its own (not an outage)."""

    def check(self, stall_seconds: float) -> None:
        """The liveness check (raises ReadinessError when wedged)."""

    def stop(self) -> None: ...


class OutboxRelay:
    def __init__(
        self,
        store: OutboxStore,
        broker: BrokerLink,
        *,
        batch_size: int = 1000,
        poll_seconds: float = 1.0,
        metrics: Metrics | None = None,
        faults: FaultPlan = NO_FAULTS,
        on_pass: Callable[[], None] | None = None,
        min_pass_seconds: float = MIN_PASS_SECONDS,
    ) -> None:
        self._on_pass = on_pass
        self._min_pass = min_pass_seconds
        self._metrics = metrics or Metrics()
        self._store = store
        self._broker = broker
        self._faults = faults
        self._batch_size = batch_size
        self._poll = poll_seconds
        self._wakeup = asyncio.Event()
        self._stopping = False
        self.last_pass = time.monotonic()
        """When the relay last finished a pass, published or not (its liveness)."""
        self.published = 0
        self.backlog = 0
        self.leading: bool | None = None
        """Whether this relay holds its group's lease (None: not asked yet)."""

    def notify(self) -> None:
        """A commit wrote events: publish them now rather than at the next poll."""
        self._wakeup.set()

    async def publish_pending(self) -> int:
        """Publish every unsent event of the group, if this relay holds the group's lease (one
        relay per deployment publishes, the others stand by); returns how many it published."""
        if not await self._lead():
            self.backlog = 0
            self._metrics.outbox_backlog.set(0)
            return 0
        total = 0
        while True:
            pending = await self._store.fetch_unsent_events(self._batch_size)
            self.backlog = len(pending)
            self._metrics.outbox_backlog.set(len(pending))
            if not pending:
                return total
            link = self._broker.link
            if link is None:
                raise ConnectionError("not connected to the broker")
            spans: list[Span] = []
            messages = [
                event_message(i, tracing.event_headers(i.traceparent, i.code, spans))
                if i.traceparent else event_message(i) for i in pending
            ]
            try:
                async with asyncio.timeout(CONFIRM_SECONDS):
                    await publish_batch(link.publish_channel, link.events.name, messages)
            except BaseException as exc:
                tracing.end_all(spans, repr(exc))
                raise
            tracing.end_all(spans)
            await self._faults.reach("during_outbox_publish")
            await self._store.mark_events_sent([item.position for item in pending])
            total += len(pending)
            self.published += len(pending)
            self._metrics.outbox_published.inc(len(pending))

    async def _lead(self) -> bool:
        leading = await self._store.lead_relay()
        if leading is not self.leading:
            log.info("outbox_relay_leading" if leading else "outbox_relay_standing_by")
            self.leading = leading
        return leading

    async def run(self) -> None:
        while not self._stopping:
            await self._faults.reach("outbox_loop")
            began = time.monotonic()
            # Cleared before the pass: a commit notified during it gets a pass of its own.
            self._wakeup.clear()
            try:
                await self.publish_pending()
            except Exception as exc:  # broker or store away: events wait in the outbox
                log.warning("outbox_publish_failed", error=repr(exc))
            self.last_pass = time.monotonic()
            if self._on_pass is not None:
                self._on_pass()
            await event_set(self._wakeup, self._poll)
            rest = began + self._min_pass - time.monotonic()
            if rest > 0:  # passes at most this often: the commits in between share one
                await asyncio.sleep(rest)

    async def wait_started(self) -> None:
        return

    async def readiness(self) -> None:
        return

    def check(self, stall_seconds: float) -> None:
        """The liveness check: a relay that has not finished a pass for ``stall_seconds``
        beyond its poll interval is wedged (a pass ends within seconds, even when the broker
        or the store is away)."""
        since = time.monotonic() - self.last_pass
        if since > stall_seconds + self._poll:
            raise ReadinessError(f"outbox relay has not finished a pass for {since:.0f}s")

    def stop(self) -> None:
        self._stopping = True
        self._wakeup.set()
