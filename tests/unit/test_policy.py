"""The settlement table of worker/policy.py, one test per row."""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast
from uuid import uuid4

import pytest

from schemas import Accepted, InputPhase, Lane, Malformed, NotReady, Outcome, Rejected, RuntimePhase
from worker.core import Decision
from worker.pipeline.parsing import ParsedMessage, Unparseable
from worker.pipeline.policy import Action, Settlement, settlement_for

pytestmark = pytest.mark.unit


@dataclass(frozen=True)
class Decided:
    """Only the outcome of a decision matters to the policy."""

    outcome: Outcome | None


def decision(outcome: Outcome | None) -> Decision:
    return cast(Decision, Decided(outcome))


PARSED = cast(ParsedMessage, object())


def test_a_committed_outcome_is_acked_and_answered() -> None:
    accepted = Accepted(input_id=uuid4(), phase=InputPhase.QUEUED, lane=Lane.QUEUE,
                        admission_seq=1)
    assert settlement_for(PARSED, decision(accepted)) == Settlement(Action.ACK, reply=accepted)


def test_a_rejection_by_the_runtime_is_dead_lettered_with_its_reason_and_answered() -> None:
    rejected = Rejected(reason=NotReady(state=RuntimePhase.RETIRED))
    settlement = settlement_for(PARSED, decision(rejected))
    assert settlement.action is Action.DEAD_LETTER
    assert settlement.reply == rejected
    assert settlement.reason == rejected.reason.model_dump_json()
    assert settlement.reason_type == "not_ready"


def test_a_body_that_does_not_parse_is_dead_lettered_whether_or_not_it_names_a_runtime() -> None:
    for runtime_id in (None, "rt:x"):
        parsed = Unparseable(Malformed(detail="duplicate key 'text'"), runtime_id, False)
        settlement = settlement_for(parsed, None)
        assert settlement.action is Action.DEAD_LETTER
        assert settlement.reply == Rejected(reason=parsed.reason)
        assert "duplicate key" in (settlement.reason or "")


def test_a_message_that_kept_failing_is_dead_lettered_without_a_reply() -> None:
    settlement = Settlement.dead_letter("gave up after 5 failed attempts: ValueError: x")
    assert settlement.action is Action.DEAD_LETTER
    assert settlement.reply is None
    assert settlement.reason_type == "failed_attempts"
