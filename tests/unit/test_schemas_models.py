"""The wire models parse the documented messages, round-trip, and refuse what they must."""

from __future__ import annotations

import json
import typing
from typing import Any

import pytest
from pydantic import BaseModel, TypeAdapter, ValidationError

from schemas import (
    COMMAND_TYPES,
    BlobImageBlock,
    Command,
    CommandEnvelope,
    ContentBlock,
    ContinuationInput,
    EventCategory,
    EventCode,
    EventEnvelope,
    ExternalEventInput,
    HandlingMode,
    ImageMediaType,
    InlineImageBlock,
    InputEnvelope,
    PeerInput,
    PeerSource,
    PromptInput,
    Reply,
    RuntimeId,
    TextBlock,
)
from tests.unit.images import IMAGE_BYTES, b64

pytestmark = pytest.mark.unit

RUNTIME = "rt:demo"
INPUT_ID = "0190e4a8-7c2b-7d3e-8f00-0123456789ab"
COMMAND_ID = "0190e4a8-7c2b-7d3e-8f00-00000000c0de"
EVENT_ID = "0190e4a8-7c2b-7d3e-8f00-0000000000e7"
PNG_BASE64 = b64(IMAGE_BYTES[ImageMediaType.PNG])
BLOB_ID = "sha256:" + "ab" * 32

# DOMAIN.md §5, in its order.
DOMAIN_COMMANDS = (
    "retire",
    "reset",
    "stop",
    "resume",
    "destroy",
    "recycle",
    "abandon_pending",
    "abandon_input",
    "cancel_run",
)

# DOMAIN.md §10.
DOMAIN_EVENT_CODES = {
    "input.accepted", "input.deduplicated", "input.rejected", "input.queued",
    "input.coalesced", "input.superseded", "input.staged", "input.applied",
    "input.consumed", "input.abandoned", "run.started", "run.completed", "run.failed",
    "run.cancelled", "runtime.state_changed", "command.completed", "command.rejected",
}

SOURCES: dict[str, dict[str, Any]] = {
    "operator": {"type": "operator"},
    "peer": {"type": "peer", "peer_id": "peer-7"},
    "peer_with_runtime": {"type": "peer", "peer_id": "peer-7", "runtime_id": "rt:peer:7"},
    "flow": {"type": "flow", "flow_id": "flow-1", "step_index": 0},
    "system": {"type": "system"},
    "external": {"type": "external", "source_name": "github"},
}

CONVENTIONS: dict[str, dict[str, Any]] = {
    "message": {"convention_type": "message"},
    "request": {"convention_type": "request", "request_id": "req-1", "intent": "review"},
    "response_progress": {
        "convention_type": "response_progress", "request_id": "req-1", "phase": "halfway",
    },
    "response_terminal": {
        "convention_type": "response_terminal", "request_id": "req-1", "status": "completed",
    },
}


def header(source: dict[str, Any] | None = None, /, **extra: Any) -> dict[str, Any]:
    return {
        "id": INPUT_ID,
        "timestamp": "2026-11-26T12:00:00Z",
        "source": source or SOURCES["operator"],
        "durability": "durable",
        **extra,
    }


def input_body(input_type: str, source: dict[str, Any] | None = None) -> dict[str, Any]:
    """A complete body of each input kind, with its optional fields filled in."""
    bodies: dict[str, dict[str, Any]] = {
        "prompt": {
            "content": [
                {"type": "text", "text": "hello"},
                {"type": "image", "media_type": "image/png", "source": "inline",
                 "data": PNG_BASE64},
                {"type": "image", "media_type": "image/gif", "source": "blob",
                 "blob_id": BLOB_ID},
            ],
            "turn_metadata": {"handling_mode": "steer", "labels": {"team": "core"}},
        },
        "peer": {"convention": CONVENTIONS["request"], "content": "please review",
                 "payload": {"pr": 12}, "handling_mode": "queue"},
        "flow_step": {"step_id": "step-3", "content": "next step"},
        "external_event": {"event_type": "push", "payload": {"ref": "main"},
                           "blocks": [{"type": "text", "text": "pushed"}],
                           "handling_mode": "steer"},
        "continuation": {"reason": "tool result ready", "request_id": "req-1"},
        "operation": {"operation_id": "op-1", "event": {"kind": "mcp_ready"}},
    }
    return {"input_type": input_type, "header": header(source), **bodies[input_type]}


def input_envelope(item: dict[str, Any]) -> dict[str, Any]:
    return {"runtime_id": RUNTIME, "input": item}


