"""The verdict on one fault run: ``meerkat-worker verify --json`` run as a user runs it.

The checker is a separate process with the run's own ``MEERKAT_*`` settings, so it sees the
store, the blob store and the dead queue the way an operator would, and nothing of the test
process's state. Its JSON report is judged here against the contract: every violation count
present and 0, ``ok`` true, and the number of published messages it read equal to what the
producer had confirmed (a checker that read half the log would otherwise pass half the work).

A checker that fails without a report is a problem of the run too: the table then says the run
could not be checked rather than pretending it was clean.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.faults.report import VIOLATION_COUNTS

VERIFY_SECONDS = 120.0
EXAMPLES_SHOWN = 3


@dataclass
class Verdict:
    counts: dict[str, int] | None = None
    problems: list[str] = field(default_factory=list)


def verify_run(directory: Path, env: dict[str, str], confirmed: int) -> Verdict:
    """Check ``published.jsonl`` and ``events.jsonl`` of ``directory``; the report and the
    checker's stderr are kept next to them."""
    command = [sys.executable, "-m", "worker", "verify",
               "--published", str(directory / "published.jsonl"),
               "--events", str(directory / "events.jsonl"), "--json"]
    try:
        result = subprocess.run(command, cwd=directory, env=env, text=True, capture_output=True,
                                timeout=VERIFY_SECONDS, check=False)
    except subprocess.TimeoutExpired:
        return Verdict(problems=[f"verify did not answer within {VERIFY_SECONDS:g}s"])
    (directory / "verify.json").write_text(result.stdout)
    (directory / "verify.err").write_text(result.stderr)
    report = _parse(result)
    if report is None:
        errors = result.stderr.strip().splitlines() or ["(no output)"]
        return Verdict(problems=[
            f"verify failed (exit {result.returncode}) without a report: {errors[-1]}\n"
            + "\n".join(errors[-15:])])
    counts = {str(k): int(v) for k, v in report["counts"].items()}
    return Verdict(counts, judge(report, counts, confirmed))


def _parse(result: subprocess.CompletedProcess[str]) -> dict[str, Any] | None:
    if result.returncode not in (0, 1):  # 0 consistent, 1 violations; anything else is no report
        return None
    try:
        report = json.loads(result.stdout)
    except ValueError:
        return None
    if not isinstance(report, dict) or not isinstance(report.get("counts"), dict):
        return None
    return report


def judge(report: dict[str, Any], counts: dict[str, int], confirmed: int) -> list[str]:
    problems = []
    missing = [k for k in VIOLATION_COUNTS if k not in counts]
    if missing:
        problems.append(f"verify reported no count for {', '.join(missing)}")
    bad = {k: counts[k] for k in VIOLATION_COUNTS if counts.get(k, 0)}
    if bad or report.get("ok") is not True:
        examples = report.get("violations")
        shown = ({k: v[:EXAMPLES_SHOWN] for k, v in examples.items() if v}
                 if isinstance(examples, dict) else examples)
        problems.append(
            "history violations: "
            + (", ".join(f"{k}={v}" for k, v in bad.items()) or "verify says not ok")
            + f"\nexamples: {json.dumps(shown, default=str)[:3000]}")
    if counts.get("published") != confirmed:
        problems.append(f"verify read {counts.get('published')} published messages, the "
                        f"producer confirmed {confirmed}")
    return problems
