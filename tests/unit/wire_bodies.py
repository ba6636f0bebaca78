"""Message bodies as a producer would publish them, for the parsing tests.

Documents are plain dicts so a test can break any field; :func:`encode` is the producer's
serialiser, and a test that needs bytes JSON cannot express (a duplicate key, NaN, a lone
surrogate, bad UTF-8) splices them into the encoded text.
"""

from __future__ import annotations

import json
from typing import Any

from schemas import DEFAULT_LIMITS, INPUT_MESSAGE_TYPE, ImageMediaType, Malformed
from tests.unit.images import IMAGE_BYTES, b64
from worker.pipeline.parsing import ParsedCommand, ParsedInput, Unparseable, parse_delivery

RUNTIME = "rt:wire:7"
INPUT_ID = "0190e4a8-7c2b-7d3e-8f00-0123456789ab"
COMMAND_ID = "0190e4a8-7c2b-7d3e-8f00-00000000c0de"
BLOB_ID = "sha256:" + "ab" * 32
PNG_BASE64 = b64(IMAGE_BYTES[ImageMediaType.PNG])


def header(**changes: Any) -> dict[str, Any]:
    return {
        "id": INPUT_ID,
        "timestamp": "2026-11-26T12:00:00Z",
        "source": {"type": "operator"},
        "durability": "durable",
        **changes,
    }


INPUT_FIELDS: dict[str, dict[str, Any]] = {
    "prompt": {
        "content": [
            {"type": "text", "text": "hello"},
            {"type": "image", "media_type": "image/png", "source": "inline", "data": PNG_BASE64},
            {"type": "image", "media_type": "image/gif", "source": "blob", "blob_id": BLOB_ID},
        ],
        "turn_metadata": {"handling_mode": "steer", "labels": {"team": "core"}},
    },
    "peer": {
        "convention": {"convention_type": "request", "request_id": "req-1", "intent": "review"},
        "content": "please review",
        "payload": {"pr": 12},
        "handling_mode": "queue",
    },
    "flow_step": {"step_id": "step-3", "content": "next step"},
    "external_event": {
        "event_type": "push",
        "payload": {"ref": "main", "size": 1.5, "tags": [1, 2, 3]},
        "blocks": [{"type": "text", "text": "pushed"}],
    },
    "continuation": {"reason": "tool result ready", "request_id": "req-1"},
    "operation": {"operation_id": "op-1", "event": {"kind": "mcp_ready"}},
}
"""Every input kind with its optional fields filled in."""


def input_document(
    input_type: str = "prompt", *, runtime_id: str = RUNTIME, **fields: Any
) -> dict[str, Any]:
    body = {"input_type": input_type, "header": header(), **INPUT_FIELDS[input_type], **fields}
    return {"runtime_id": runtime_id, "input": body}


def command_document(
    command_type: str, *, runtime_id: str = RUNTIME, **fields: Any
) -> dict[str, Any]:
    command: dict[str, Any] = {"command_type": command_type, "command_id": COMMAND_ID, **fields}
    if command_type == "abandon_input":
        command.setdefault("input_id", INPUT_ID)
    return {"runtime_id": runtime_id, "command": command}


def encode(document: Any) -> bytes:
    return json.dumps(document, separators=(",", ":")).encode()


def prompt_with_text(text_json: bytes) -> bytes:
    """A prompt whose text is exactly the JSON string literal ``text_json`` (quotes included)."""
    return encode(input_document(content=[{"type": "text", "text": "@"}])).replace(
        b'"@"', text_json
    )


def nested(depth: int, kind: str = "array") -> bytes:
    """``depth`` levels of arrays or single-key objects around a zero."""
    if kind == "array":
        return b"[" * depth + b"0" + b"]" * depth
    return b'{"a":' * depth + b"0" + b"}" * depth


def refused(body: bytes, message_type: str | None = INPUT_MESSAGE_TYPE, **kwargs: Any) -> str:
    """The reason ``body`` is malformed (the test fails if it parsed)."""
    limits = kwargs.pop("limits", DEFAULT_LIMITS)
    parsed = parse_delivery(body, message_type, limits, **kwargs)
    assert isinstance(parsed, Unparseable), parsed
    assert isinstance(parsed.reason, Malformed), parsed.reason
    return parsed.reason.detail


def parses(body: bytes, message_type: str | None = INPUT_MESSAGE_TYPE, **kwargs: Any) -> Any:
    limits = kwargs.pop("limits", DEFAULT_LIMITS)
    parsed = parse_delivery(body, message_type, limits, **kwargs)
    assert isinstance(parsed, ParsedInput | ParsedCommand), parsed
    return parsed
