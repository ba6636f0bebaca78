"""Moving an input makes the same record ``dataclasses.replace`` would, history appended."""

from __future__ import annotations

import dataclasses

import pytest

from schemas import InputPhase
from tests.unit.core_factories import idle_runtime, make_context, make_input
from worker.core.lifecycle import InputTrigger
from worker.core.records import move_input

pytestmark = pytest.mark.unit


def test_a_moved_record_equals_the_replaced_one_and_the_original_is_untouched() -> None:
    ctx = make_context()
    [record] = idle_runtime(ctx, make_input()).inputs.values()
    before = dataclasses.replace(record)

    moved = move_input(record, InputTrigger.STAGE, ctx, "staged", attempt_count=1)

    entry = moved.history[-1]
    assert moved == dataclasses.replace(record, phase=InputPhase.STAGED, updated_at=ctx.now,
                                        attempt_count=1, history=(*record.history, entry))
    assert (entry.from_phase, entry.to_phase, entry.reason) == (
        InputPhase.QUEUED, InputPhase.STAGED, "staged")
    assert record == before
    assert hash(moved) == hash(dataclasses.replace(moved))
    with pytest.raises(TypeError):
        move_input(record, InputTrigger.STAGE, ctx, "staged", no_such_field=1)
    with pytest.raises(dataclasses.FrozenInstanceError):
        moved.phase = InputPhase.QUEUED  # type: ignore[misc]
