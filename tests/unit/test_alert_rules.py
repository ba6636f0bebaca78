"""The Prometheus alert rules (ops/prometheus/alerts.yaml): structure, PromQL, metric names and
runbook links.

``promtool check rules`` is not available where the tests run, so the file is checked here
the same way: YAML with the rule-file schema (groups of named rules, each with ``alert``,
``expr`` and optional ``for``, ``labels``, ``annotations``), every ``expr`` parsed by a real
PromQL parser, every ``meerkat_*`` name exported by the worker and every ``runbook_url``
pointing at an existing section of ops/runbook.md.
"""

from __future__ import annotations

import re
from typing import Any

import promql_parser
import pytest
import yaml

from tests.unit.promql_names import (
    ROOT,
    exported_metric_names,
    metric_names,
    runbook_anchors,
    selectors,
    worker_metric_names,
)

pytestmark = pytest.mark.unit

ALERT_RULES = ROOT / "ops" / "prometheus" / "alerts.yaml"
RUNBOOK_BASE = "https://github.com/meerkat-worker/meerkat-worker/blob/main/ops/runbook.md#"
RULE_KEYS = {"alert", "expr", "for", "keep_firing_for", "labels", "annotations"}
SEVERITIES = {"warning", "critical"}
DURATION = re.compile(r"^([0-9]+(ms|s|m|h|d|w|y))+$")


def _rules() -> list[dict[str, Any]]:
    document = yaml.safe_load(ALERT_RULES.read_text(encoding="utf-8"))
    assert isinstance(document, dict)
    assert set(document) == {"groups"}
    rules: list[dict[str, Any]] = []
    for group in document["groups"]:
        assert isinstance(group, dict)
        assert set(group) <= {"name", "interval", "rules", "limit"}, group.keys()
        assert isinstance(group["name"], str)
        assert group["name"]
        assert isinstance(group["rules"], list)
        rules.extend(group["rules"])
    return rules


RULES = _rules()
BY_NAME = {rule["alert"]: rule for rule in RULES}


def test_the_rule_file_has_unique_alerts() -> None:
    names = [rule.get("alert") for rule in RULES]
    assert len(names) == len(set(names)), names
    assert {
        "MeerkatDeadLetterGrowing",
        "MeerkatDeadLetterQueueFilling",
        "MeerkatShardQueueBacklog",
        "MeerkatOutboxBacklog",
        "MeerkatShardWithoutConsumer",
        "MeerkatWorkerNotReady",
        "MeerkatTaskRestarting",
        "MeerkatWorkerWedged",
        "MeerkatCommitErrorRate",
        "MeerkatCommitLatencyHigh",
        "MeerkatRunsFailing",
    } <= set(BY_NAME)


@pytest.mark.parametrize("rule", RULES, ids=[rule["alert"] for rule in RULES])
def test_each_rule_has_the_rule_file_schema(rule: dict[str, Any]) -> None:
    assert set(rule) <= RULE_KEYS, set(rule) - RULE_KEYS
    assert re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", rule["alert"])
    assert isinstance(rule["expr"], str)
    for key in ("for", "keep_firing_for"):
        if key in rule:
            assert DURATION.match(rule[key]), rule[key]
            assert promql_parser.parse_duration(rule[key]).total_seconds() > 0
    labels = rule["labels"]
    assert isinstance(labels, dict)
    assert labels["severity"] in SEVERITIES
    assert all(isinstance(value, str) for value in labels.values())
    annotations = rule["annotations"]
    assert isinstance(annotations, dict)
    assert {"summary", "description", "runbook_url"} <= set(annotations)
    assert all(isinstance(value, str) and value.strip() for value in annotations.values())


@pytest.mark.parametrize("rule", RULES, ids=[rule["alert"] for rule in RULES])
def test_each_expression_is_valid_promql_naming_metrics(rule: dict[str, Any]) -> None:
    tree = promql_parser.parse(rule["expr"])
    assert tree is not None
    assert metric_names(rule["expr"]), "an alert that selects no metric"


def test_the_expressions_use_only_exported_worker_metrics() -> None:
    used = set().union(*(worker_metric_names(rule["expr"]) for rule in RULES))
    assert used, "the alert rules name no meerkat_ metric"
    unknown = used - exported_metric_names()
    assert not unknown, f"unknown metrics in {ALERT_RULES.name}: {sorted(unknown)}"


def test_only_the_backlog_alert_uses_rabbitmq_metrics() -> None:
    foreign = {
        rule["alert"]: sorted(metric_names(rule["expr"]) - worker_metric_names(rule["expr"]))
        for rule in RULES
    }
    assert {name: found for name, found in foreign.items() if found} == {
        "MeerkatShardQueueBacklog": ["rabbitmq_queue_messages_ready"]
    }


def test_the_backlog_alert_selects_the_shard_queues_by_queue() -> None:
    rule = BY_NAME["MeerkatShardQueueBacklog"]
    (selector,) = selectors(rule["expr"])
    (matcher,) = [m for m in selector.matchers.matchers if m.name == "queue"]
    assert matcher.op == promql_parser.MatchOp.Re
    pattern = re.compile(matcher.value)
    assert pattern.fullmatch("meerkat.ingress.00")
    assert pattern.fullmatch("meerkat.ingress.15")
    assert not pattern.fullmatch("meerkat.dead")
    assert not pattern.fullmatch("meerkatXingress.00")
    assert "by (queue)" in rule["expr"]


def test_the_dead_letter_alert_is_a_sustained_rate() -> None:
    rule = BY_NAME["MeerkatDeadLetterGrowing"]
    assert "rate(meerkat_messages_dead_lettered_total" in rule["expr"]
    assert "increase(" not in rule["expr"]
    assert promql_parser.parse_duration(rule["for"]).total_seconds() >= 600


@pytest.mark.parametrize("rule", RULES, ids=[rule["alert"] for rule in RULES])
def test_each_runbook_url_points_at_a_runbook_section(rule: dict[str, Any]) -> None:
    url = rule["annotations"]["runbook_url"]
    assert url.startswith(RUNBOOK_BASE), url
    anchor = url.removeprefix(RUNBOOK_BASE)
    assert anchor in runbook_anchors(), f"{rule['alert']}: no runbook section #{anchor}"


def test_the_runbook_anchors_follow_github_headings() -> None:
    text = "# Title\n## Database down or commits failing\n## Dead-letter queue (filling)\nx\n"
    assert runbook_anchors(text) == {
        "title",
        "database-down-or-commits-failing",
        "dead-letter-queue-filling",
    }


def test_the_runbook_lists_every_worker_metric_the_alerts_use() -> None:
    runbook = (ROOT / "ops" / "runbook.md").read_text(encoding="utf-8")
    used = set().union(*(worker_metric_names(rule["expr"]) for rule in RULES))
    for name in used:
        base = re.sub(r"_bucket$", "", name)
        assert f"`{base}" in runbook, f"{name} is not listed in ops/runbook.md"
