"""``MEERKAT_EVENTS``: which event codes reach the outbox."""

from __future__ import annotations

from datetime import UTC, datetime
from uuid import uuid4

import pytest
from pydantic import ValidationError

from schemas import EventCode
from worker.client import messages
from worker.config import Settings
from worker.core import Context, Decision, Runtime, decide_input
from worker.event_selection import (
    ALWAYS_EMITTED,
    EVERY_CODE,
    EVERYTHING,
    EventSelection,
    EventSelectionError,
)

pytestmark = pytest.mark.unit


def test_star_is_every_code() -> None:
    assert EventSelection.parse("*") == EVERYTHING
    assert EVERYTHING.everything
    assert EVERYTHING.describe() == "*"


def test_codes_and_patterns_select_their_codes_and_the_refusals() -> None:
    selection = EventSelection.parse(" run.* , input.consumed")
    run_codes = {code for code in EventCode if code.value.startswith("run.")}
    assert selection.codes == run_codes | {EventCode.INPUT_CONSUMED} | ALWAYS_EMITTED
    assert not selection.everything


@pytest.mark.parametrize("text", ["run.finished", "", "run.*,,input.consumed", "Run.*"])
def test_an_entry_that_names_no_code_is_an_error_naming_it(text: str) -> None:
    with pytest.raises(EventSelectionError):
        EventSelection.parse(text)


def test_a_bad_selection_is_a_configuration_error() -> None:
    with pytest.raises(ValidationError, match="matches no event code"):
        Settings(events="run.finished")
    assert Settings(events="run.completed").events == "run.completed"


def _accepted_decision() -> Decision:
    ctx = Context(now=datetime.now(UTC), new_id=uuid4)
    envelope = messages.prompt("rt:selection", "hello")
    return decide_input(Runtime("rt:selection"), envelope.input, ctx)


def test_kept_drops_the_unselected_events_and_keeps_everything_else() -> None:
    decision = _accepted_decision()
    codes = [e.code for e in decision.events]
    assert EventCode.INPUT_ACCEPTED in codes
    assert EventCode.INPUT_QUEUED in codes

    [kept] = EventSelection.parse("input.queued").kept([decision])

    assert [e.code for e in kept.events] == [EventCode.INPUT_QUEUED]
    assert kept.mutations == decision.mutations
    assert kept.runtime == decision.runtime


def test_everything_hands_back_the_same_decisions() -> None:
    decisions = [_accepted_decision()]
    assert EVERYTHING.kept(decisions) is decisions
    assert frozenset(EventCode) == EVERY_CODE
