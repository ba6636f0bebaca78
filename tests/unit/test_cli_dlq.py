"""The ``dlq`` commands without a broker: durations, filters, the listing's forms, and ``purge``
refusing to run unattended without ``--yes``."""

from __future__ import annotations

import io
import json
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from rich.console import Console

from worker.cli.common import EXIT_USAGE, duration
from worker.cli.dead_letters import DeadLetter, DeadLetterFilter
from worker.cli.dlq_commands import dead_letter_table
from worker.cli.main import main

pytestmark = pytest.mark.unit

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in list(os.environ):
        if name.upper().startswith("MEERKAT_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


def letter(
    runtime_id: str | None = "rt:a",
    error: str | None = '{"reject_type":"image_invalid","detail":"not a PNG"}',
    death_reason: str | None = None,
    age: timedelta | None = timedelta(hours=1),
) -> DeadLetter:
    return DeadLetter(
        message_id="m-1", message_type="meerkat.input.v1", runtime_id=runtime_id,
        routing_key=runtime_id or "", error=error, death_reason=death_reason,
        first_death_queue=None, death_count=0,
        dead_lettered_at=None if age is None else NOW - age,
    )


# --- durations --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("30s", 30), ("5m", 300), ("2h", 7200), ("1d", 86400), ("1h30m", 5400), ("0s", 0),
     ("1d12h", 129600), ("90m", 5400)],
)
def test_durations_parse(text: str, seconds: int) -> None:
    assert duration(text) == timedelta(seconds=seconds)


@pytest.mark.parametrize(
    "text", ["", "5", "h", "5x", "1.5h", "-5m", " 5m", "5m ", "5M", "1h 30m", "1w", "m5",
             "99999999999999d"],
)
def test_other_durations_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="duration"):
        duration(text)


def test_a_bad_duration_is_a_usage_error_naming_the_option(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["dlq", "list", "--older-than", "soon"]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert "--older-than" in err
    assert "not a duration" in err


# --- filters ----------------------------------------------------------------------------------


def test_no_criterion_selects_every_message() -> None:
    select = DeadLetterFilter()
    assert select.selects_all
    assert select.matches(letter(), NOW)
    assert select.matches(letter(runtime_id=None, error=None, age=None), NOW)


def test_reason_is_a_part_of_the_worker_reason_or_else_the_broker_reason() -> None:
    assert DeadLetterFilter(reason="image_invalid").matches(letter(), NOW)
    assert DeadLetterFilter(reason="not a PNG").matches(letter(), NOW)
    assert not DeadLetterFilter(reason="malformed").matches(letter(), NOW)
    broker = letter(error=None, death_reason="delivery_limit")
    assert DeadLetterFilter(reason="delivery_limit").matches(broker, NOW)
    assert not DeadLetterFilter(reason="image_invalid").matches(broker, NOW)
    assert not DeadLetterFilter(reason="x").matches(letter(error=None), NOW)
    # The worker's reason counts when both are there.
    both = letter(error="gave up after 5 failed attempts", death_reason="delivery_limit")
    assert DeadLetterFilter(reason="failed attempts").matches(both, NOW)
    assert not DeadLetterFilter(reason="delivery_limit").matches(both, NOW)


def test_runtime_is_exact_or_a_pattern() -> None:
    assert DeadLetterFilter(runtime="rt:a").matches(letter(), NOW)
    assert not DeadLetterFilter(runtime="rt:ab").matches(letter(), NOW)
    assert not DeadLetterFilter(runtime="rt:").matches(letter(), NOW)
    assert DeadLetterFilter(runtime="rt:*").matches(letter(), NOW)
    assert DeadLetterFilter(runtime="rt:?").matches(letter(), NOW)
    assert not DeadLetterFilter(runtime="RT:*").matches(letter(), NOW)
    assert not DeadLetterFilter(runtime="*").matches(letter(runtime_id=None), NOW)


def test_age_is_time_since_dead_lettering() -> None:
    hour_old = letter(age=timedelta(hours=1))
    assert DeadLetterFilter(older_than=timedelta(minutes=30)).matches(hour_old, NOW)
    assert not DeadLetterFilter(older_than=timedelta(hours=2)).matches(hour_old, NOW)
    assert DeadLetterFilter(newer_than=timedelta(hours=2)).matches(hour_old, NOW)
    assert not DeadLetterFilter(newer_than=timedelta(minutes=30)).matches(hour_old, NOW)
    window = DeadLetterFilter(older_than=timedelta(minutes=30), newer_than=timedelta(hours=2))
    assert window.matches(hour_old, NOW)
    assert not window.matches(letter(age=timedelta(hours=3)), NOW)
    assert not window.matches(letter(age=timedelta(minutes=10)), NOW)


def test_an_undated_message_matches_no_age_criterion() -> None:
    undated = letter(age=None)
    assert not DeadLetterFilter(older_than=timedelta(0)).matches(undated, NOW)
    assert not DeadLetterFilter(newer_than=timedelta(days=3650)).matches(undated, NOW)
    assert DeadLetterFilter(reason="image_invalid").matches(undated, NOW)


def test_every_criterion_given_must_hold() -> None:
    select = DeadLetterFilter(reason="image_invalid", runtime="rt:*",
                              older_than=timedelta(minutes=5))
    assert select.matches(letter(), NOW)
    assert not select.matches(letter(runtime_id="other"), NOW)
    assert not select.matches(letter(error="malformed"), NOW)
    assert not select.matches(letter(age=timedelta(minutes=1)), NOW)
    assert select.describe() == "--reason 'image_invalid' --runtime rt:* --older-than 5m"


# --- the listing ------------------------------------------------------------------------------


def test_a_dead_letter_as_json_dates_it() -> None:
    document = letter().to_json()
    assert document["dead_lettered_at"] == "2026-11-26T11:00:00+00:00"
    assert json.loads(json.dumps(document)) == document
    assert letter(age=None).to_json()["dead_lettered_at"] is None


def test_the_terminal_table_shows_each_message() -> None:
    screen = io.StringIO()
    Console(file=screen, width=200).print(dead_letter_table([
        letter(), letter(runtime_id="rt:b", error=None, death_reason="delivery_limit", age=None),
    ]))
    lines = screen.getvalue().splitlines()
    assert lines[0].split() == ["MESSAGE", "ID", "TYPE", "RUNTIME", "DEAD-LETTERED", "REASON"]
    assert "rt:a" in lines[1]
    assert "2026-11-26T11:00:00+00:00" in lines[1]
    assert "image_invalid" in lines[1]
    assert "delivery_limit" in lines[2]


# --- purge ------------------------------------------------------------------------------------


def test_purge_without_a_terminal_or_yes_refuses_before_connecting(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    # A closed port: had it tried to connect, it would exit 3.
    monkeypatch.setenv("MEERKAT_AMQP_URL", "amqp://guest:guest@127.0.0.1:1/")
    monkeypatch.setattr("sys.stdin", io.StringIO("y\n"))

    assert main(["dlq", "purge", "--reason", "image_invalid"]) == EXIT_USAGE

    out, err = capsys.readouterr()
    assert out == ""
    [line] = err.splitlines()
    assert "--yes" in line
