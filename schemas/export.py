"""Export the wire contract as JSON Schema files and an AsyncAPI document.

``schemas/json/`` holds the committed copy; a test regenerates it and fails on drift.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter

from schemas.commands import CommandEnvelope
from schemas.events import EventEnvelope
from schemas.inputs import InputEnvelope
from schemas.outcomes import Reply

JSON_DIR = Path(__file__).parent / "json"

MODELS: dict[str, Any] = {
    "input-envelope": InputEnvelope,
    "command-envelope": CommandEnvelope,
    "reply": Reply,
    "event-envelope": EventEnvelope,
}


def json_schemas() -> dict[str, dict[str, Any]]:
    """File name (without ``.json``) to JSON Schema."""
    return {name: TypeAdapter(model).json_schema() for name, model in MODELS.items()}


def asyncapi_document() -> dict[str, Any]:
    """The AMQP channels and messages of CONTRACT.md as an AsyncAPI 2.6 document."""
    schemas = json_schemas()

    def message(name: str, content_type: str = "application/json") -> dict[str, Any]:
        return {"name": name, "contentType": content_type, "payload": {"$ref": f"{name}.json"}}

    return {
        "asyncapi": "2.6.0",
        "info": {"title": "meerkat-worker", "version": "1"},
        "defaultContentType": "application/json",
        "channels": {
            "meerkat.ingress": {
                "description": "x-consistent-hash exchange for inputs; routing key = runtime id",
                "publish": {"message": message("input-envelope")},
                "bindings": {
                    "amqp": {
                        "is": "routingKey",
                        "exchange": {
                            "name": "meerkat.ingress",
                            "type": "x-consistent-hash",
                            "durable": True,
                        },
                    }
                },
            },
            "meerkat.commands": {
                "description": (
                    "fanout exchange for commands, bound to meerkat.ingress; "
                    "routing key = runtime id"
                ),
                "publish": {"message": message("command-envelope")},
                "bindings": {
                    "amqp": {
                        "is": "routingKey",
                        "exchange": {"name": "meerkat.commands", "type": "fanout",
                                     "durable": True},
                    }
                },
            },
            "meerkat.events": {
                "description": "topic exchange; routing key = event code",
                "subscribe": {"message": message("event-envelope")},
                "bindings": {
                    "amqp": {
                        "is": "routingKey",
                        "exchange": {"name": "meerkat.events", "type": "topic", "durable": True},
                    }
                },
            },
            "reply_to": {
                "description": "RPC reply, published after the commit when reply_to is set",
                "subscribe": {"message": message("reply")},
            },
        },
        "components": {"schemas": {name: {"$ref": f"{name}.json"} for name in schemas}},
    }


def render() -> dict[str, str]:
    """File name to exact file text, as committed under ``schemas/json/``."""
    files = {f"{name}.json": _dump(schema) for name, schema in json_schemas().items()}
    files["asyncapi.json"] = _dump(asyncapi_document())
    return files


def _dump(document: dict[str, Any]) -> str:
    return json.dumps(document, indent=2, sort_keys=True) + "\n"


def export(directory: Path) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in render().items():
        path = directory / name
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written


if __name__ == "__main__":
    for path in export(JSON_DIR):
        print(path)
