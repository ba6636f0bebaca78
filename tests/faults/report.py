"""The fault suite's result table: one row per scenario, sums over its runs.

Every run records a :class:`RunOutcome` here whether it passed or not, *before* it asserts: a
table that only counted passing runs would hide exactly what it exists to show. The pytest
hook in ``tests/faults/conftest.py`` prints :func:`render` at the end of the session and writes
it to ``.faults/report.md``.

Columns come from the history checker's counts: "duplicated" adds ``duplicated`` and
``consumed_twice``; "dead-lettered without reason" adds ``reasonless_dead_letters`` and
``valid_dead_lettered`` (a valid message dead-lettered because of trouble is as bad as one
dead-lettered with no reason). A run the checker could not check contributes nothing to those
columns, and the cell says how many runs it covers.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

REPORT_DIR = Path(__file__).resolve().parents[2] / ".faults"
REPORT_FILE = REPORT_DIR / "report.md"

COLUMNS: Mapping[str, tuple[str, ...]] = {
    "lost": ("lost",),
    "duplicated": ("duplicated", "consumed_twice"),
    "out of order": ("out_of_order",),
    "dead-lettered without reason": ("reasonless_dead_letters", "valid_dead_lettered"),
}
VIOLATION_COUNTS = (
    "lost", "duplicated", "consumed_twice", "receipts_wrong", "stuck_running", "missing_blobs",
    "out_of_order", "reasonless_dead_letters", "valid_dead_lettered", "hostile_accepted",
    "unpublished_events",
)
"""Counts of ``verify --json`` that must all be 0 for a run to pass."""


@dataclass
class RunOutcome:
    scenario: str
    run: int
    messages: int = 0
    faults_injected: int = 0
    counts: dict[str, int] | None = None
    """``verify``'s counts; None when it produced none."""
    problems: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def passed(self) -> bool:
        return not self.problems


LEGEND = (
    "Faults injected: kills that fired at their point (worker died by SIGKILL after logging "
    "`fault_injected`), dependency restarts or outages carried out, hostile messages "
    "published. Counts are `meerkat-worker verify` sums; duplicated = duplicated + "
    "consumed_twice; dead-lettered without reason = reasonless_dead_letters + "
    "valid_dead_lettered. n/a: the checker produced no report."
)

OUTCOMES: list[RunOutcome] = []
"""Every run of this session, in the order they finished."""


def record(outcome: RunOutcome) -> None:
    OUTCOMES.append(outcome)


def _scenarios(outcomes: Iterable[RunOutcome]) -> dict[str, list[RunOutcome]]:
    grouped: dict[str, list[RunOutcome]] = {}
    for outcome in outcomes:
        grouped.setdefault(outcome.scenario, []).append(outcome)
    return grouped


def _cell(runs: Sequence[RunOutcome], keys: tuple[str, ...]) -> str:
    checked = [r.counts for r in runs if r.counts is not None]
    if not checked:
        return "n/a"
    total = sum(counts.get(key, 0) for counts in checked for key in keys)
    if len(checked) == len(runs):
        return str(total)
    return f"{total} ({len(checked)}/{len(runs)} checked)"


def render(outcomes: Sequence[RunOutcome]) -> str:
    """The Markdown table, then one line per failed run saying why."""
    header = ["fault", "runs", "faults injected", "messages", *COLUMNS]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for scenario, runs in _scenarios(outcomes).items():
        passed = sum(1 for r in runs if r.passed)
        row = [
            scenario,
            f"{len(runs)} ({passed} passed)",
            str(sum(r.faults_injected for r in runs)),
            str(sum(r.messages for r in runs)),
            *(_cell(runs, keys) for keys in COLUMNS.values()),
        ]
        lines.append("| " + " | ".join(row) + " |")
    total_seconds = sum(r.seconds for r in outcomes)
    lines += ["", LEGEND, "", f"{len(outcomes)} runs, {sum(1 for r in outcomes if r.passed)} "
              f"passed, {total_seconds:.0f} s in runs."]
    failed = [r for r in outcomes if not r.passed]
    if failed:
        lines += ["", "Failed runs:"]
        for outcome in failed:
            lines.append(f"- {outcome.scenario} run {outcome.run}:")
            lines += [f"  - {problem.splitlines()[0]}" for problem in outcome.problems]
    return "\n".join(lines) + "\n"


def write(outcomes: Sequence[RunOutcome], path: Path = REPORT_FILE) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("# Fault suite\n\n" + render(outcomes))
    return path
