"""The fault suite's table: sums per scenario, failed runs counted and explained, unchecked
runs never shown as clean."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.faults.report import VIOLATION_COUNTS, RunOutcome, render, write

pytestmark = pytest.mark.unit


def clean_counts(**overrides: int) -> dict[str, int]:
    return {"published": 300, **dict.fromkeys(VIOLATION_COUNTS, 0), **overrides}


def row(table: str, scenario: str) -> list[str]:
    line = next(line for line in table.splitlines() if line.startswith(f"| {scenario} |"))
    return [cell.strip() for cell in line.strip("|").split("|")]


def test_a_row_sums_its_runs_and_merges_the_combined_columns() -> None:
    outcomes = [
        RunOutcome("kill", 1, 300, 1, clean_counts(lost=2, duplicated=1, consumed_twice=3)),
        RunOutcome("kill", 2, 300, 1, clean_counts(out_of_order=4, reasonless_dead_letters=1,
                                                   valid_dead_lettered=2),
                   problems=["history violations: out_of_order=4"]),
    ]
    cells = row(render(outcomes), "kill")
    assert cells == ["kill", "2 (1 passed)", "2", "600", "2", "4", "4", "3"]


def test_failed_runs_are_listed_with_every_problem() -> None:
    outcome = RunOutcome("s3 stop", 3, 300, 1, None,
                         problems=["gave up waiting\nlog tail", "verify failed"])
    table = render([outcome])
    assert "- s3 stop run 3:" in table
    assert "  - gave up waiting" in table
    assert "log tail" not in table, "only the first line of a problem goes into the table"
    assert "  - verify failed" in table


def test_runs_the_checker_could_not_check_are_not_shown_as_clean() -> None:
    unchecked = RunOutcome("deep", 1, 302, 2, None, problems=["verify failed"])
    assert row(render([unchecked]), "deep")[4:] == ["n/a"] * 4
    checked = RunOutcome("deep", 2, 302, 2, clean_counts())
    assert row(render([unchecked, checked]), "deep")[4] == "0 (1/2 checked)"


def test_the_table_is_written_as_markdown(tmp_path: Path) -> None:
    path = write([RunOutcome("kill", 1, 300, 1, clean_counts())], tmp_path / "r" / "report.md")
    assert path.read_text().startswith("# Fault suite\n\n| fault | runs | faults injected |")