def command_body(command_type: str) -> dict[str, Any]:
    body: dict[str, Any] = {"command_type": command_type, "command_id": COMMAND_ID,
                            "reason": "operator request"}
    if command_type == "abandon_input":
        body["input_id"] = INPUT_ID
    return body


def event_body(**extra: Any) -> dict[str, Any]:
    return {
        "event_id": EVENT_ID, "at": "2026-11-26T12:00:01Z", "runtime_id": RUNTIME,
        "category": "run_lifecycle", "code": "run.completed", "data": {"message_count": 2},
        **extra,
    }


def round_trips(model_type: type[BaseModel], document: dict[str, Any]) -> None:
    parsed = model_type.model_validate_json(json.dumps(document))
    assert model_type.model_validate_json(parsed.model_dump_json()) == parsed


def tag_error(exc: pytest.ExceptionInfo[ValidationError]) -> dict[str, Any]:
    """The discriminator error among a validation error's details."""
    errors = [e for e in exc.value.errors() if e["type"] == "union_tag_invalid"]
    assert errors, exc.value.errors()
    return dict(errors[0])


class TestContractExamples:
    """The examples of CONTRACT.md "Messages" parse as documented."""

    def test_input_message_body(self) -> None:
        body = {"runtime_id": "rt:demo", "input": {"input_type": "prompt",
                "header": {"id": INPUT_ID, "timestamp": "2026-11-26T12:00:00Z",
                           "source": {"type": "operator"},
                           "durability": "durable", "idempotency_key": "k-1"},
                "content": [{"type": "text", "text": "hello"},
                            {"type": "image", "media_type": "image/png", "source": "inline",
                             "data": PNG_BASE64}]}}
        envelope = InputEnvelope.model_validate_json(json.dumps(body))
        assert envelope.runtime_id == "rt:demo"
        assert isinstance(envelope.input, PromptInput)
        assert envelope.input.header.idempotency_key == "k-1"
        assert envelope.input.content == [
            TextBlock(text="hello"),
            InlineImageBlock(media_type=ImageMediaType.PNG, data=PNG_BASE64),
        ]

    @pytest.mark.parametrize("command_type", DOMAIN_COMMANDS)
    def test_command_message_body(self, command_type: str) -> None:
        body = {"runtime_id": "rt:demo", "command": command_body(command_type)}
        envelope = CommandEnvelope.model_validate_json(json.dumps(body))
        assert envelope.command.command_type == command_type
        assert str(envelope.command.command_id) == COMMAND_ID
        assert envelope.command.reason == "operator request"

    @pytest.mark.parametrize(
        "outcome",
        [
            {"outcome_type": "accepted", "input_id": INPUT_ID, "phase": "queued",
             "lane": "queue", "admission_seq": 7},
            {"outcome_type": "accepted", "input_id": INPUT_ID, "phase": "consumed",
             "lane": None, "admission_seq": 8},
            {"outcome_type": "deduplicated", "input_id": INPUT_ID, "existing_id": EVENT_ID},
            {"outcome_type": "rejected", "reason": {"reject_type": "not_ready",
                                                   "state": "retired"}},
            {"outcome_type": "rejected", "reason": {"reject_type": "destroyed"}},
            {"outcome_type": "rejected", "reason": {"reject_type": "too_large",
                                                   "limit": "images", "actual": 17,
                                                   "maximum": 16}},
            {"outcome_type": "rejected", "reason": {"reject_type": "illegal_command",
                                                   "command_type": "reset",
                                                   "state": "running",
                                                   "detail": "reset is refused while running"}},
            {"outcome_type": "completed", "command_id": COMMAND_ID, "command_type": "retire",
             "state": "retired", "report": {"inputs_abandoned": 0, "inputs_pending_drain": 2}},
        ],
        ids=["accepted", "accepted-operation", "deduplicated", "rejected-not-ready",
             "rejected-destroyed", "rejected-too-large", "command-rejected", "completed"],
    )
    def test_reply_forms(self, outcome: dict[str, Any]) -> None:
        body = {"correlation_id": "corr-1", "runtime_id": RUNTIME, "outcome": outcome}
        reply = Reply.model_validate_json(json.dumps(body))
        assert reply.outcome.outcome_type == outcome["outcome_type"]
        round_trips(Reply, body)

    def test_reply_to_an_unreadable_message_has_no_runtime(self) -> None:
        body = {"correlation_id": None, "runtime_id": None,
                "outcome": {"outcome_type": "rejected",
                            "reason": {"reject_type": "malformed", "detail": "not JSON"}}}
        assert Reply.model_validate(body).runtime_id is None

    def test_event_envelope(self) -> None:
        body = event_body(causation_id=INPUT_ID, correlation_id="corr-1")
        event = EventEnvelope.model_validate_json(json.dumps(body))
        assert event.code is EventCode.RUN_COMPLETED
        assert event.category is EventCategory.RUN
        assert str(event.causation_id) == INPUT_ID
        round_trips(EventEnvelope, body)

    def test_event_envelope_optional_ids(self) -> None:
        event = EventEnvelope.model_validate(event_body())
        assert event.causation_id is None
        assert event.correlation_id is None


