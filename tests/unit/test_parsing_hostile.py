"""Hostile bytes at the door: every one is a typed, readable rejection; nothing valid is lost.

Each category of DOMAIN-breaking input that reached the worker before gets a test here: nesting
deep enough to blow Python's recursion, NaN and infinities, duplicate keys, lone surrogates,
invalid UTF-8, timestamps that are not RFC 3339 text, routing keys and message ids that disagree
with the body, and bodies over the size limit. And every valid message still parses.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import pytest

from schemas import (
    COMMAND_MESSAGE_TYPE,
    COMMAND_TYPES,
    DEFAULT_LIMITS,
    INPUT_MESSAGE_TYPE,
    BlobImageBlock,
    InlineImageBlock,
    Limits,
    Malformed,
    PromptInput,
    TextBlock,
    TooLarge,
)
from tests.unit.wire_bodies import (
    COMMAND_ID,
    INPUT_FIELDS,
    INPUT_ID,
    RUNTIME,
    command_document,
    encode,
    header,
    input_document,
    nested,
    parses,
    prompt_with_text,
    refused,
)
from worker.pipeline.parsing import ParsedCommand, ParsedInput, Unparseable, parse_delivery

pytestmark = pytest.mark.unit


def event_with_payload(payload_json: bytes) -> bytes:
    """An external event whose payload is exactly ``payload_json``."""
    document = input_document("external_event", payload="@")
    return encode(document).replace(b'"@"', payload_json)


class TestNesting:
    @pytest.mark.parametrize("depth", [5_000, 100_000])
    @pytest.mark.parametrize("kind", ["array", "object"])
    def test_deep_bodies_are_refused_without_recursion(self, depth: int, kind: str) -> None:
        detail = refused(nested(depth, kind))
        assert "nested deeper than 64 levels" in detail
        assert depth > sys.getrecursionlimit()  # the sizes that used to raise RecursionError

    @pytest.mark.parametrize("depth", [900, 5_000, 100_000])
    def test_deep_payload_inside_a_valid_envelope_is_refused(self, depth: int) -> None:
        detail = refused(event_with_payload(nested(depth)))
        assert "nested deeper than 64 levels" in detail

    @pytest.mark.parametrize("kind", ["array", "object"])
    def test_exactly_at_the_limit_parses_and_one_more_is_refused(self, kind: str) -> None:
        # The envelope object and its "input" object are two levels of the document.
        limit = DEFAULT_LIMITS.max_json_depth
        at_limit = parses(event_with_payload(nested(limit - 2, kind)))
        assert isinstance(at_limit, ParsedInput)
        assert "nested deeper than 64" in refused(event_with_payload(nested(limit - 1, kind)))

    def test_the_configured_limit_is_the_one_applied(self) -> None:
        limits = Limits(max_json_depth=8)
        assert isinstance(parses(event_with_payload(nested(6)), limits=limits), ParsedInput)
        assert "deeper than 8 levels" in refused(event_with_payload(nested(7)), limits=limits)

    def test_brackets_inside_strings_are_not_nesting(self) -> None:
        parsed = parses(prompt_with_text(json.dumps("[{" * 10_000).encode()))
        assert parsed.item.content[0].text == "[{" * 10_000

    def test_many_shallow_containers_are_fine(self) -> None:
        payload = b"[" + b",".join([b'{"a":[1,{"b":[]}]}'] * 20_000) + b"]"
        assert isinstance(parses(event_with_payload(payload)), ParsedInput)


class TestNonFiniteNumbers:
    @pytest.mark.parametrize("literal", [b"NaN", b"Infinity", b"-Infinity"])
    @pytest.mark.parametrize(
        "where", ["payload", "nested_payload", "payload_list", "timestamp", "step_index"]
    )
    def test_non_json_numbers_are_refused_anywhere(self, literal: bytes, where: str) -> None:
        templates = {
            "payload": event_with_payload(b"@"),
            "nested_payload": event_with_payload(b'{"a":{"b":[1,{"c":@}]}}'),
            "payload_list": event_with_payload(b"[1,2,@]"),
            "timestamp": encode(input_document()).replace(b'"2026-11-26T12:00:00Z"', b"@"),
            "step_index": encode(
                input_document("flow_step", header=header(
                    source={"type": "flow", "flow_id": "f", "step_index": 0}))
            ).replace(b'"step_index":0', b'"step_index":@'),
        }
        body = templates[where].replace(b"@", literal)
        assert literal in body
        detail = refused(body)
        assert f"{literal.decode()} is not a JSON number" in detail

    @pytest.mark.parametrize("number", [b"1e999", b"-1e999", b"1" + b"0" * 400 + b".0"])
    def test_numbers_that_overflow_a_double_are_refused(self, number: bytes) -> None:
        detail = refused(event_with_payload(b'{"n":[0,' + number + b"]}"))
        assert "too large for a double" in detail
        assert "$.input.payload.n[1]" in detail

    def test_large_but_finite_numbers_pass(self) -> None:
        parsed = parses(event_with_payload(b'[1e308,-1e308,123456789012345678901234567890]'))
        assert parsed.item.payload == [1e308, -1e308, 123456789012345678901234567890]


class TestDuplicateKeys:
    def test_a_second_runtime_id_is_refused_and_names_the_key(self) -> None:
        body = encode(input_document()).replace(
            b'{"runtime_id":"rt:wire:7"', b'{"runtime_id":"rt:wire:7","runtime_id":"rt:other"'
        )
        detail = refused(body)
        assert detail == "body is not strict JSON: duplicate key 'runtime_id' at $"

    def test_a_duplicate_text_in_a_content_block_is_refused(self) -> None:
        body = prompt_with_text(b'"what the router saw","text":"what the store would keep"')
        assert "duplicate key 'text' at $.input.content[0]" in refused(body)

    def test_a_duplicate_in_the_header_names_its_path(self) -> None:
        body = encode(input_document()).replace(
            b'"durability":"durable"', b'"durability":"durable","id":"' + INPUT_ID.encode() + b'"'
        )
        assert "duplicate key 'id' at $.input.header" in refused(body)

    def test_a_duplicate_spelled_with_an_escape_is_still_a_duplicate(self) -> None:
        body = event_with_payload(b'{"ref":1,"\\u0072ef":2}')
        assert "duplicate key 'ref' at $.input.payload" in refused(body)

    def test_a_duplicate_deep_in_a_payload(self) -> None:
        body = event_with_payload(b'{"a":[{"x":1},{"odd key":{"k":1,"k":2}}]}')
        assert 'duplicate key \'k\' at $.input.payload.a[1]["odd key"]' in refused(body)

    def test_duplicate_envelope_members(self) -> None:
        document = encode(command_document("stop"))
        body = document[:-1] + b',"command":' + encode(command_document("destroy")["command"])
        assert "duplicate key 'command' at $" in refused(body + b"}", COMMAND_MESSAGE_TYPE)

    def test_equal_keys_in_different_objects_are_fine(self) -> None:
        body = event_with_payload(b'[{"a":1},{"a":2},{"b":{"a":3}}]')
        assert isinstance(parses(body), ParsedInput)


class TestText:
    @pytest.mark.parametrize(
        "literal",
        [b'"\\ud800"', b'"a\\udbffb"', b'"\\udc00"', b'"x\\ude00\\ud83d"', b'"\\ud83d\\u0041"'],
        ids=["high", "high_inside", "low", "reversed_pair", "high_then_other"],
    )
    def test_escaped_lone_surrogates_are_refused(self, literal: bytes) -> None:
        detail = refused(prompt_with_text(literal))
        assert "lone surrogate escape" in detail

    @pytest.mark.parametrize(
        "raw",
        [b"\xed\xa0\x80", b"\xed\xbf\xbf", b"\xf0\x9f\x98"],
        ids=["raw_high_surrogate", "raw_low_surrogate", "truncated_sequence"],
    )
    def test_raw_surrogates_and_broken_sequences_are_invalid_utf8(self, raw: bytes) -> None:
        detail = refused(prompt_with_text(b'"a' + raw + b'b"'))
        assert "not UTF-8 JSON: invalid UTF-8" in detail

    @pytest.mark.parametrize(
        "raw", [b"\xff", b"\xc0\xaf", b"\xe9", b"\xf4\x90\x80\x80"],
        ids=["ff", "overlong_slash", "latin1_e_acute", "above_u10ffff"],
    )
    def test_invalid_utf8_is_refused(self, raw: bytes) -> None:
        assert "not UTF-8 JSON: invalid UTF-8" in refused(prompt_with_text(b'"' + raw + b'"'))

    def test_a_latin1_body_is_refused(self) -> None:
        body = json.dumps(input_document(content="café"), ensure_ascii=False).encode("latin-1")
        assert "invalid UTF-8" in refused(body)

    @pytest.mark.parametrize(
        ("literal", "text"),
        [(b'"\\ud83d\\ude00"', "\U0001f600"), ('"é 😀"'.encode(), "é 😀"), (b'"\\u0000"', "\x00")],
        ids=["escaped_pair", "raw_utf8", "escaped_nul"],
    )
    def test_valid_text_is_kept_exactly(self, literal: bytes, text: str) -> None:
        assert parses(prompt_with_text(literal)).item.content[0] == TextBlock(text=text)

    @pytest.mark.parametrize("field", ["idempotency_key", "supersession_key", "correlation_id"])
    def test_a_nul_in_a_key_is_refused(self, field: str) -> None:
        extra = b'"durability":"durable","' + field.encode() + b'":"a\\u0000b"'
        body = encode(input_document()).replace(b'"durability":"durable"', extra)
        assert f"input.prompt.header.{field}" in refused(body)


class TestRouting:
    def test_a_routing_key_naming_another_runtime_is_refused(self) -> None:
        parsed = parse_delivery(
            encode(input_document()), INPUT_MESSAGE_TYPE, DEFAULT_LIMITS, routing_key="rt:shard-b"
        )
        assert isinstance(parsed, Unparseable)
        assert parsed.reason == Malformed(
            detail="routing key 'rt:shard-b' is not the body's runtime_id 'rt:wire:7'"
        )
        # The rejection is recorded where the message was routed, not where the body points.
        assert parsed.runtime_id == "rt:shard-b"

    def test_a_routing_key_that_is_no_runtime_id_records_nowhere(self) -> None:
        body = encode(command_document("stop"))
        parsed = parse_delivery(body, COMMAND_MESSAGE_TYPE, DEFAULT_LIMITS, routing_key="a b")
        assert isinstance(parsed, Unparseable)
        assert (parsed.runtime_id, parsed.is_command) == (None, True)
        assert isinstance(parsed.reason, Malformed)
        assert "'a b'" in parsed.reason.detail
        assert "'rt:wire:7'" in parsed.reason.detail

    def test_an_empty_routing_key_is_a_mismatch(self) -> None:
        assert "routing key ''" in refused(encode(input_document()), routing_key="")

    def test_a_mismatch_wins_over_a_schema_violation(self) -> None:
        document = input_document()
        document["input"]["header"]["durability"] = "forever"
        parsed = parse_delivery(
            encode(document), INPUT_MESSAGE_TYPE, DEFAULT_LIMITS, routing_key="rt:other"
        )
        assert isinstance(parsed, Unparseable)
        assert parsed.runtime_id == "rt:other"
        assert isinstance(parsed.reason, Malformed)
        assert "routing key" in parsed.reason.detail

    def test_a_matching_routing_key_parses(self) -> None:
        assert parses(encode(input_document()), routing_key=RUNTIME).runtime_id == RUNTIME

    def test_a_schema_violation_still_names_the_body_runtime(self) -> None:
        document = input_document()
        document["input"]["header"]["durability"] = "forever"
        parsed = parse_delivery(encode(document), INPUT_MESSAGE_TYPE, DEFAULT_LIMITS,
                                routing_key=RUNTIME)
        assert isinstance(parsed, Unparseable)
        assert parsed.runtime_id == RUNTIME

    def test_a_body_that_is_not_strict_json_names_no_runtime(self) -> None:
        body = encode(input_document()).replace(b'"runtime_id":"rt:wire:7"',
                                                b'"runtime_id":"rt:wire:7","runtime_id":"rt:x"')
        parsed = parse_delivery(body, INPUT_MESSAGE_TYPE, DEFAULT_LIMITS, routing_key=RUNTIME)
        assert isinstance(parsed, Unparseable)
        assert parsed.runtime_id is None


class TestMessageId:
    def test_an_input_whose_message_id_differs_is_refused(self) -> None:
        other = "0190e4a8-7c2b-7d3e-8f00-000000000bad"
        parsed = parse_delivery(
            encode(input_document()), INPUT_MESSAGE_TYPE, DEFAULT_LIMITS, message_id=other
        )
        assert isinstance(parsed, Unparseable)
        assert parsed.reason == Malformed(
            detail=f"message_id '{other}' is not the input id {INPUT_ID}"
        )
        assert parsed.runtime_id == RUNTIME

    def test_a_command_whose_message_id_differs_is_refused(self) -> None:
        detail = refused(encode(command_document("stop")), COMMAND_MESSAGE_TYPE,
                         message_id=INPUT_ID)
        assert detail == f"message_id '{INPUT_ID}' is not the command id {COMMAND_ID}"

    def test_a_message_id_that_is_no_uuid_is_refused(self) -> None:
        assert "message_id 'order-17'" in refused(encode(input_document()), message_id="order-17")

    @pytest.mark.parametrize("message_id", [None, "", INPUT_ID, INPUT_ID.upper()])
    def test_absent_or_matching_message_ids_parse(self, message_id: str | None) -> None:
        assert isinstance(parses(encode(input_document()), message_id=message_id), ParsedInput)

    def test_a_matching_command_id_parses(self) -> None:
        body = encode(command_document("stop"))
        assert isinstance(parses(body, COMMAND_MESSAGE_TYPE, message_id=COMMAND_ID), ParsedCommand)


class TestOtherShapes:
    def test_an_oversized_body_is_too_large_before_it_is_read(self) -> None:
        limits = Limits(max_message_bytes=100)
        body = b"[" * 101  # would be malformed too: size is checked first
        parsed = parse_delivery(body, INPUT_MESSAGE_TYPE, limits)
        assert isinstance(parsed, Unparseable)
        assert parsed.reason == TooLarge(limit="message_bytes", actual=101, maximum=100)

    @pytest.mark.parametrize(
        ("body", "expected"),
        [(b"{not json", "not UTF-8 JSON"), (b"", "not UTF-8 JSON"), (b"\xef\xbb\xbf{}", "UTF-8"),
         (b'{"runtime_id":"rt:a"} {}', "trailing characters"), (b"[]", "schema violation"),
         (b'"text"', "schema violation"), (b"null", "schema violation")],
    )
    def test_other_broken_bodies(self, body: bytes, expected: str) -> None:
        assert expected in refused(body)

    def test_an_unknown_message_type_keeps_the_runtime(self) -> None:
        parsed = parse_delivery(encode(input_document()), "meerkat.other.v9", DEFAULT_LIMITS)
        assert isinstance(parsed, Unparseable)
        assert parsed.runtime_id == RUNTIME
        assert isinstance(parsed.reason, Malformed)
        assert "unknown message type 'meerkat.other.v9'" in parsed.reason.detail

    def test_a_hostile_tag_is_not_echoed_at_length(self) -> None:
        document = input_document()
        document["input"]["input_type"] = "x" * 100_000
        assert len(refused(encode(document))) < 2_000


class TestValidMessages:
    def test_a_prompt_with_an_inline_and_a_stored_image(self) -> None:
        parsed = parses(encode(input_document()), routing_key=RUNTIME, message_id=INPUT_ID)
        assert isinstance(parsed, ParsedInput)
        assert isinstance(parsed.item, PromptInput)
        kinds = [type(block) for block in parsed.item.content]
        assert kinds == [TextBlock, InlineImageBlock, BlobImageBlock]
        assert parsed.size == len(encode(input_document()))

    def test_a_large_inline_image(self) -> None:
        data = "A" * (5 * 1024 * 1024)
        document = input_document(
            content=[{"type": "image", "media_type": "image/png", "source": "inline", "data": data}]
        )
        parsed = parses(encode(document), routing_key=RUNTIME, message_id=INPUT_ID)
        assert parsed.item.content[0].data == data

    @pytest.mark.parametrize("input_type", list(INPUT_FIELDS))
    @pytest.mark.parametrize("message_type", [INPUT_MESSAGE_TYPE, None])
    def test_every_input_kind(self, input_type: str, message_type: str | None) -> None:
        parsed = parses(encode(input_document(input_type)), message_type, routing_key=RUNTIME,
                        message_id=INPUT_ID)
        assert isinstance(parsed, ParsedInput)
        assert parsed.item.input_type == input_type

    @pytest.mark.parametrize("command_type", COMMAND_TYPES)
    @pytest.mark.parametrize("message_type", [COMMAND_MESSAGE_TYPE, None])
    def test_every_command(self, command_type: str, message_type: str | None) -> None:
        parsed = parses(encode(command_document(command_type)), message_type,
                        routing_key=RUNTIME, message_id=COMMAND_ID)
        assert isinstance(parsed, ParsedCommand)
        assert (parsed.runtime_id, parsed.command.command_type) == (RUNTIME, command_type)

    def test_positional_parameters_still_work(self) -> None:
        parsed = parse_delivery(encode(input_document()), INPUT_MESSAGE_TYPE, DEFAULT_LIMITS)
        assert isinstance(parsed, ParsedInput)


def test_an_unexpected_failure_inside_parsing_is_still_a_typed_rejection() -> None:
    not_bytes: Any = None  # what no broker delivers: the guard must hold anyway
    parsed = parse_delivery(not_bytes, INPUT_MESSAGE_TYPE, DEFAULT_LIMITS)
    assert isinstance(parsed, Unparseable)
    assert parsed.reason == Malformed(detail="body could not be parsed (TypeError)")
