"""``verify`` exit codes that need no service: usage errors are 2, an unreachable dependency 3."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from worker.cli.common import EXIT_UNAVAILABLE, EXIT_USAGE
from worker.cli.main import main
from worker.history.published import PublishedLog

pytestmark = pytest.mark.unit

CLOSED_PORT = "127.0.0.1:1"


@pytest.fixture(autouse=True)
def environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in list(os.environ):
        if name.upper().startswith("MEERKAT_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MEERKAT_DATABASE_URL", f"sqlite+aiosqlite:///{tmp_path / 'store.db'}")
    monkeypatch.setenv("MEERKAT_BLOB_URL", f"file://{tmp_path / 'blobs'}")
    monkeypatch.setenv("MEERKAT_AMQP_URL", f"amqp://guest:guest@{CLOSED_PORT}/")


@pytest.fixture
def published(tmp_path: Path) -> Path:
    path = tmp_path / "published.jsonl"
    with PublishedLog(path) as log:
        log.record_hostile("rt:cli", "m-1")
    return path


def test_a_missing_log_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["verify", "--published", "/nonexistent/published.jsonl"]) == EXIT_USAGE
    assert "no such file" in capsys.readouterr().err


def test_a_bad_line_is_a_usage_error_naming_it(
    published: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with published.open("a") as handle:
        handle.write("{}\n")
    assert main(["verify", "--published", str(published)]) == EXIT_USAGE
    assert "published.jsonl:2: seq: Field required" in capsys.readouterr().err


def test_a_bad_events_capture_is_a_usage_error(
    published: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    events = tmp_path / "events.jsonl"
    events.write_text("[]\n")
    assert main(["verify", "--published", str(published), "--events", str(events)]) == EXIT_USAGE
    assert "events.jsonl:1:" in capsys.readouterr().err


def test_an_in_memory_store_has_no_history(
    published: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("MEERKAT_DATABASE_URL", "memory://")
    assert main(["verify", "--published", str(published)]) == EXIT_USAGE
    assert "MEERKAT_DATABASE_URL is an in-memory store" in capsys.readouterr().err


def test_an_unreachable_broker_exits_3(
    published: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["verify", "--published", str(published)]) == EXIT_UNAVAILABLE
    err = capsys.readouterr().err
    assert "cannot reach a dependency: the broker" in err
    assert "guest:guest" not in err


def test_an_unreachable_database_exits_3(
    published: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("MEERKAT_DATABASE_URL", f"postgresql://u:secret@{CLOSED_PORT}/db")
    assert main(["verify", "--published", str(published)]) == EXIT_UNAVAILABLE
    err = capsys.readouterr().err
    assert "cannot reach a dependency" in err
    assert "secret" not in err
