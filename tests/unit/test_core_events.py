"""The core builds its events and accept outcomes without validation (they are made on every
decision); every event of a runtime's whole life, and every outcome of an accept, must still be
valid, equal to its validated copy."""

from __future__ import annotations

import pytest

from schemas import EventEnvelope, InputKind
from tests.unit.core_factories import (
    make_command,
    make_context,
    make_input,
    new_run_id,
    new_runtime_id,
)
from worker.core import (
    Decision,
    Runtime,
    accept_input,
    apply_command,
    commit_boundary,
    fail_run,
    stage_batch,
)

pytestmark = pytest.mark.unit


def _valid(decision: Decision) -> None:
    for event in decision.events:
        assert EventEnvelope.model_validate(event.model_dump()) == event
        assert EventEnvelope.model_validate_json(event.model_dump_json()) == event
    outcome = decision.outcome
    if outcome is not None:
        assert type(outcome).model_validate(outcome.model_dump()) == outcome
        assert type(outcome).model_validate_json(outcome.model_dump_json()) == outcome


def test_every_event_of_a_runtime_life_is_a_valid_envelope() -> None:
    ctx = make_context()
    runtime = Runtime(new_runtime_id("events"))
    for kind in (InputKind.PROMPT, InputKind.PEER_MESSAGE, InputKind.EXTERNAL_EVENT,
                 InputKind.OPERATION, InputKind.PROMPT):
        decision = accept_input(runtime, make_input(kind, correlation_id="c-1"), ctx)
        _valid(decision)
        runtime = decision.runtime
    for ends in ("finish", "fail"):
        run_id = new_run_id()
        staged = stage_batch(runtime, ctx, run_id=run_id, max_batch=64)
        assert staged is not None
        _valid(staged)
        if ends == "finish":
            ended = commit_boundary(staged.runtime, ctx, run_id=run_id,
                                    session={"messages": [1]}, message_count=1, output={"a": 1})
        else:
            ended = fail_run(staged.runtime, ctx, run_id=run_id, error="boom")
        _valid(ended)
        runtime = ended.runtime
    for command_type in ("retire", "reset", "destroy"):
        decision = apply_command(runtime, make_command(command_type), ctx)
        _valid(decision)
        runtime = decision.runtime
