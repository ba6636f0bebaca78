"""What to do with a delivery, once it was decided: a pure table, one test per row.

| the delivery came to                                         | settlement      | reply    |
|--------------------------------------------------------------|-----------------|----------|
| accepted, deduplicated, command completed (committed)        | ack             | outcome  |
| rejected by the runtime (input refused, command illegal)     | dead-letter     | outcome  |
| a body that does not parse (malformed, too large, hostile)   | dead-letter     | outcome  |
| its own processing failed ``delivery_limit`` times           | dead-letter     | none     |

A dead letter carries its reason in ``x-meerkat-error``: the typed rejection as JSON, or the
last error of a message that kept failing. How a settlement is carried out is
:mod:`worker.settle`; which failures are retried is :mod:`worker.committer`.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from schemas import Outcome, Rejected
from worker.core import Decision
from worker.parsing import ParsedMessage, Unparseable


class Action(Enum):
    ACK = "ack"
    DEAD_LETTER = "dead_letter"


@dataclass(frozen=True)
class Settlement:
    action: Action
    reason: str | None = None
    """For a dead letter: what goes into ``x-meerkat-error``."""
    reply: Outcome | None = None
    reason_type: str = "rejected"
    """The metric label of a dead letter."""

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
