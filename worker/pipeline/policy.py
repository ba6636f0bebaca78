"""What to do with a delivery or a run transition: a pure table, one test per row.

Decided outcomes (after COMMIT returned):

| the item came to                                            | settlement               |
|-------------------------------------------------------------|--------------------------|
| accepted, deduplicated, command completed                   | ack (and reply)          |
| rejected by the runtime (input refused, command illegal)    | dead-letter (and reply)  |
| a body that does not parse (malformed, too large, hostile)  | dead-letter (and reply)  |

Failures (the decide-and-commit of a window raised):

| failure                                   | window   | attempts so far       | settlement       |
|-------------------------------------------|----------|-----------------------|------------------|
| an outage (:func:`is_outage`)             | any      | any (not counted)     | wait, then again |
| an outage, for a run transition           | any      | ``RUN_STEP_OUTAGES``  | give up          |
| a version conflict                        | any      | < 3 conflicts         | again at once    |
| a version conflict, for a run transition  | any      | < 20 conflicts        | again at once    |
| anything else, or conflicts keep coming   | shared   | any                   | retry alone      |
| anything else, alone                      | alone    | < ``delivery_limit``-1| requeue after a  |
|                                           |          |                       | delay (held)     |
| anything else, alone                      | alone    | ``delivery_limit``-1  | dead-letter      |

A dead letter carries its reason in ``x-meerkat-error``: the typed rejection as JSON, or the
last error of a message that kept failing. "Requeue after a delay" never gives the delivery back
to the broker: it is held in the inbox, its runtime's later items behind it. A run transition
that would be dead-lettered is handed back to the run loop instead (:attr:`Action.GIVE_UP`).

This module also holds :func:`is_transient` and the retry presets: the only place in the
worker where backoff is defined. Nothing here does I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from persistence.errors import StoreError, VersionConflict
from schemas import Outcome, Rejected
from worker.core import Decision
from worker.pipeline.parsing import ParsedMessage, Unparseable

# -- transience and backoff ------------------------------------------------------------------


def is_transient(exc: BaseException) -> bool:
    """Whether trying the same thing again later may succeed: a dependency that could not be
    reached, a COMMIT whose outcome is unknown, another writer that moved a version."""
    if isinstance(exc, StoreError):
        return exc.transient
    return isinstance(exc, ConnectionError | OSError | TimeoutError)


def is_outage(exc: BaseException) -> bool:
    """Transient because a dependency is away (not because of this message's runtime)."""
    return is_transient(exc) and not isinstance(exc, VersionConflict)


@dataclass(frozen=True)
class Backoff:
    """Doubling waits from ``first`` up to ``cap``; ``jitter`` is the fraction that may be taken
    off at random; ``attempts`` bounds the tries of a retried call (None: no bound)."""

    first: float
    cap: float
    jitter: float = 0.0
    attempts: int | None = None

    def delay(self, attempt: int, rand: float = 0.0) -> float:
        """The wait after the ``attempt``-th failure (1-based); ``rand`` in [0, 1)."""
        ceiling = self.first * 2.0 ** min(max(attempt - 1, 0), 32)
        return min(ceiling, self.cap) * (1 - self.jitter * rand)


HELD_RETRY = Backoff(first=0.1, cap=5.0)
"""A delivery or run transition that failed alone, before it is decided again."""
OUTAGE_PROBE = Backoff(first=0.1, cap=5.0)
"""Between two pings of the database and the blob store while they are away."""
RECONNECT = Backoff(first=0.2, cap=5.0)
"""Between two attempts to reach the broker, or to re-make a shard's channel."""
RESTORE = Backoff(first=0.1, cap=2.0, jitter=0.5, attempts=5)
"""Reading a run's images and snapshot while the blob store or database is briefly away."""
RUN_TURN = Backoff(first=1.0, cap=30.0)
"""A run turn that failed for a reason of ours (the store stayed away): before the next one."""
RUN_STEP_OUTAGES = 5
"""Outages a run transition waits out before it is given up to recovery (which requeues the
run's inputs), so that a run's end is not held for as long as the database is away."""
FREE_CONFLICT_RETRIES = 3
"""Version conflicts retried at once on a fresh load before one counts as a failure."""
RUN_STEP_CONFLICT_RETRIES = 20
"""The same for a run's stage or end: giving one up re-runs the run's inputs and spends one of
their attempts, so a conflict with a worker taking the runtime over is retried much longer."""


# -- settlements -----------------------------------------------------------------------------


class Action(Enum):
    ACK = "ack"
    DEAD_LETTER = "dead_letter"
    WAIT = "wait"
    """Wait until the database and the blob store answer, then decide the same items again."""
    AGAIN = "again"
    """Decide the same items again at once, on fresh loads."""
    RETRY_ALONE = "retry_alone"
    HOLD = "hold"
    """Hold the item in the inbox for ``delay`` seconds, then decide it alone."""
    GIVE_UP = "give_up"
    """A run transition that keeps failing: the run loop is told (it backs off and reloads)."""


@dataclass(frozen=True)
class Settlement:
    action: Action
    reason: str | None = None
    """For a dead letter: what goes into ``x-meerkat-error``."""
    reply: Outcome | None = None
    reason_type: str = "rejected"
    """The metric label of a dead letter."""
    delay: float = 0.0

    @classmethod
    def dead_letter(cls, reason: str, reason_type: str = "failed_attempts") -> Settlement:
        return cls(Action.DEAD_LETTER, reason=reason, reason_type=reason_type)


def settlement_for(parsed: ParsedMessage, decision: Decision | None) -> Settlement:
    """The settlement of a committed delivery: a message that does not parse is rejected,
    whether or not it named a runtime to record the rejection on."""
    outcome = Rejected(reason=parsed.reason) if isinstance(parsed, Unparseable) else (
        decision.outcome if decision is not None else None
    )
    if isinstance(outcome, Rejected):
        return Settlement(Action.DEAD_LETTER, reason=outcome.reason.model_dump_json(),
                          reply=outcome, reason_type=outcome.reason.reject_type)
    return Settlement(Action.ACK, reply=outcome)


def settlement_after_failure(
    exc: BaseException, *, alone: bool, attempts: int, conflicts: int, delivery_limit: int,
    run_transition: bool = False,
) -> Settlement:
    """What to do when deciding and committing a window raised ``exc``.

    ``attempts`` counts the item's earlier failed attempts (for a delivery, outages and free
    conflict retries are not counted; for a run transition, only outages are), ``conflicts`` the
    version conflicts retried at once so far.
    """
    if is_outage(exc):
        if run_transition and attempts >= RUN_STEP_OUTAGES:
            return Settlement(Action.GIVE_UP, reason=f"{type(exc).__name__}: {exc}")
        return Settlement(Action.WAIT)
    free = RUN_STEP_CONFLICT_RETRIES if run_transition else FREE_CONFLICT_RETRIES
    if isinstance(exc, VersionConflict) and conflicts < free:
        return Settlement(Action.AGAIN)
    if not alone:
        return Settlement(Action.RETRY_ALONE)
    failed = attempts + 1
    if run_transition:
        return Settlement(Action.GIVE_UP, reason=f"{type(exc).__name__}: {exc}")
    if failed >= delivery_limit:
        reason = f"gave up after {failed} failed attempts: {type(exc).__name__}: {exc}"
        return Settlement.dead_letter(reason)
    return Settlement(Action.HOLD, delay=HELD_RETRY.delay(failed))