class TestRoundTrip:
    @pytest.mark.parametrize(
        "input_type",
        ["prompt", "peer", "flow_step", "external_event", "continuation", "operation"],
    )
    def test_every_input_kind(self, input_type: str) -> None:
        round_trips(InputEnvelope, input_envelope(input_body(input_type)))

    @pytest.mark.parametrize("convention", list(CONVENTIONS))
    def test_every_peer_convention(self, convention: str) -> None:
        item = input_body("peer") | {"convention": CONVENTIONS[convention]}
        round_trips(InputEnvelope, input_envelope(item))
        parsed = InputEnvelope.model_validate(input_envelope(item))
        assert isinstance(parsed.input, PeerInput)
        assert parsed.input.convention.convention_type == convention

    @pytest.mark.parametrize("source", list(SOURCES))
    def test_every_source(self, source: str) -> None:
        document = input_envelope(input_body("prompt", SOURCES[source]))
        round_trips(InputEnvelope, document)
        parsed = InputEnvelope.model_validate(document)
        assert parsed.input.header.source.type == SOURCES[source]["type"]

    def test_text_content(self) -> None:
        item = input_body("prompt") | {"content": "just text"}
        round_trips(InputEnvelope, input_envelope(item))

    @pytest.mark.parametrize("command_type", DOMAIN_COMMANDS)
    def test_every_command(self, command_type: str) -> None:
        round_trips(CommandEnvelope, {"runtime_id": RUNTIME, "command": command_body(command_type)})


class TestDefaults:
    def test_visibility_defaults_to_both_eligible(self) -> None:
        parsed = InputEnvelope.model_validate(input_envelope(input_body("flow_step")))
        assert parsed.input.header.visibility.transcript_eligible is True
        assert parsed.input.header.visibility.operator_eligible is True

    @pytest.mark.parametrize(
        ("input_type", "model_type"),
        [("external_event", ExternalEventInput), ("continuation", ContinuationInput)],
    )
    def test_handling_mode_defaults_to_queue(
        self, input_type: str, model_type: type[ExternalEventInput | ContinuationInput]
    ) -> None:
        item = input_body(input_type)
        item.pop("handling_mode", None)
        parsed = InputEnvelope.model_validate(input_envelope(item)).input
        assert isinstance(parsed, model_type)
        assert parsed.handling_mode is HandlingMode.QUEUE

    def test_optional_keys_default_to_none(self) -> None:
        parsed = InputEnvelope.model_validate(input_envelope(input_body("operation")))
        assert parsed.input.header.idempotency_key is None
        assert parsed.input.header.supersession_key is None
        assert parsed.input.header.correlation_id is None


def _with_extra(document: dict[str, Any], path: tuple[str | int, ...]) -> dict[str, Any]:
    """A deep copy of ``document`` with an unknown field added at ``path``."""
    copy = json.loads(json.dumps(document))
    target = copy
    for step in path:
        target = target[step]
    target["surprise"] = 1
    return typing.cast(dict[str, Any], copy)


