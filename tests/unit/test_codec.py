"""The stored JSON shapes: every value reads back equal, through real JSON text."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any
from uuid import UUID, uuid4

import pytest
from hypothesis import given
from hypothesis import strategies as st

from persistence import codec
from schemas import (
    AnyInput,
    AttemptsExhausted,
    BlobImageBlock,
    CommandCompleted,
    CommandReport,
    ContinuationInput,
    Durability,
    EventCode,
    EventEnvelope,
    ExternalEventInput,
    FlowSource,
    FlowStepInput,
    HandlingMode,
    ImageMediaType,
    InputHeader,
    InputKind,
    InputPhase,
    Lane,
    OperationInput,
    OperatorSource,
    PeerInput,
    PeerRequest,
    PeerResponseTerminal,
    PeerSource,
    PromptInput,
    RuntimePhase,
    SimpleAbandonReason,
    SystemSource,
    TextBlock,
    TurnMetadata,
    Visibility,
    input_kind,
)
from worker.core.model import HistoryEntry, InputRecord

pytestmark = pytest.mark.unit

NOW = datetime(2026, 3, 14, 15, 9, 26, 535897, tzinfo=UTC)
BLOB_A = "sha256:" + "a" * 64
BLOB_B = "sha256:" + "b" * 64


def through_json(value: dict[str, Any]) -> Any:
    return json.loads(json.dumps(value))


def header(durability: Durability = Durability.DURABLE, **fields: Any) -> InputHeader:
    return InputHeader(
        id=uuid4(),
        timestamp=NOW,
        source=fields.pop("source", OperatorSource()),
        durability=durability,
        **fields,
    )


def image(blob_id: str) -> BlobImageBlock:
    return BlobImageBlock(media_type=ImageMediaType.PNG, blob_id=blob_id)


PAYLOADS: list[AnyInput] = [
    PromptInput(header=header(), content="plain text"),
    PromptInput(
        header=header(idempotency_key="k", supersession_key="s", correlation_id="c"),
        content=[TextBlock(text="see"), image(BLOB_A), image(BLOB_B), image(BLOB_A)],
        turn_metadata=TurnMetadata(handling_mode=HandlingMode.STEER, labels={"a": "b"}),
    ),
    PeerInput(
        header=header(source=PeerSource(peer_id="p", runtime_id="rt:peer")),
        convention=PeerRequest(request_id="r1", intent="review"),
        content=[image(BLOB_B)],
        payload={"nested": [1, 2.5, None, True, "x"]},
        handling_mode=HandlingMode.QUEUE,
    ),
    PeerInput(
        header=header(visibility=Visibility(transcript_eligible=False)),
        convention=PeerResponseTerminal(request_id="r1", status="completed"),
        content="done",
    ),
    FlowStepInput(
        header=header(Durability.DERIVED, source=FlowSource(flow_id="f", step_index=2)),
        step_id="s1",
        content=[TextBlock(text="step")],
    ),
    ExternalEventInput(
        header=header(), event_type="webhook", payload=[1, {"a": "b"}], blocks=[image(BLOB_A)]
    ),
    ContinuationInput(header=header(Durability.DERIVED, source=SystemSource()), reason="more"),
    OperationInput(header=header(), operation_id="op-1", event={"kind": "finished"}),
]


def record_of(payload: AnyInput, **changes: Any) -> InputRecord:
    fields: dict[str, Any] = {
        "input_id": payload.header.id,
        "kind": input_kind(payload),
        "phase": InputPhase.QUEUED,
        "lane": Lane.QUEUE,
        "admission_seq": 7,
        "durability": payload.header.durability,
        "payload": payload,
        "created_at": NOW,
        "updated_at": NOW + timedelta(seconds=1),
        "idempotency_key": payload.header.idempotency_key,
    }
    return InputRecord(**{**fields, **changes})


@pytest.mark.parametrize("payload", PAYLOADS, ids=lambda p: p.input_type)
def test_every_input_kind_round_trips(payload: AnyInput) -> None:
    record = record_of(
        payload,
        phase=InputPhase.ABANDONED,
        attempt_count=3,
        last_run_id=uuid4(),
        boundary_sequence=2,
        superseded_by=uuid4(),
        aggregate_id=uuid4(),
        abandon_reason=AttemptsExhausted(attempts=3),
        recovery_count=1,
        history=(
            HistoryEntry(NOW, None, InputPhase.QUEUED, "accepted"),
            HistoryEntry(NOW, InputPhase.QUEUED, InputPhase.ABANDONED, "exhausted"),
        ),
    )
    decoded = codec.decode_input(through_json(codec.encode_input(record)))
    assert decoded == record
    assert type(decoded.payload) is type(payload)
    assert codec.encode_input_text(record) == codec.dumps(codec.encode_input(record))


def test_a_simple_abandon_reason_round_trips() -> None:
    record = record_of(PAYLOADS[0], abandon_reason=SimpleAbandonReason(reason="cancelled"))
    assert codec.decode_input(through_json(codec.encode_input(record))) == record


def test_times_are_stored_in_utc_and_naive_times_are_refused() -> None:
    plus_two = timezone(timedelta(hours=2))
    record = record_of(PAYLOADS[0], created_at=NOW.astimezone(plus_two))
    encoded = codec.encode_input(record)
    assert encoded["created_at"].endswith("+00:00")
    decoded = codec.decode_input(encoded)
    assert decoded.created_at == record.created_at
    assert decoded.created_at.tzinfo == UTC
    with pytest.raises(ValueError, match="naive"):
        codec.encode_input(record_of(PAYLOADS[0], updated_at=datetime(2026, 1, 1)))
    assert codec.encode_input_text(record) == codec.dumps(encoded)
    with pytest.raises(ValueError, match="naive"):
        codec.encode_input_text(record_of(PAYLOADS[0], created_at=datetime(2026, 1, 1)))


def test_blob_ids_are_listed_once_in_order() -> None:
    assert codec.blob_ids_of(record_of(PAYLOADS[1])) == [BLOB_A, BLOB_B]
    assert codec.blob_ids_of(record_of(PAYLOADS[2])) == [BLOB_B]
    assert codec.blob_ids_of(record_of(PAYLOADS[5])) == [BLOB_A]
    assert codec.blob_ids_of(record_of(PAYLOADS[0])) == []
    assert codec.blob_ids_of(record_of(PAYLOADS[7])) == []


def test_commands_and_events_round_trip() -> None:
    command = CommandCompleted(
        command_id=uuid4(),
        command_type="retire",
        state=RuntimePhase.RETIRED,
        report=CommandReport(inputs_pending_drain=2),
        deduplicated=True,
    )
    event = EventEnvelope(
        event_id=uuid4(),
        at=NOW,
        runtime_id="rt:a",
        category=EventCode.RUN_COMPLETED.category,
        code=EventCode.RUN_COMPLETED,
        data={"run_id": "r", "count": 2},
        causation_id=uuid4(),
        correlation_id="corr",
    )
    assert codec.decode_command(through_json(codec.encode_command(command))) == command
    assert codec.decode_event(through_json(codec.encode_event(event))) == event


keys = st.none() | st.text(min_size=1, max_size=40)
times = st.datetimes(
    min_value=datetime(1970, 1, 2), max_value=datetime(2200, 1, 1), timezones=st.just(UTC)
)
run_ids = st.none() | st.uuids()


@given(
    payload=st.sampled_from(PAYLOADS),
    phase=st.sampled_from(InputPhase),
    lane=st.sampled_from(Lane),
    kind=st.sampled_from(InputKind),
    seq=st.integers(min_value=0, max_value=2**62),
    key=keys,
    supersession=keys,
    created=times,
    updated=times,
    run_id=run_ids,
    sequence=st.none() | st.integers(min_value=0, max_value=2**62),
    history=st.lists(
        st.builds(
            HistoryEntry,
            at=times,
            from_phase=st.none() | st.sampled_from(InputPhase),
            to_phase=st.sampled_from(InputPhase),
            reason=st.text(max_size=30),
        ),
        max_size=4,
    ),
)
def test_any_record_round_trips(
    payload: AnyInput,
    phase: InputPhase,
    lane: Lane,
    kind: InputKind,
    seq: int,
    key: str | None,
    supersession: str | None,
    created: datetime,
    updated: datetime,
    run_id: UUID | None,
    sequence: int | None,
    history: list[HistoryEntry],
) -> None:
    record = record_of(
        payload,
        phase=phase,
        lane=lane,
        kind=kind,
        admission_seq=seq,
        idempotency_key=key,
        supersession_key=supersession,
        created_at=created,
        updated_at=updated,
        last_run_id=run_id,
        boundary_sequence=sequence,
        history=tuple(history),
    )
    assert codec.decode_input(through_json(codec.encode_input(record))) == record
    assert codec.encode_input_text(record) == codec.dumps(codec.encode_input(record))


@pytest.mark.parametrize("data", [
    {},
    {"run_id": "r", "count": 2, "ratio": 2.5, "text": "héllo ☃", "list": [1, None, True]},
    {"at": datetime(2026, 1, 1, tzinfo=timezone(timedelta(hours=2))), "id": uuid4()},
    {"nested": {"x": [{"y": {}}]}, "nan": float("nan"), "tiny": 1e-7},
    {"big": 2**70},  # beyond orjson: the long way
    {"raw": b"bytes", "keys": {1: "int"}},  # values only pydantic converts
])
def test_an_events_text_is_the_text_of_its_encoding(data: dict[Any, Any]) -> None:
    event = EventEnvelope(
        event_id=uuid4(),
        at=NOW,
        runtime_id="rt:a",
        category=EventCode.RUN_COMPLETED.category,
        code=EventCode.RUN_COMPLETED,
        data=data,
        causation_id=uuid4(),
    )
    text = codec.encode_event_text(event)
    assert text == codec.dumps(codec.encode_event(event))
    assert codec.decode_event(json.loads(text)) == codec.decode_event(codec.encode_event(event))


def test_an_events_fields_are_written_as_they_are() -> None:
    """(What the text of an event is made from: the fields, with no serializer or alias.)"""
    decorators = EventEnvelope.__pydantic_decorators__
    assert not decorators.field_serializers
    assert not decorators.model_serializers
    assert not decorators.computed_fields
    assert all(f.serialization_alias is None and f.alias is None
               for f in EventEnvelope.model_fields.values())


@pytest.mark.parametrize("number", [2**64 - 1, 2**64, -(2**63) - 1, 10**30, -(10**40)])
def test_an_integer_of_any_width_reads_back_exactly(number: int) -> None:
    payload = ExternalEventInput(header=header(), event_type="webhook",
                                 payload={"n": number, "l": [1.5, number]})
    text = codec.encode_input_text(record_of(payload))

    decoded = codec.decode_input_text(text).payload

    assert isinstance(decoded, ExternalEventInput)
    assert decoded.payload == {"n": number, "l": [1.5, number]}
    assert type(decoded.payload["n"]) is int


def test_parsed_json_keeps_wide_integers_floats_and_what_only_json_reads() -> None:
    assert codec.parse_json('{"a": 18446744073709551616, "b": [1e19, 0.25]}') == {
        "a": 18446744073709551616, "b": [1e19, 0.25]}
    assert codec.parse_json(b'[-9223372036854775809, 7]') == [-9223372036854775809, 7]
    assert codec.parse_json("[NaN]")[0] != codec.parse_json("[NaN]")[0]  # json's NaN
