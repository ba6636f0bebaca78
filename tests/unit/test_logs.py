"""Logging set-up (:mod:`worker.logs`), seen from outside: a fresh interpreter configures it and
logs through structlog and through the standard library's loggers of the libraries the worker
uses; its standard error is read back."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from worker.config import Settings
from worker.logs import iso_now, level_number

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]

PROGRAM = """
import logging, sys
import structlog
from worker.logs import configure_logging

configure_logging(sys.argv[1], sys.argv[2])
log = structlog.get_logger("worker.example")
log.debug("worker_debug", n=1)
log.info("worker_info", n=2, runtime_id="rt:1")
logging.getLogger("aio_pika.robust_connection").warning(
    "Connection to %s closed. Reconnecting after %r seconds.", "amqp://guest:******@h/", 5)
logging.getLogger("aio_pika.queue").debug("Declaring queue: %r", "q")
logging.getLogger("aiormq.connection").debug("Sending %r", "frame with a body")
logging.getLogger("aiosqlite").debug("executing %r", "INSERT ...")
logging.getLogger("sqlalchemy.engine.Engine").info("SELECT 1")
logging.getLogger("asyncio").error("Task exception was never retrieved", extra={"task": "t1"})
try:
    1 / 0
except ZeroDivisionError:
    log.error("task_failed", task="committer", exc_info=True)
"""


def run(log_format: str, level: str) -> list[str]:
    done = subprocess.run([sys.executable, "-c", PROGRAM, log_format, level], cwd=ROOT,
                          capture_output=True, text=True, timeout=60, check=True)
    assert done.stdout == ""
    return done.stderr.splitlines()


def records(lines: list[str]) -> list[dict[str, Any]]:
    return [json.loads(line) for line in lines]  # every line must be JSON


def test_json_lines_come_from_structlog_and_the_libraries_alike() -> None:
    found = records(run("json", "info"))
    by_event = {r["event"]: r for r in found}

    info = by_event["worker_info"]
    assert info["level"] == "info"
    assert info["runtime_id"] == "rt:1"
    assert info["timestamp"].endswith("Z")
    pika = by_event["Connection to amqp://guest:******@h/ closed. Reconnecting after 5 seconds."]
    assert pika["logger"] == "aio_pika.robust_connection"
    assert pika["level"] == "warning"
    assert by_event["Task exception was never retrieved"]["logger"] == "asyncio"
    assert by_event["Task exception was never retrieved"]["task"] == "t1"
    failed = by_event["task_failed"]
    assert failed["exception"][0]["exc_type"] == "ZeroDivisionError"
    assert "worker_debug" not in by_event
    assert not [r for r in found if r.get("level") == "debug"]
    assert "SELECT 1" not in by_event, "SQLAlchemy's statements stay below the level"


def test_debug_shows_the_worker_and_aio_pika_but_not_per_message_library_lines() -> None:
    by_event = {r["event"]: r for r in records(run("json", "debug"))}

    assert by_event["worker_debug"]["level"] == "debug"
    assert by_event["Declaring queue: 'q'"]["logger"] == "aio_pika.queue"
    assert "Sending 'frame with a body'" not in by_event
    assert "executing 'INSERT ...'" not in by_event
    assert "SELECT 1" not in by_event


def test_console_lines_are_readable_with_the_traceback_as_text() -> None:
    lines = run("console", "warning")
    text = "\n".join(lines)

    assert not any(line.startswith("{") for line in lines)
    assert "worker_info" not in text
    assert "Connection to amqp://guest:******@h/ closed" in text
    assert "task_failed" in text
    assert "ZeroDivisionError" in text


def test_levels_are_named_in_any_case() -> None:
    assert level_number("DEBUG") == 10
    assert level_number("warning") == 30
    assert Settings(log_level="WARNING").log_level == "warning"  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown log level"):
        level_number("verbose")
    with pytest.raises(ValidationError):
        Settings(log_level="verbose")  # type: ignore[arg-type]


def test_timestamps_are_utc_iso_8601_with_microseconds() -> None:
    stamp = iso_now()
    assert len(stamp) == len("2026-01-01T00:00:00.000000Z")
    assert stamp[10] == "T"
    assert stamp.endswith("Z")
