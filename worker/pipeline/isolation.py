"""What happens to a window whose decide-and-commit failed: the failure rows of the policy.

The policy (:func:`~worker.pipeline.policy.settlement_after_failure`) says what to do with each
item; this module does it, all at once and before anything else is decided, so that no later
item of a runtime can overtake an earlier one:

- the windows that depended on the failed one are aborted, and their items go back to the inbox
  front behind the failed window's own (in window order);
- an item to decide again (after an outage, a free conflict retry, or to be retried alone) goes
  back to the front; one to hold waits in the inbox with its runtime's later items behind it;
- a run step given up fails its future, and the run loop backs off;
- a message that failed ``delivery_limit`` times is dead-lettered (the caller settles it).

A held delivery is logged (``delivery_held``, with its attempt and the wait before the next);
a version conflict is counted in ``meerkat_version_conflicts_total``.

Failed attempts are counted per message identity (routing key and message id), in memory, so the
count survives the message's redeliveries within this process.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Callable, Sequence

import structlog
from aio_pika.abc import AbstractIncomingMessage

from persistence.errors import StoreError, VersionConflict
from worker.metrics import Metrics
from worker.pipeline.decide import Window
from worker.pipeline.inbox import Delivery, Inbox, Item
from worker.pipeline.policy import Action, Settlement, is_outage, settlement_after_failure
from worker.pipeline.steps import RunStep

log = structlog.get_logger(__name__)

MAX_TRACKED_FAILURES = 100_000


class RunStepFailed(Exception):
    """The committer gave a run step up; the run loop reloads the runtime and backs off."""


class Isolation:
    def __init__(
        self, inbox: Inbox, *, delivery_limit: int, metrics: Metrics, drop: Callable[[str], None],
        progressed: Callable[[], None],
    ) -> None:
        self._inbox = inbox
        self._delivery_limit = delivery_limit
        self._metrics = metrics
        self._drop = drop
        self._progressed = progressed
        self._failures: OrderedDict[str, int] = OrderedDict()
        self.outage = False
        """Set when a window failed because a dependency is away: wait before the next one."""

    def failed(
        self, window: Window, exc: BaseException, dependents: list[Window],
        behind: Sequence[Window] = (),
    ) -> list[tuple[Delivery, Settlement]]:
        """Carry out the failure rows for ``window``; returns the dead letters to settle.
        ``dependents`` are aborted; the items of both and of ``behind`` (a window still being
        decided, which its caller discards) go back behind the failed window's own."""
        log.warning("commit_failed", size=len(window.items), error=repr(exc))
        self._metrics.commit_failures.labels(error=type(exc).__name__).inc()
        if isinstance(exc, VersionConflict):
            self._metrics.version_conflicts.inc()
        alone = len(window.items) == 1
        if isinstance(exc, StoreError) and not is_outage(exc) and alone:
            runtime_id = window.items[0].runtime_id
            if runtime_id is not None:  # the cached copy may disagree with the store
                self._drop(runtime_id)
        again: list[Item] = []
        dead: list[tuple[Delivery, Settlement]] = []
        for item in window.items:
            is_step = isinstance(item, RunStep)
            if isinstance(item, Delivery):
                attempts = self._failures.get(_identity(item), 0)
            else:
                attempts = item.outages
            settlement = settlement_after_failure(
                exc, alone=alone, attempts=attempts, conflicts=item.conflicts,
                delivery_limit=self._delivery_limit, run_transition=is_step,
            )
            action = settlement.action
            if action is Action.WAIT:
                self.outage = True
                if isinstance(item, RunStep):
                    item.outages += 1
                again.append(item)
            elif action is Action.AGAIN:
                item.conflicts += 1
                again.append(item)
            elif action is Action.RETRY_ALONE:
                item.alone = True
                again.append(item)
            elif action is Action.GIVE_UP and isinstance(item, RunStep):
                if not item.done.done():
                    item.done.set_exception(RunStepFailed(settlement.reason))
            elif action is Action.HOLD and isinstance(item, Delivery):
                self._count(item, attempts + 1)
                item.alone, item.conflicts = False, 0
                self._metrics.messages_requeued.labels(reason=type(exc).__name__).inc()
                log.info("delivery_held", runtime_id=item.runtime_id,
                         message_id=item.message.message_id, attempt=attempts + 1,
                         retry_in_seconds=round(settlement.delay, 3), error=repr(exc)[:500])
                self._progressed()
                self._inbox.hold(item, settlement.delay)
            elif isinstance(item, Delivery):
                self._failures.pop(_identity(item), None)
                dead.append((item, settlement))
        for dependent in dependents:
            dependent.transaction.abort()
            again.extend(dependent.items)
        for later in behind:
            again.extend(later.items)
        self._inbox.put_back(again)
        return dead

    def crashed(self, window: Window) -> list[tuple[Delivery, Settlement]]:
        """The loop died while deciding ``window``: a failure of its own, counted."""
        window.transaction.discard()
        return self.failed(window, RuntimeError("the committer stopped on this window"), [])

    def settled(self, deliveries: list[Delivery]) -> None:
        if self._failures:
            for delivery in deliveries:
                self._failures.pop(_identity(delivery), None)

    def _count(self, delivery: Delivery, attempts: int) -> None:
        self._failures[_identity(delivery)] = attempts
        while len(self._failures) > MAX_TRACKED_FAILURES:
            self._failures.popitem(last=False)


def _identity(delivery: Delivery) -> str:
    """What the failure count of a message is kept under, across its redeliveries."""
    message: AbstractIncomingMessage = delivery.message
    if message.message_id:
        return f"{message.routing_key}\0{message.message_id}"
    return hashlib.blake2b(message.body, digest_size=16).hexdigest()
