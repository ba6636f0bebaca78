"""One row per scenario, the closing table and the JSON document.

A row holds one figure (``value`` in ``unit``) with what it was measured over (``count`` items in
``seconds``). The table sets each figure beside what it is compared with, all measured in the
same run: the ``raw`` baseline's rate for the rates of :data:`VS_RAW`, the ideal for ``slow``,
and another row for a row naming it in ``versus`` (``hot`` against ``accept``). A row of another
build (``accept@before``) is compared with the rows of that build (``accept@before``), and with
the one raw baseline. Latency rows show their percentiles as the figure.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ORDER = ("raw", "dramatiq", "accept", "e2e", "slow", "latency", "hot", "cold", "memory", "disk")
"""Every scenario, in the order of the table."""
VS_RAW = ("dramatiq", "accept", "e2e", "hot")
"""Scenarios whose rate is compared with the raw baseline's."""
SHOWN_PERCENTILES = ("p50", "p99")


@dataclass
class Row:
    scenario: str
    description: str
    count: int
    seconds: float
    value: float
    unit: str
    ideal: float | None = None
    """For ``slow``: max concurrent runs / executor latency, in the same unit."""
    versus: str | None = None
    """Another scenario whose value this one is divided by (``hot``: ``accept``)."""
    percentiles: dict[str, float] = field(default_factory=dict)
    """For ``latency``: ``p50``, ``p90``, ``p99``, ``max``, in ``unit``."""
    note: str = ""
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def kind(self) -> str:
        """The scenario whatever the build: ``accept`` for ``accept@before``."""
        return self.scenario.partition("@")[0]

    @property
    def build(self) -> str:
        return self.scenario.partition("@")[2]

    @property
    def percent_of_ideal(self) -> float | None:
        return None if not self.ideal else 100.0 * self.value / self.ideal

    def figure(self) -> str:
        if self.percentiles:
            return " / ".join(f"{name} {_number(self.percentiles[name])}"
                              for name in SHOWN_PERCENTILES if name in self.percentiles)
        return _number(self.value)

    def line(self) -> str:
        text = (f"{self.scenario:<9} {self.count:>7} in {self.seconds:8.2f}s  "
                f"{self.figure():>9} {self.unit}")
        if self.ideal is not None:
            text += f"  (ideal {self.ideal:.1f}, {self.percent_of_ideal:.0f}%)"
        if self.note:
            text += f"  ({self.note})"
        return text


def _number(value: float) -> str:
    """One decimal from 10 up, two from 1, three below (a latency of 0.004 s stays visible)."""
    size = abs(value)
    return f"{value:.1f}" if size >= 10 else f"{value:.2f}" if size >= 1 else f"{value:.3f}"


def find(rows: Sequence[Row], kind: str, build: str = "") -> Row | None:
    name = f"{kind}@{build}" if build else kind
    return next((r for r in rows if r.scenario == name), None)


def ratio_to_raw(row: Row, rows: Sequence[Row]) -> float | None:
    baseline = find(rows, "raw")
    if baseline is None or row.kind not in VS_RAW or baseline.value <= 0:
        return None
    return row.value / baseline.value


def ratio_to_versus(row: Row, rows: Sequence[Row]) -> float | None:
    if row.versus is None:
        return None
    other = find(rows, row.versus, row.build)
    return None if other is None or other.value <= 0 else row.value / other.value


def notes(row: Row, rows: Sequence[Row]) -> str:
    parts = []
    if row.ideal is not None:
        parts.append(f"{row.percent_of_ideal:.0f}% of ideal {row.ideal:.1f}/s")
    versus = ratio_to_versus(row, rows)
    if versus is not None:
        parts.append(f"{versus:.2f}x {row.versus}")
    if row.note:
        parts.append(row.note)
    return "; ".join(parts)


def ordered(rows: Sequence[Row]) -> list[Row]:
    """Rows in :data:`ORDER`, another build's row just before this build's."""
    def key(row: Row) -> tuple[int, int]:
        rank = ORDER.index(row.kind) if row.kind in ORDER else len(ORDER)
        return rank, 0 if row.build else 1
    return sorted(rows, key=key)


def table(rows: Sequence[Row]) -> str:
    """A Markdown table of the rows, each figure with its comparisons."""
    header = ["scenario", "measures", "n", "seconds", "figure", "unit", "vs raw", "compared"]
    body = []
    for row in ordered(rows):
        share = ratio_to_raw(row, rows)
        vs_raw = "1.00x" if row.scenario == "raw" else "" if share is None else f"{share:.2f}x"
        body.append([row.scenario, row.description, str(row.count), f"{row.seconds:.2f}",
                     row.figure(), row.unit, vs_raw, notes(row, rows)])
    widths = [max(len(line[k]) for line in [header, *body]) for k in range(len(header))]
    right = {2, 3, 4, 6}

    def render(cells: Sequence[str]) -> str:
        return "| " + " | ".join(c.rjust(w) if k in right else c.ljust(w)
                                 for k, (c, w) in enumerate(zip(cells, widths, strict=True))
                                 ) + " |"

    rule = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([render(header), rule, *(render(line) for line in body)])


def document(rows: Sequence[Row], settings: Mapping[str, Any]) -> dict[str, Any]:
    """The JSON document: the settings, then every row with its comparisons."""
    return {
        "settings": dict(settings),
        "scenarios": [
            {**asdict(row), "ratio_to_raw": ratio_to_raw(row, rows),
             "ratio_to_versus": ratio_to_versus(row, rows),
             "percent_of_ideal": row.percent_of_ideal}
            for row in ordered(rows)
        ],
    }


def write_json(path: Path, rows: Sequence[Row], settings: Mapping[str, Any]) -> None:
    path.write_text(json.dumps(document(rows, settings), indent=2) + "\n", encoding="utf-8")
