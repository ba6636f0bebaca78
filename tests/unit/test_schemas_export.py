"""The committed JSON Schemas and AsyncAPI document are exactly what the models export."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from schemas import ImageMediaType
from schemas.export import (
    DRAFT_2020_12,
    JSON_DIR,
    MODELS,
    asyncapi_document,
    export,
    render,
    schema_id,
)
from tests.unit.images import IMAGE_BYTES, b64

pytestmark = pytest.mark.unit

REGENERATE = (
    "the committed JSON Schemas differ from the models; regenerate them with "
    "`python -m schemas.export` (or `meerkat-worker schemas export schemas/json`) "
    "and commit the result"
)

RUNTIME = "rt:demo"
INPUT_ID = "0190e4a8-7c2b-7d3e-8f00-0123456789ab"
COMMAND_ID = "0190e4a8-7c2b-7d3e-8f00-00000000c0de"
AT = "2026-11-26T12:00:00Z"
HEADER = {"id": INPUT_ID, "timestamp": AT, "source": {"type": "operator"},
          "durability": "durable", "idempotency_key": "k-1"}

VALID_DOCUMENTS: dict[str, list[dict[str, Any]]] = {
    "input-envelope": [
        {"runtime_id": RUNTIME, "input": {
            "input_type": "prompt", "header": HEADER,
            "content": [{"type": "text", "text": "hello"},
                        {"type": "image", "media_type": "image/png", "source": "inline",
                         "data": b64(IMAGE_BYTES[ImageMediaType.PNG])}]}},
        {"runtime_id": RUNTIME, "input": {
            "input_type": "peer",
            "header": HEADER | {"source": {"type": "peer", "peer_id": "p-1"}},
            "convention": {"convention_type": "response_terminal", "request_id": "r-1",
                           "status": "completed"},
            "content": "done"}},
        {"runtime_id": RUNTIME, "input": {
            "input_type": "external_event",
            "header": HEADER | {"durability": "derived", "source": {"type": "system"}},
            "event_type": "push", "payload": {"ref": "main"}}},
    ],
    "command-envelope": [
        {"runtime_id": RUNTIME, "command": {"command_type": "retire", "command_id": COMMAND_ID,
                                            "reason": "scale down", "abandon_pending": True}},
        {"runtime_id": RUNTIME, "command": {"command_type": "abandon_input",
                                            "command_id": COMMAND_ID, "input_id": INPUT_ID}},
    ],
    "reply": [
        {"correlation_id": "c-1", "runtime_id": RUNTIME,
         "outcome": {"outcome_type": "accepted", "input_id": INPUT_ID, "phase": "queued",
                     "lane": "queue", "admission_seq": 1}},
        {"correlation_id": None, "runtime_id": None,
         "outcome": {"outcome_type": "rejected",
                     "reason": {"reject_type": "malformed", "detail": "not JSON"}}},
        {"correlation_id": "c-2", "runtime_id": RUNTIME,
         "outcome": {"outcome_type": "completed", "command_id": COMMAND_ID,
                     "command_type": "stop", "state": "stopped",
                     "report": {"inputs_abandoned": 3}}},
    ],
    "event-envelope": [
        {"event_id": INPUT_ID, "at": AT, "runtime_id": RUNTIME, "category": "input_lifecycle",
         "code": "input.accepted", "data": {"lane": "queue"}, "causation_id": INPUT_ID,
         "correlation_id": "corr-1"},
    ],
}


def validator(name: str) -> Draft202012Validator:
    schema = json.loads(render()[f"{name}.json"])
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema, format_checker=Draft202012Validator.FORMAT_CHECKER)


def test_committed_files_match_the_models_byte_for_byte() -> None:
    for name, text in render().items():
        committed = JSON_DIR / name
        assert committed.is_file(), f"{name} is missing; {REGENERATE}"
        assert committed.read_bytes() == text.encode("utf-8"), f"{name}: {REGENERATE}"


def test_committed_file_set_is_exactly_the_exported_set() -> None:
    committed = {path.name for path in JSON_DIR.iterdir() if path.is_file()}
    assert committed == set(render()), REGENERATE


def test_export_writes_what_render_returns(tmp_path: Path) -> None:
    written = export(tmp_path / "out")
    assert {path.name for path in written} == set(render())
    for path in written:
        assert path.read_text(encoding="utf-8") == render()[path.name]


def test_every_model_has_examples() -> None:
    assert set(VALID_DOCUMENTS) == set(MODELS)


@pytest.mark.parametrize(
    ("name", "document"),
    [(name, doc) for name, docs in VALID_DOCUMENTS.items() for doc in docs],
)
def test_schema_accepts_a_valid_document(name: str, document: dict[str, Any]) -> None:
    MODELS[name].model_validate(document)  # the example is valid by the models, too
    errors = [error.message for error in validator(name).iter_errors(document)]
    assert errors == []


@pytest.mark.parametrize("name", list(MODELS))
def test_schema_refuses_unknown_top_level_fields(name: str) -> None:
    document = VALID_DOCUMENTS[name][0] | {"surprise": 1}
    assert not validator(name).is_valid(document)


def test_input_schema_refuses_a_bad_runtime_id() -> None:
    document = VALID_DOCUMENTS["input-envelope"][0] | {"runtime_id": "rt demo"}
    assert not validator("input-envelope").is_valid(document)


def test_input_schema_refuses_an_unknown_input_type() -> None:
    document = VALID_DOCUMENTS["input-envelope"][0]
    document = document | {"input": document["input"] | {"input_type": "chat"}}
    assert not validator("input-envelope").is_valid(document)


def test_command_schema_refuses_a_command_id_that_is_not_a_uuid() -> None:
    document = VALID_DOCUMENTS["command-envelope"][0]
    document = document | {"command": document["command"] | {"command_id": "c-1"}}
    assert not validator("command-envelope").is_valid(document)


def test_every_schema_is_draft_2020_12_with_an_id() -> None:
    for name in MODELS:
        schema = json.loads(render()[f"{name}.json"])
        assert schema["$schema"] == DRAFT_2020_12
        assert schema["$id"] == schema_id(name)


def test_no_schema_keeps_the_openapi_discriminator() -> None:
    for name in MODELS:
        assert "discriminator" not in _keys(json.loads(render()[f"{name}.json"])), name


def test_a_union_without_its_tag_is_refused_by_the_schema_as_by_the_models() -> None:
    document = VALID_DOCUMENTS["command-envelope"][0]
    untagged = document["command"].copy()
    del untagged["command_type"]
    document = document | {"command": untagged}
    with pytest.raises(ValueError, match="command_type"):
        MODELS["command-envelope"].model_validate(document)
    assert not validator("command-envelope").is_valid(document)


def test_asyncapi_references_only_exported_files() -> None:
    refs = {ref for ref in _refs(asyncapi_document()) if not ref.startswith("#")}
    assert refs <= set(render()) - {"asyncapi.json"}
    assert {f"{name}.json" for name in MODELS} <= refs


def test_asyncapi_internal_references_resolve() -> None:
    document = asyncapi_document()
    for ref in _refs(document):
        if ref.startswith("#/"):
            node: Any = document
            for part in ref[2:].split("/"):
                node = node[part]


PAYLOAD_FILES = {"input": "input-envelope", "command": "command-envelope", "reply": "reply",
                 "event": "event-envelope"}


def test_every_asyncapi_message_has_a_valid_example() -> None:
    messages = asyncapi_document()["components"]["messages"]
    assert set(PAYLOAD_FILES) <= set(messages)
    for key, message in messages.items():
        assert message["examples"], key
        for example in message["examples"]:
            headers = Draft202012Validator(message["headers"])
            assert [e.message for e in headers.iter_errors(example["headers"])] == [], key
            if key in PAYLOAD_FILES:
                name = PAYLOAD_FILES[key]
                MODELS[name].model_validate(example["payload"])
                assert validator(name).is_valid(example["payload"]), key


def _keys(node: Any) -> set[str]:
    if isinstance(node, dict):
        return set(node) | {key for value in node.values() for key in _keys(value)}
    if isinstance(node, list):
        return {key for value in node for key in _keys(value)}
    return set()


def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        found = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return found + [ref for value in node.values() for ref in _refs(value)]
    if isinstance(node, list):
        return [ref for value in node for ref in _refs(value)]
    return []
