"""The command line: every command documents itself, usage errors exit 2, schemas export works."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from schemas.export import JSON_DIR
from worker.cli.common import EXIT_OK, EXIT_UNAVAILABLE, EXIT_USAGE
from worker.cli.main import _IMPLEMENTATIONS, handler_for, main

pytestmark = pytest.mark.unit

COMMANDS = [
    "run",
    "migrate",
    "topology declare",
    "topology check",
    "send input",
    "send command",
    "inspect",
    "members",
    "dlq list",
    "dlq replay",
    "dlq purge",
    "blobs gc",
    "schemas export",
    "verify",
]
GROUPS = ["topology", "send", "dlq", "blobs", "schemas"]


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in list(os.environ):
        if name.upper().startswith("MEERKAT_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


def test_every_contract_command_has_a_handler() -> None:
    assert sorted(_IMPLEMENTATIONS) == sorted(COMMANDS)
    for command in COMMANDS:
        assert callable(handler_for(command))


@pytest.mark.parametrize("command", ["", *GROUPS, *COMMANDS])
def test_help_exits_zero(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([*command.split(), "--help"]) == EXIT_OK
    assert "usage: meerkat-worker" in capsys.readouterr().out.lower()


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["bogus"],
        ["topology"],
        ["topology", "destroy"],
        ["send", "input", "rt:demo"],
        ["send", "input", "not a runtime id!", "--text", "hi"],
        ["send", "input", "rt:demo", "--text", "hi", "--image", "/nonexistent/image.png"],
        ["send", "command", "rt:demo", "explode"],
        ["send", "command", "rt:demo", "abandon_input", "--input-id", "not-a-uuid"],
        ["dlq", "replay", "--limit", "0"],
        ["blobs", "gc", "--grace", "tomorrow"],
        ["schemas", "export"],
    ],
)
def test_usage_errors_exit_two(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == EXIT_USAGE
    assert "usage: meerkat-worker" in capsys.readouterr().err.lower()


def test_invalid_configuration_exits_two(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("MEERKAT_SHARDS", "100")

    assert main(["schemas", "export", str(tmp_path / "out")]) == EXIT_USAGE
    assert "MEERKAT_SHARDS" in capsys.readouterr().err


def test_configuration_errors_do_not_show_secrets(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("MEERKAT_DATABASE_URL", "postgresql+asyncpg://u:hunter2@db/x")
    monkeypatch.setenv("MEERKAT_PREFETCH", "hunter2")

    assert main(["run"]) == EXIT_USAGE
    assert "hunter2" not in capsys.readouterr().err


def test_schemas_export_writes_the_committed_contract(tmp_path: Path) -> None:
    target = tmp_path / "contract"

    assert main(["schemas", "export", str(target)]) == EXIT_OK

    written = {path.name: path.read_text(encoding="utf-8") for path in target.iterdir()}
    committed = {path.name: path.read_text(encoding="utf-8") for path in JSON_DIR.iterdir()}
    assert written == committed


def test_migrate_creates_the_embedded_database_idempotently(tmp_path: Path) -> None:
    assert main(["migrate"]) == EXIT_OK
    assert main(["migrate"]) == EXIT_OK
    assert (tmp_path / "meerkat.db").is_file()


def test_unreachable_database_exits_three_without_the_password(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # Port 1 on the loopback interface refuses connections at once.
    monkeypatch.setenv("MEERKAT_DATABASE_URL", "postgresql+asyncpg://meerkat:hunter2@127.0.0.1:1/x")

    assert main(["migrate"]) == EXIT_UNAVAILABLE
    error = capsys.readouterr().err
    assert "cannot reach a dependency" in error
    assert "hunter2" not in error
