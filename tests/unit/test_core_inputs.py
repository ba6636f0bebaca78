"""The runtime's input table: a persistent mapping whose lane, key and supersession indexes
follow every change, and records whose payload and history a store may hand over undecoded."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from persistence import codec
from schemas import HandlingMode, InputKind, InputPhase, Lane
from tests.unit.core_factories import idle_runtime, make_context, make_input
from worker.core import accept_input, archive_terminal, next_batch, stage_batch
from worker.core.inputs import EMPTY_INPUTS, InputRecord, InputTable
from worker.core.lifecycle import InputTrigger
from worker.core.records import move_input

pytestmark = pytest.mark.unit


def _queued_records(count: int) -> list[InputRecord]:
    ctx = make_context()
    runtime = idle_runtime(ctx, *(make_input(content=f"p{i}") for i in range(count)))
    return runtime.lane(Lane.QUEUE)


def test_an_empty_table_equals_an_empty_dict() -> None:
    assert EMPTY_INPUTS == {}
    assert InputTable() == {}
    assert len(EMPTY_INPUTS) == 0


def test_an_update_leaves_the_old_table_as_it_was() -> None:
    records = _queued_records(3)
    table = InputTable(records[:2])
    newer = table.updated([records[2]])
    assert dict(table) == {r.input_id: r for r in records[:2]}
    assert dict(newer) == {r.input_id: r for r in records}
    assert [r.input_id for r in table.queued(Lane.QUEUE)] == [r.input_id for r in records[:2]]


def test_a_lane_is_in_admission_order_whatever_the_order_of_the_changes() -> None:
    records = _queued_records(5)
    table = InputTable(reversed(records))
    assert list(table.queued(Lane.QUEUE)) == records
    assert list(table.queued(Lane.STEER)) == []
    ctx = make_context()
    staged = move_input(records[0], InputTrigger.STAGE, ctx, "staged")
    middle = move_input(records[2], InputTrigger.ABANDON, ctx, "abandoned")
    after = table.updated([staged, middle])
    assert list(after.queued(Lane.QUEUE)) == [records[1], records[3], records[4]]
    assert after.live_count == 4
    assert list(after.without([records[1].input_id]).queued(Lane.QUEUE)) == records[3:]
    assert after.without([r.input_id for r in records]) is EMPTY_INPUTS


def test_a_requeued_input_goes_behind_and_the_head_moves_past_gaps() -> None:
    records = _queued_records(4)
    ctx = make_context()
    table = InputTable(records)
    gone = [move_input(r, InputTrigger.STAGE, ctx, "staged") for r in records[:3]]
    table = table.updated(gone)
    assert list(table.queued(Lane.QUEUE)) == [records[3]]
    back = move_input(gone[1], InputTrigger.REQUEUE, ctx, "again", admission_seq=99)
    assert [r.input_id for r in table.updated([back]).queued(Lane.QUEUE)] == [
        records[3].input_id, back.input_id]


def test_long_queues_accept_and_stage_without_touching_the_rest() -> None:
    ctx = make_context()
    items = [make_input(content=f"p{i}") for i in range(300)]
    runtime = idle_runtime(ctx, *items)
    steer = make_input(InputKind.PEER_MESSAGE, mode=HandlingMode.STEER)
    runtime = accept_input(runtime, steer, ctx).runtime
    assert [r.input_id for r in next_batch(runtime)] == [steer.header.id]
    assert len(runtime.lane(Lane.QUEUE)) == 300
    decision = stage_batch(runtime, ctx, run_id=ctx.new_id())
    assert decision is not None
    assert decision.runtime.lane(Lane.STEER) == []
    assert next_batch(runtime)[0].input_id == steer.header.id  # the old state is unchanged


def test_key_owner_follows_admission_and_archiving() -> None:
    ctx = make_context()
    item = make_input(idempotency_key="k-1")
    runtime = idle_runtime(ctx, item)
    owner = runtime.find_key("k-1")
    assert owner is not None
    assert owner.input_id == item.header.id
    abandoned = move_input(owner, InputTrigger.ABANDON, ctx, "abandoned")
    ended = dataclasses.replace(runtime, inputs=runtime.inputs.updated([abandoned]))
    assert ended.find_key("k-1") == abandoned  # terminal, not yet archived: still known
    assert archive_terminal(ended).find_key("k-1") is None
    assert archive_terminal(ended).inputs == {}


def test_supersession_index_names_only_queued_inputs_of_the_kind_and_key() -> None:
    ctx = make_context()
    first = make_input(InputKind.EXTERNAL_EVENT, supersession_key="s")
    other = make_input(InputKind.EXTERNAL_EVENT, supersession_key="t")
    runtime = idle_runtime(ctx, first, other)
    table = runtime.inputs
    assert [r.input_id for r in table.queued_with_key(InputKind.EXTERNAL_EVENT, "s")] == [
        first.header.id]
    newer = make_input(InputKind.EXTERNAL_EVENT, supersession_key="s")
    after = accept_input(runtime, newer, ctx).runtime
    assert after.inputs[first.header.id].phase is InputPhase.SUPERSEDED
    assert [r.input_id for r in after.inputs.queued_with_key(InputKind.EXTERNAL_EVENT, "s")] == [
        newer.header.id]


def _stored_text(record: InputRecord) -> str:
    import json

    return json.dumps(codec.encode_input(record))


def test_a_record_read_as_text_decodes_its_payload_only_when_read() -> None:
    record = _queued_records(1)[0]
    read = codec.decode_input_text(_stored_text(record))
    assert "payload" not in read.__dict__
    assert read.phase is record.phase
    assert read.history == record.history
    assert read.payload == record.payload
    assert "payload" in read.__dict__  # decoded once
    assert "_deferred" not in read.__dict__
    assert read == record


def test_a_moved_copy_of_an_undecoded_record_decodes_on_its_own() -> None:
    record = _queued_records(1)[0]
    read = codec.decode_input_text(_stored_text(record))
    fields: dict[str, Any] = {"phase": InputPhase.STAGED}
    copy = dataclasses.replace(read, **fields)
    assert copy.payload == record.payload
    assert copy.phase is InputPhase.STAGED
    staged = move_input(read, InputTrigger.STAGE, make_context(), "staged")
    assert staged.history[:-1] == record.history
    with pytest.raises(AttributeError):
        read.no_such_field  # type: ignore[attr-defined]  # noqa: B018
