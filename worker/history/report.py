"""The two faces of a history report: a table for people, a stable JSON object for programs.

The JSON object always has every count and every violation key, empty or not, so a script can
index it without checking for presence; its shape is::

    {"ok": bool,
     "counts": {name: int, ...},                # totals, violations and warnings alike
     "violations": {name: [example, ...], ...}, # example: {"runtime_id", "subject", "detail"}
     "warnings": {name: [example, ...], ...}}

Examples are capped (the count is not): a history with ten thousand lost messages needs the
first few ids to start from, not all of them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict
from typing import Any

from worker.history.facts import CheckResult, Report

JSON_EXAMPLES = 20
TEXT_EXAMPLES = 5
_WIDTH = 26


def report_json(report: Report, examples: int = JSON_EXAMPLES) -> dict[str, Any]:
    counts: dict[str, int] = dict(report.totals)
    counts.update({name: result.count for name, result in report.violations.items()})
    counts.update({name: result.count for name, result in report.warnings.items()})
    return {
        "ok": report.ok,
        "counts": counts,
        "violations": _examples(report.violations, examples),
        "warnings": _examples(report.warnings, examples),
    }


def _examples(results: Mapping[str, CheckResult], limit: int) -> dict[str, list[dict[str, Any]]]:
    return {
        name: [asdict(finding) for finding in result.examples[:limit]]
        for name, result in results.items()
    }


def render_text(report: Report, examples: int = TEXT_EXAMPLES) -> str:
    lines = [f"{'TOTAL':<{_WIDTH}}COUNT"]
    lines += [f"{name:<{_WIDTH}}{count}" for name, count in report.totals.items()]
    lines += ["", f"{'VIOLATION':<{_WIDTH}}COUNT"]
    lines += [f"{name:<{_WIDTH}}{r.count}" for name, r in report.violations.items()]
    lines += ["", f"{'WARNING (not a violation)':<{_WIDTH}}COUNT"]
    lines += [f"{name:<{_WIDTH}}{r.count}" for name, r in report.warnings.items()]
    for name, result in [*report.violations.items(), *report.warnings.items()]:
        if not result.count:
            continue
        lines += ["", f"{name}: {result.count}"]
        for finding in result.examples[:examples]:
            lines.append(f"  {finding.runtime_id or '-'}  {finding.subject}  {finding.detail}")
        if result.count > min(examples, len(result.examples)):
            lines.append(f"  ... {result.count - min(examples, len(result.examples))} more")
    failed = sum(1 for result in report.violations.values() if result.count)
    lines += ["", "history ok" if report.ok else f"history has problems: {failed} check(s) failed"]
    return "\n".join(lines)