class TestRefusals:
    @pytest.mark.parametrize(
        "path",
        [(), ("input",), ("input", "header"), ("input", "header", "source"),
         ("input", "content", 0), ("input", "content", 1), ("input", "content", 2),
         ("input", "turn_metadata")],
        ids=["envelope", "input", "header", "source", "text", "inline-image", "blob-image",
             "turn-metadata"],
    )
    def test_extra_input_fields_are_refused(self, path: tuple[str | int, ...]) -> None:
        document = _with_extra(input_envelope(input_body("prompt")), path)
        with pytest.raises(ValidationError) as exc:
            InputEnvelope.model_validate(document)
        assert "extra_forbidden" in {e["type"] for e in exc.value.errors()}

    def test_extra_peer_convention_field_is_refused(self) -> None:
        document = _with_extra(input_envelope(input_body("peer")), ("input", "convention"))
        with pytest.raises(ValidationError, match="extra"):
            InputEnvelope.model_validate(document)

    @pytest.mark.parametrize("path", [(), ("command",)], ids=["envelope", "command"])
    def test_extra_command_fields_are_refused(self, path: tuple[str | int, ...]) -> None:
        document = _with_extra({"runtime_id": RUNTIME, "command": command_body("stop")}, path)
        with pytest.raises(ValidationError, match="extra"):
            CommandEnvelope.model_validate(document)

    def test_extra_event_field_is_refused(self) -> None:
        with pytest.raises(ValidationError, match="extra"):
            EventEnvelope.model_validate(_with_extra(event_body(), ()))

    def test_naive_timestamp_is_refused(self) -> None:
        item = input_body("prompt")
        item["header"]["timestamp"] = "2026-11-26T12:00:00"
        with pytest.raises(ValidationError, match="timezone"):
            InputEnvelope.model_validate(input_envelope(item))

    @pytest.mark.parametrize(
        ("model", "field", "value"),
        [
            (InputEnvelope.model_validate(input_envelope(input_body("prompt"))),
             "runtime_id", "rt:other"),
            (InputEnvelope.model_validate(input_envelope(input_body("prompt"))).input,
             "content", "changed"),
            (InputEnvelope.model_validate(input_envelope(input_body("prompt"))).input.header,
             "durability", "ephemeral"),
            (TextBlock(text="hello"), "text", "changed"),
            (BlobImageBlock(media_type=ImageMediaType.PNG, blob_id=BLOB_ID),
             "blob_id", "sha256:" + "00" * 32),
            (CommandEnvelope.model_validate({"runtime_id": RUNTIME,
                                             "command": command_body("retire")}).command,
             "abandon_pending", True),
            (EventEnvelope.model_validate(event_body()), "data", {}),
            (Reply.model_validate({"correlation_id": None, "runtime_id": RUNTIME,
                                   "outcome": {"outcome_type": "rejected",
                                               "reason": {"reject_type": "destroyed"}}}),
             "runtime_id", "rt:other"),
        ],
        ids=["envelope", "input", "header", "text", "blob-image", "command", "event", "reply"],
    )
    def test_models_are_frozen(self, model: BaseModel, field: str, value: object) -> None:
        before = model.model_dump()
        with pytest.raises(ValidationError, match="frozen"):
            setattr(model, field, value)
        assert model.model_dump() == before


class TestRuntimeId:
    @pytest.mark.parametrize(
        "runtime_id",
        ["a", "rt:session:0190e4a8-7c2b-7d3e-8f00-0123456789ab", "A.z_0-9:x", "r" * 200],
        ids=["one-char", "session", "every-class", "200-chars"],
    )
    def test_accepted(self, runtime_id: str) -> None:
        assert TypeAdapter(RuntimeId).validate_python(runtime_id) == runtime_id

    @pytest.mark.parametrize(
        "runtime_id",
        ["", "r" * 201, "rt demo", "rt/demo", "rt:démo", "rt:\u0661", "rt:demo\n", "rt:*"],
        ids=["empty", "201-chars", "space", "slash", "accent", "arabic-digit",
             "trailing-newline", "star"],
    )
    def test_refused_everywhere_it_appears(self, runtime_id: str) -> None:
        with pytest.raises(ValidationError):
            TypeAdapter(RuntimeId).validate_python(runtime_id)
        with pytest.raises(ValidationError, match="runtime_id"):
            InputEnvelope.model_validate(
                input_envelope(input_body("prompt")) | {"runtime_id": runtime_id}
            )
        with pytest.raises(ValidationError, match="runtime_id"):
            CommandEnvelope.model_validate(
                {"runtime_id": runtime_id, "command": command_body("stop")}
            )
        with pytest.raises(ValidationError, match="runtime_id"):
            EventEnvelope.model_validate(event_body(runtime_id=runtime_id))
        with pytest.raises(ValidationError, match="runtime_id"):
            PeerSource(peer_id="peer-7", runtime_id=runtime_id)


class TestKeys:
    @pytest.mark.parametrize("key", ["idempotency_key", "supersession_key", "correlation_id"])
    def test_256_chars_accepted(self, key: str) -> None:
        item = input_body("prompt") | {"header": header(**{key: "k" * 256})}
        parsed = InputEnvelope.model_validate(input_envelope(item))
        assert getattr(parsed.input.header, key) == "k" * 256

    @pytest.mark.parametrize("key", ["idempotency_key", "supersession_key", "correlation_id"])
    @pytest.mark.parametrize("value", ["k" * 257, ""], ids=["257-chars", "empty"])
    def test_refused(self, key: str, value: str) -> None:
        item = input_body("prompt") | {"header": header(**{key: value})}
        with pytest.raises(ValidationError, match=key):
            InputEnvelope.model_validate(input_envelope(item))


