"""The Grafana dashboard (ops/grafana/meerkat-worker.json): the dashboard JSON model, its
layout, and the PromQL of every panel against the metrics the worker exports.

Grafana's own variables (``$__rate_interval``, ``$instance``) are replaced by plain values
before an expression is parsed, as Grafana does before it sends the query.
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from tests.unit.promql_names import ROOT, exported_metric_names, metric_names, worker_metric_names

pytestmark = pytest.mark.unit

DASHBOARD_PATH = ROOT / "ops" / "grafana" / "meerkat-worker.json"
DASHBOARD: dict[str, Any] = json.loads(DASHBOARD_PATH.read_text(encoding="utf-8"))
DATASOURCE = {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}
GRID_WIDTH = 24
_INTERVALS = re.compile(r"\$\{?(__rate_interval|__interval|__range)\b\}?")
_VARIABLES = re.compile(r"\$(\w+)|\$\{(\w+)\}")


def _as_promql(expr: str) -> str:
    """``expr`` with Grafana's interval variables as ``5m`` and other variables as ``.*``."""
    return _VARIABLES.sub(".*", _INTERVALS.sub("5m", expr))


def _query_panels() -> list[dict[str, Any]]:
    return [panel for panel in DASHBOARD["panels"] if panel["type"] != "row"]


def _exprs() -> list[str]:
    return [target["expr"] for panel in _query_panels() for target in panel["targets"]]


def test_the_dashboard_has_a_title_uid_and_schema_version() -> None:
    assert DASHBOARD["title"] == "meerkat-worker"
    assert re.fullmatch(r"[A-Za-z0-9_-]{1,40}", DASHBOARD["uid"])
    assert 36 <= DASHBOARD["schemaVersion"] <= 41
    assert isinstance(DASHBOARD["panels"], list)
    assert DASHBOARD["panels"]


def test_the_datasource_is_a_variable() -> None:
    variables = {var["name"]: var for var in DASHBOARD["templating"]["list"]}
    source = variables["DS_PROMETHEUS"]
    assert source["type"] == "datasource"
    assert source["query"] == "prometheus"
    for panel in _query_panels():
        assert panel["datasource"] == DATASOURCE, panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == DATASOURCE, panel["title"]
    for var in variables.values():
        if var["type"] == "query":
            assert var["datasource"] == DATASOURCE, var["name"]


def test_the_panel_ids_are_unique() -> None:
    ids = [panel["id"] for panel in DASHBOARD["panels"]]
    assert all(isinstance(panel_id, int) for panel_id in ids)
    assert len(ids) == len(set(ids)), ids


def test_each_panel_has_a_grid_position_and_none_overlap() -> None:
    taken: set[tuple[int, int]] = set()
    for panel in DASHBOARD["panels"]:
        pos = panel["gridPos"]
        assert set(pos) == {"h", "w", "x", "y"}, panel["title"]
        assert pos["h"] > 0
        assert pos["w"] > 0
        assert pos["x"] >= 0
        assert pos["x"] + pos["w"] <= GRID_WIDTH, panel["title"]
        cells = {
            (x, y)
            for x in range(pos["x"], pos["x"] + pos["w"])
            for y in range(pos["y"], pos["y"] + pos["h"])
        }
        assert not cells & taken, f"panel {panel['title']!r} overlaps another"
        taken |= cells


def test_each_query_panel_has_titled_targets_with_unique_ref_ids() -> None:
    for panel in _query_panels():
        assert panel["title"]
        targets = panel["targets"]
        assert targets, panel["title"]
        ref_ids = [target["refId"] for target in targets]
        assert len(ref_ids) == len(set(ref_ids)), panel["title"]
        assert all(isinstance(target["expr"], str) and target["expr"] for target in targets)


def test_each_expression_is_valid_promql() -> None:
    for expr in _exprs():
        assert metric_names(_as_promql(expr)), expr


def test_the_expressions_use_only_exported_worker_metrics() -> None:
    used = set().union(*(worker_metric_names(_as_promql(expr)) for expr in _exprs()))
    unknown = used - exported_metric_names()
    assert not unknown, f"unknown metrics in {DASHBOARD_PATH.name}: {sorted(unknown)}"


def test_the_dashboard_shows_what_operators_need() -> None:
    used = set().union(*(metric_names(_as_promql(expr)) for expr in _exprs()))
    assert {
        "meerkat_messages_received_total",
        "meerkat_messages_acked_total",
        "meerkat_runs_completed_total",
        "meerkat_commit_seconds_bucket",
        "rabbitmq_queue_messages_ready",
        "meerkat_outbox_backlog",
        "meerkat_messages_dead_lettered_total",
        "meerkat_dead_letter_queue_messages",
        "meerkat_runs_active",
        "meerkat_runs_failed_total",
        "meerkat_outbox_published_total",
        "meerkat_task_restarts_total",
    } <= used
    latency = [expr for expr in _exprs() if "meerkat_commit_seconds_bucket" in expr]
    assert any(expr.startswith("histogram_quantile(0.5,") for expr in latency)
    assert any(expr.startswith("histogram_quantile(0.99,") for expr in latency)


def test_grafana_variables_become_plain_promql() -> None:
    expr = 'sum(rate(meerkat_commits_total{instance=~"$instance"}[$__rate_interval]))'
    assert _as_promql(expr) == 'sum(rate(meerkat_commits_total{instance=~".*"}[5m]))'
