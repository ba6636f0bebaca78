"""Wire models are strict where lax coercion would hide a producer's bug.

A number where a timestamp belongs, ``"1"`` for an int, ``1`` for a bool: pydantic's lax mode
would turn each into a plausible value and store it. Each is refused as a schema violation,
while JSON strings for timestamps and UUIDs, and Python values built in code, still work.
"""

from __future__ import annotations

from datetime import UTC, datetime
from uuid import UUID, uuid4

import pytest

from schemas import COMMAND_MESSAGE_TYPE, Durability, InputHeader, OperatorSource, Retire
from tests.unit.wire_bodies import (
    INPUT_ID,
    command_document,
    encode,
    input_document,
    parses,
    refused,
)

pytestmark = pytest.mark.unit


class TestTimestamps:
    @pytest.mark.parametrize(
        "value",
        [1764158400, 1764158400.5, "1764158400", "2026-11-26T12:00:00", "2026-11-26",
         "2026-11-26 12:00:00Z", "2026-11-26T12:00Z", "26/11/2026 12:00:00+00:00", True],
    )
    def test_anything_but_rfc3339_with_a_timezone_is_refused(self, value: object) -> None:
        document = input_document()
        document["input"]["header"]["timestamp"] = value
        detail = refused(encode(document))
        assert "input.prompt.header.timestamp" in detail
        assert "RFC 3339" in detail

    @pytest.mark.parametrize(
        "value",
        ["2026-11-26T12:00:00Z", "2026-11-26t12:00:00z", "2026-11-26T12:00:00.123456+05:30",
         "2026-11-26T12:00:00-08:00"],
    )
    def test_rfc3339_text_parses(self, value: str) -> None:
        document = input_document()
        document["input"]["header"]["timestamp"] = value
        assert parses(encode(document)).item.header.timestamp.tzinfo is not None


class TestStrictTypes:
    @pytest.mark.parametrize("value", ["1", 1.0, True])
    def test_step_index_must_be_an_integer(self, value: object) -> None:
        source = {"type": "flow", "flow_id": "f", "step_index": value}
        document = input_document("flow_step")
        document["input"]["header"]["source"] = source
        assert "step_index" in refused(encode(document))

    @pytest.mark.parametrize("value", [1, 0, "true", "false", "yes"])
    def test_visibility_flags_must_be_booleans(self, value: object) -> None:
        document = input_document()
        document["input"]["header"]["visibility"] = {"transcript_eligible": value}
        assert "transcript_eligible" in refused(encode(document))

    @pytest.mark.parametrize("value", [1, "true"])
    def test_abandon_pending_must_be_a_boolean(self, value: object) -> None:
        body = encode(command_document("retire", abandon_pending=value))
        assert "abandon_pending" in refused(body, COMMAND_MESSAGE_TYPE)

    def test_uuids_arrive_as_strings(self) -> None:
        parsed = parses(encode(input_document()))
        assert parsed.item.header.id == UUID(INPUT_ID)


def test_models_built_in_code_keep_working() -> None:
    header = InputHeader(id=uuid4(), timestamp=datetime(2026, 1, 1, tzinfo=UTC),
                         source=OperatorSource(), durability=Durability.DURABLE)
    assert header.timestamp.tzinfo is UTC
    assert Retire(command_id=uuid4(), abandon_pending=True).abandon_pending is True
    again = InputHeader.model_validate_json(header.model_dump_json())
    assert again == header