class TestDiscriminators:
    def test_unknown_input_type(self) -> None:
        item = input_body("prompt") | {"input_type": "chat"}
        with pytest.raises(ValidationError) as exc:
            InputEnvelope.model_validate(input_envelope(item))
        error = tag_error(exc)
        assert error["ctx"]["tag"] == "chat"
        assert error["ctx"]["discriminator"] == "'input_type'"
        for known in ("prompt", "peer", "flow_step", "external_event", "continuation",
                      "operation"):
            assert f"'{known}'" in error["msg"]

    def test_missing_input_type(self) -> None:
        item = input_body("prompt")
        del item["input_type"]
        with pytest.raises(ValidationError, match="input_type") as exc:
            InputEnvelope.model_validate(input_envelope(item))
        assert exc.value.errors()[0]["type"] == "union_tag_not_found"

    def test_unknown_command_type(self) -> None:
        with pytest.raises(ValidationError) as exc:
            CommandEnvelope.model_validate(
                {"runtime_id": RUNTIME, "command": command_body("stop") | {"command_type": "kill"}}
            )
        error = tag_error(exc)
        assert error["ctx"]["tag"] == "kill"
        for known in COMMAND_TYPES:
            assert f"'{known}'" in error["msg"]

    def test_unknown_content_block_type(self) -> None:
        item = input_body("prompt") | {"content": [{"type": "video", "url": "x"}]}
        with pytest.raises(ValidationError) as exc:
            InputEnvelope.model_validate(input_envelope(item))
        error = tag_error(exc)
        assert error["ctx"]["tag"] == "video"
        assert "'text', 'image'" in error["msg"]

    def test_unknown_image_source(self) -> None:
        block = {"type": "image", "media_type": "image/png", "source": "url",
                 "data": PNG_BASE64}
        with pytest.raises(ValidationError) as exc:
            TypeAdapter(ContentBlock).validate_python(block)
        error = tag_error(exc)
        assert error["ctx"]["tag"] == "url"
        assert "'inline', 'blob'" in error["msg"]

    def test_unsupported_media_type(self) -> None:
        block = {"type": "image", "media_type": "image/bmp", "source": "inline", "data": "Qk0="}
        with pytest.raises(ValidationError, match="media_type"):
            TypeAdapter(ContentBlock).validate_python(block)

    def test_malformed_blob_id(self) -> None:
        block = {"type": "image", "media_type": "image/png", "source": "blob",
                 "blob_id": "sha256:XYZ"}
        with pytest.raises(ValidationError, match="blob_id"):
            TypeAdapter(ContentBlock).validate_python(block)


class TestEventCodes:
    def test_codes_are_those_of_the_domain(self) -> None:
        assert {code.value for code in EventCode} == DOMAIN_EVENT_CODES

    @pytest.mark.parametrize("code", list(EventCode))
    def test_every_code_has_its_category(self, code: EventCode) -> None:
        expected = {
            "input": EventCategory.INPUT,
            "run": EventCategory.RUN,
            "runtime": EventCategory.RUNTIME,
            "command": EventCategory.COMMAND,
        }[code.value.split(".")[0]]
        assert code.category is expected


class TestCommandTypes:
    def test_command_types_are_those_of_the_domain(self) -> None:
        assert COMMAND_TYPES == DOMAIN_COMMANDS

    def test_command_union_matches_command_types(self) -> None:
        union = typing.get_args(Command)[0]
        tags = tuple(member.model_fields["command_type"].default
                     for member in typing.get_args(union))
        assert tags == COMMAND_TYPES

    @pytest.mark.parametrize("command_type", DOMAIN_COMMANDS)
    def test_every_command_parses_with_only_its_required_fields(
        self, command_type: str
    ) -> None:
        body: dict[str, Any] = {"command_type": command_type, "command_id": COMMAND_ID}
        if command_type == "abandon_input":
            body["input_id"] = INPUT_ID
        command = TypeAdapter(Command).validate_python(body)
        assert command.command_type == command_type
        assert command.reason is None


def test_an_event_category_must_match_its_code() -> None:
    from uuid import uuid4

    from pydantic import ValidationError

    from schemas import EventCategory, EventCode, EventEnvelope

    fields = {"event_id": uuid4(), "at": "2026-11-26T12:00:00Z", "runtime_id": "rt:a",
              "code": EventCode.RUN_STARTED, "data": {}}
    assert EventEnvelope.model_validate({**fields, "category": EventCategory.RUN})
    with pytest.raises(ValidationError, match="belongs to category run_lifecycle"):
        EventEnvelope.model_validate({**fields, "category": EventCategory.INPUT})
