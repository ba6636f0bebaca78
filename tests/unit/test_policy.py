"""The settlement table of worker/pipeline/policy.py, one test per row."""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast
from uuid import uuid4

import pytest

from persistence.errors import (
    CommitOutcomeUnknown,
    DuplicateRow,
    StoreUnavailable,
    VersionConflict,
)
from schemas import Accepted, InputPhase, Lane, Malformed, NotReady, Outcome, Rejected, RuntimePhase
from worker.core import Decision
from worker.pipeline.parsing import ParsedMessage, Unparseable
from worker.pipeline.policy import (
    FREE_CONFLICT_RETRIES,
    HELD_RETRY,
    RUN_STEP_CONFLICT_RETRIES,
    RUN_STEP_OUTAGES,
    Action,
    Backoff,
    Settlement,
    is_outage,
    is_transient,
    settlement_after_failure,
    settlement_for,
)

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


# -- the failure rows -------------------------------------------------------------------------

LIMIT = 5


def after(exc: BaseException, *, alone: bool = True, attempts: int = 0, conflicts: int = 0,
          run_transition: bool = False) -> Settlement:
    return settlement_after_failure(exc, alone=alone, attempts=attempts, conflicts=conflicts,
                                    delivery_limit=LIMIT, run_transition=run_transition)


@pytest.mark.parametrize("alone", [True, False])
def test_an_outage_is_waited_out_and_not_counted(alone: bool) -> None:
    for exc in (StoreUnavailable("db down"), CommitOutcomeUnknown("cut"), ConnectionError("x")):
        assert after(exc, alone=alone, attempts=LIMIT + 10) == Settlement(Action.WAIT)


def test_a_run_transition_waits_out_a_few_outages_then_is_given_up() -> None:
    outage = StoreUnavailable("db down")
    assert after(outage, attempts=RUN_STEP_OUTAGES - 1, run_transition=True).action is Action.WAIT
    given_up = after(outage, attempts=RUN_STEP_OUTAGES, run_transition=True)
    assert given_up.action is Action.GIVE_UP
    assert "db down" in (given_up.reason or "")


def test_a_version_conflict_is_retried_at_once_a_few_times() -> None:
    conflict = VersionConflict("rt:x", 3)
    for conflicts in range(FREE_CONFLICT_RETRIES):
        assert after(conflict, alone=False, conflicts=conflicts) == Settlement(Action.AGAIN)
    assert after(conflict, alone=False, conflicts=FREE_CONFLICT_RETRIES).action is (
        Action.RETRY_ALONE
    )


def test_a_run_transition_retries_version_conflicts_much_longer() -> None:
    conflict = VersionConflict("rt:x", 3)
    for conflicts in (FREE_CONFLICT_RETRIES, RUN_STEP_CONFLICT_RETRIES - 1):
        assert after(conflict, conflicts=conflicts, run_transition=True) == Settlement(Action.AGAIN)
    assert after(conflict, conflicts=RUN_STEP_CONFLICT_RETRIES, run_transition=True).action is (
        Action.GIVE_UP
    )


def test_any_other_failure_of_a_shared_window_retries_each_item_alone() -> None:
    assert after(ValueError("bug"), alone=False) == Settlement(Action.RETRY_ALONE)
    assert after(DuplicateRow("input id"), alone=False) == Settlement(Action.RETRY_ALONE)


def test_an_item_failing_alone_is_held_with_a_growing_delay() -> None:
    first, later = after(ValueError("bug"), attempts=0), after(ValueError("bug"), attempts=2)
    assert first.action is Action.HOLD
    assert later.action is Action.HOLD
    assert first.delay == HELD_RETRY.delay(1) < later.delay == HELD_RETRY.delay(3)


def test_an_item_failing_alone_for_the_last_allowed_time_is_dead_lettered_with_the_error() -> None:
    settlement = after(ValueError("bug"), attempts=LIMIT - 1)
    assert settlement.action is Action.DEAD_LETTER
    assert settlement.reply is None
    assert settlement.reason == f"gave up after {LIMIT} failed attempts: ValueError: bug"
    assert settlement.reason_type == "failed_attempts"


def test_a_run_transition_failing_alone_is_given_up_to_the_run_loop() -> None:
    settlement = after(ValueError("bug"), attempts=LIMIT, run_transition=True)
    assert settlement.action is Action.GIVE_UP


# -- transience and backoff ---------------------------------------------------------------------


def test_transience_comes_from_the_typed_store_errors_and_network_errors() -> None:
    assert is_transient(StoreUnavailable("x"))
    assert is_transient(VersionConflict("rt:x", 1))
    assert is_transient(TimeoutError())
    assert is_transient(ConnectionResetError())
    assert not is_transient(DuplicateRow("input id"))
    assert not is_transient(ValueError())
    assert not is_outage(VersionConflict("rt:x", 1))


def test_a_backoff_doubles_up_to_its_cap_and_jitter_only_shortens_it() -> None:
    preset = Backoff(first=0.1, cap=1.0, jitter=0.5)
    assert [preset.delay(n) for n in (1, 2, 3, 4, 5, 10_000)] == [0.1, 0.2, 0.4, 0.8, 1.0, 1.0]
    assert preset.delay(3, rand=0.999) == pytest.approx(0.4 * (1 - 0.5 * 0.999))
