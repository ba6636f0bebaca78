"""PromQL checks shared by the tests of the alert rules and of the Grafana dashboard.

An expression is parsed with ``promql-parser`` (the Rust PromQL parser of the
``promql-parser`` crate, the same grammar as Prometheus's); its metric names are collected from
every vector selector in the syntax tree. :func:`exported_metric_names` lists what a worker
exports: each family of :class:`worker.metrics.Metrics`'s registry with the series names
Prometheus sees (``_total`` for counters; ``_bucket``, ``_sum`` and ``_count`` for histograms).
"""

from __future__ import annotations

from pathlib import Path

import promql_parser

from worker.metrics import PREFIX, Metrics

ROOT = Path(__file__).resolve().parents[2]
RUNBOOK = ROOT / "ops" / "runbook.md"

_SUFFIXES = {
    "counter": ("_total",),
    "histogram": ("_bucket", "_sum", "_count"),
    "summary": ("_sum", "_count"),
    "gauge": ("",),
}


def exported_metric_names() -> set[str]:
    """Every series name of a worker's registry, with the suffixes of its type."""
    names: set[str] = set()
    for family in Metrics().registry.collect():
        names.update(family.name + suffix for suffix in _SUFFIXES.get(family.type, ("",)))
    return names


def parse(expr: str) -> promql_parser.Expr:
    """The syntax tree of ``expr``; raises ValueError when it is not valid PromQL."""
    return promql_parser.parse(expr)


def selectors(expr: str) -> list[promql_parser.VectorSelector]:
    """Every vector selector of ``expr``, those under range selectors included."""
    found: list[promql_parser.VectorSelector] = []

    def visit(node: promql_parser.Expr) -> None:
        if isinstance(node, promql_parser.VectorSelector):
            found.append(node)

    promql_parser.walk(parse(expr), visit)
    return found


def metric_names(expr: str) -> set[str]:
    """The metric names ``expr`` selects; a selector without a name raises ValueError."""
    names: set[str] = set()
    for selector in selectors(expr):
        if selector.name is None:
            raise ValueError(f"selector without a metric name in {expr!r}: {selector}")
        names.add(selector.name)
    return names


def worker_metric_names(expr: str) -> set[str]:
    """The ``meerkat_*`` metric names of ``expr``: those a worker must export."""
    return {name for name in metric_names(expr) if name.startswith(f"{PREFIX}_")}


def runbook_anchors(text: str | None = None) -> set[str]:
    """The anchors GitHub makes of the runbook's headings (lower case, spaces to dashes,
    punctuation other than ``-`` and ``_`` dropped)."""
    source = RUNBOOK.read_text(encoding="utf-8") if text is None else text
    anchors: set[str] = set()
    for line in source.splitlines():
        if not line.startswith("#"):
            continue
        title = line.lstrip("#").strip().lower()
        slug = "".join(ch for ch in title if ch.isalnum() or ch in " -_")
        anchors.add(slug.replace(" ", "-"))
    return anchors
