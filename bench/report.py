"""One row per scenario, the closing table and the JSON document."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

RATIO_SCENARIOS = ("accept", "e2e")
"""Scenarios whose rate is compared with the raw baseline's."""


@dataclass
class Row:
    scenario: str
    description: str
    count: int
    seconds: float
    rate: float
    unit: str
    ideal: float | None = None
    """For ``slow``: max concurrent runs / executor latency, in the same unit."""
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def percent_of_ideal(self) -> float | None:
        return None if not self.ideal else 100.0 * self.rate / self.ideal

    def line(self) -> str:
        text = f"{self.scenario:<7} {self.count:>7} in {self.seconds:7.2f}s  " \
               f"{self.rate:9.1f} {self.unit}"
        if self.ideal is not None:
            text += f"  (ideal {self.ideal:.1f}, {self.percent_of_ideal:.0f}%)"
        return text


def ratio(row: Row, baseline: Row | None) -> float | None:
    scenario = row.scenario.partition("@")[0]  # ``e2e@<checkout>``: another build's row
    if baseline is None or scenario not in RATIO_SCENARIOS or baseline.rate <= 0:
        return None
    return row.rate / baseline.rate


def table(rows: Sequence[Row]) -> str:
    baseline = next((r for r in rows if r.scenario == "raw"), None)
    header = (f"| {'scenario':<44} | {'n':>6} | {'seconds':>8} | {'rate':>9} | {'unit':<8} "
              f"| {'vs raw':>7} | {'of ideal':<22} |")
    lines = [header, "|" + "|".join("-" * (len(c)) for c in header.split("|")[1:-1]) + "|"]
    for row in rows:
        share = ratio(row, baseline)
        vs_raw = "1.00x" if row.scenario == "raw" else "" if share is None else f"{share:.2f}x"
        ideal = "" if row.ideal is None else \
            f"{row.percent_of_ideal:.0f}% of {row.ideal:.1f}/s"
        lines.append(
            f"| {row.description:<44} | {row.count:>6} | {row.seconds:>8.2f} | {row.rate:>9.1f} "
            f"| {row.unit:<8} | {vs_raw:>7} | {ideal:<22} |"
        )
    return "\n".join(lines)


def write_json(path: Path, rows: Sequence[Row], settings: dict[str, Any]) -> None:
    baseline = next((r for r in rows if r.scenario == "raw"), None)
    document = {
        "settings": settings,
        "scenarios": [
            {**asdict(row), "ratio_to_raw": ratio(row, baseline),
             "percent_of_ideal": row.percent_of_ideal}
            for row in rows
        ],
    }
    path.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
