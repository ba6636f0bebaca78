"""``parse_delivery`` never raises, whatever the bytes, the type, the routing key or message id.

Three sources of bytes: arbitrary bytes; text over JSON's structural alphabet (brackets,
quotes, escapes, NaN, surrogate escapes), which reaches the parser's corners far more often
than random bytes; and valid messages with a few bytes changed, which reach the schema and
the routing checks behind the parser.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schemas import COMMAND_MESSAGE_TYPE, INPUT_MESSAGE_TYPE, Limits, Malformed, TooLarge
from tests.unit.wire_bodies import (
    COMMAND_ID,
    INPUT_FIELDS,
    INPUT_ID,
    RUNTIME,
    command_document,
    encode,
    input_document,
)
from worker.pipeline.parsing import ParsedCommand, ParsedInput, Unparseable, parse_delivery

pytestmark = pytest.mark.unit

LIMITS = Limits(max_message_bytes=64 * 1024, max_json_depth=16)

FRAGMENTS = [
    b"[", b"]", b"{", b"}", b",", b":", b'"', b"\\", b"\\u", b"\\ud800", b"\\udc00", b"\\u0000",
    b"NaN", b"Infinity", b"-", b"1e999", b"0", b"-0.5e-3", b"true", b"null", b" ", b"\n",
    b'"runtime_id"', b'"rt:fuzz"', b'"input"', b'"command"', b'"header"', b"\xff", b"\xed\xa0\x80",
    b"\xc3\xa9", b"\xf0\x9f\x98\x80",
]

VALID_BODIES = [encode(input_document(kind)) for kind in INPUT_FIELDS] + [
    encode(command_document(kind)) for kind in ("stop", "retire", "abandon_input")
]

message_types = st.sampled_from([INPUT_MESSAGE_TYPE, COMMAND_MESSAGE_TYPE, None, "", "x"])
optional_text = st.none() | st.sampled_from([RUNTIME, INPUT_ID, COMMAND_ID, ""]) | st.text()


def check(body: bytes, message_type: str | None, routing_key: str | None,
          message_id: str | None) -> None:
    parsed = parse_delivery(
        body, message_type, LIMITS, routing_key=routing_key, message_id=message_id
    )
    assert isinstance(parsed, ParsedInput | ParsedCommand | Unparseable)
    if isinstance(parsed, Unparseable):
        assert isinstance(parsed.reason, Malformed | TooLarge)
        if isinstance(parsed.reason, Malformed):
            assert parsed.reason.detail
            assert "could not be parsed" not in parsed.reason.detail, parsed.reason
    else:
        assert routing_key is None or parsed.runtime_id == routing_key


@given(st.binary(max_size=2_000), message_types, optional_text, optional_text)
@settings(max_examples=400, deadline=None)
def test_arbitrary_bytes(body: bytes, message_type: str | None, routing_key: str | None,
                         message_id: str | None) -> None:
    check(body, message_type, routing_key, message_id)


@given(st.lists(st.sampled_from(FRAGMENTS), max_size=300).map(b"".join), message_types,
       optional_text, optional_text)
@settings(max_examples=600, deadline=None)
def test_json_shaped_bytes(body: bytes, message_type: str | None, routing_key: str | None,
                           message_id: str | None) -> None:
    check(body, message_type, routing_key, message_id)


@st.composite
def mutated(draw: Any) -> bytes:
    body = bytearray(draw(st.sampled_from(VALID_BODIES)))
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(body)))
        action = draw(st.sampled_from(["insert", "delete", "replace"]))
        piece = draw(st.sampled_from(FRAGMENTS) | st.binary(min_size=1, max_size=3))
        if action == "insert":
            body[at:at] = piece
        elif action == "delete":
            del body[at : at + len(piece)]
        else:
            body[at : at + len(piece)] = piece
    return bytes(body)


@given(mutated(), message_types, optional_text, optional_text)
@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_valid_messages_with_bytes_changed(body: bytes, message_type: str | None,
                                           routing_key: str | None,
                                           message_id: str | None) -> None:
    check(body, message_type, routing_key, message_id)
