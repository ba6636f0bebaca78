"""Export the wire contract as JSON Schema files (draft 2020-12) and an AsyncAPI 3.0 document.

``schemas/json/`` holds the committed copy; a test regenerates it and fails on drift, and the
contract checks (``tools/contract/``, run by the test suite) prove that the official AsyncAPI
parser accepts the document and that Ajv compiles every schema in strict mode.

The JSON Schemas are what pydantic generates, post-processed into plain draft 2020-12:

- each file gets ``$schema`` and an ``$id`` (:func:`schema_id`);
- pydantic's ``discriminator`` object (an OpenAPI keyword, unknown to JSON Schema, refused by
  Ajv in strict mode and by the AsyncAPI schema format when its mapping nests) is dropped. The
  ``oneOf`` it annotates stays, and every branch already pins the tag with ``const``, so the
  union still picks exactly one branch. What the discriminator said is kept as plain JSON
  Schema next to the ``oneOf``: the tag property is required and one of the mapping's values,
  as pydantic demands (a body without the tag is refused by the models too).

The models themselves are untouched: the worker validates with pydantic, not with these files.
The AsyncAPI document is built in :mod:`schemas.asyncapi`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter

from schemas.asyncapi import asyncapi_document
from schemas.commands import CommandEnvelope
from schemas.events import EventEnvelope
from schemas.inputs import InputEnvelope
from schemas.outcomes import Reply

JSON_DIR = Path(__file__).parent / "json"
DRAFT_2020_12 = "https://json-schema.org/draft/2020-12/schema"
ID_PREFIX = "urn:meerkat-worker:schema:"

MODELS: dict[str, Any] = {
    "input-envelope": InputEnvelope,
    "command-envelope": CommandEnvelope,
    "reply": Reply,
    "event-envelope": EventEnvelope,
}

__all__ = ["JSON_DIR", "MODELS", "asyncapi_document", "export", "json_schemas", "render",
           "schema_id"]


def schema_id(name: str) -> str:
    """The ``$id`` of a schema: a URN, a name that claims no web address to be fetched from."""
    return f"{ID_PREFIX}{name}"


def json_schemas() -> dict[str, dict[str, Any]]:
    """File name (without ``.json``) to JSON Schema (draft 2020-12)."""
    return {name: _published(name, TypeAdapter(model).json_schema())
            for name, model in MODELS.items()}


def _published(name: str, generated: dict[str, Any]) -> dict[str, Any]:
    schema = _without_discriminators(generated)
    assert isinstance(schema, dict)
    return {"$schema": DRAFT_2020_12, "$id": schema_id(name), **schema}


def _without_discriminators(node: Any) -> Any:
    if isinstance(node, list):
        return [_without_discriminators(item) for item in node]
    if not isinstance(node, dict):
        return node
    result = {key: _without_discriminators(value) for key, value in node.items()
              if key != "discriminator"}
    discriminator = node.get("discriminator")
    if isinstance(discriminator, dict) and "oneOf" in node:
        tag = discriminator["propertyName"]
        result["type"] = "object"
        result["required"] = [tag]
        result["properties"] = {tag: {"enum": sorted(discriminator["mapping"])}}
    return result


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
