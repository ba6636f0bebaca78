"""The published contract passes the official tools: the AsyncAPI parser and Ajv (strict).

The tools are Node packages pinned in ``tools/contract/package-lock.json`` and installed by
``bash ops/node-tools.sh`` (``ops/test.sh`` runs it before the full suite). A missing ``node``
or missing tools fail these tests: the contract is not checked otherwise.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from schemas.export import JSON_DIR

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
TOOLS = ROOT / "tools" / "contract"
INSTALL = "run `bash ops/node-tools.sh` to install the contract tools (Node 20+ and npm needed)"
TIMEOUT_SECONDS = 120


def run_tool(script: str, target: Path) -> subprocess.CompletedProcess[str]:
    node = shutil.which("node")
    if node is None:
        pytest.fail(f"node is not on PATH; {INSTALL}")
    for package in ("@asyncapi/parser", "ajv", "ajv-formats"):
        if not (TOOLS / "node_modules" / package / "package.json").is_file():
            pytest.fail(f"{package} is not installed in tools/contract; {INSTALL}")
    return subprocess.run([node, str(TOOLS / script), str(target)], cwd=ROOT,
                          capture_output=True, text=True, timeout=TIMEOUT_SECONDS, check=False)


def test_the_asyncapi_document_has_no_parser_errors() -> None:
    result = run_tool("validate-asyncapi.mjs", JSON_DIR / "asyncapi.json")
    assert result.returncode == 0, result.stderr + result.stdout
    assert "valid AsyncAPI 3.0.0" in result.stdout


def test_every_json_schema_compiles_with_ajv_in_strict_mode() -> None:
    result = run_tool("compile-schemas.mjs", JSON_DIR)
    assert result.returncode == 0, result.stderr + result.stdout
    assert "4 schema(s) compile" in result.stdout


def test_the_parser_check_reports_errors(tmp_path: Path) -> None:
    document = tmp_path / "asyncapi.json"
    document.write_text(json.dumps({"asyncapi": "3.0.0", "channels": {"x": {"address": 1}}}))
    result = run_tool("validate-asyncapi.mjs", document)
    assert result.returncode == 1
    assert "error" in result.stderr


def test_the_ajv_check_refuses_an_unknown_keyword(tmp_path: Path) -> None:
    schema = {"$schema": "https://json-schema.org/draft/2020-12/schema", "$id": "urn:x:y",
              "oneOf": [{"type": "string"}],
              "discriminator": {"propertyName": "kind", "mapping": {}}}
    (tmp_path / "bad.json").write_text(json.dumps(schema))
    result = run_tool("compile-schemas.mjs", tmp_path)
    assert result.returncode == 1
    assert "discriminator" in result.stderr
