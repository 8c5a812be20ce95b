"""The monitoring data files: the chart's copies are what the builder makes (`make
monitoring`), the dashboards are well formed, every rule and panel is Prometheus-only."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from kvtrace_operator.render.monitoring import (
    alert_rules,
    chart_files,
    dashboard,
    dashboard_names,
    dashboard_queries,
)

pytestmark = pytest.mark.unit

CHART_FILES = Path(__file__).resolve().parents[2] / "charts" / "kvtrace-operator" / "files"


def test_chart_files_are_what_make_monitoring_builds() -> None:
    expected = chart_files()
    found = sorted(str(p.relative_to(CHART_FILES)) for p in CHART_FILES.rglob("*") if p.is_file())
    assert found == sorted(expected), "run `make monitoring`"
    for name, text in expected.items():
        assert (CHART_FILES / name).read_text() == text, (
            f"charts/kvtrace-operator/files/{name}: run `make monitoring`"
        )
    assert yaml.safe_load(expected["alert-rules.yaml"]) == alert_rules()


def test_four_dashboards_each_panel_with_a_query() -> None:
    assert dashboard_names() == [
        "dependency-map.json",
        "error-analysis.json",
        "resource-usage.json",
        "service-performance.json",
    ]
    uids = set()
    for name in dashboard_names():
        board = dashboard(name)
        uids.add(board["uid"])
        assert board["title"].startswith("kvtrace / ")
        ids = [panel["id"] for panel in board["panels"]]
        assert len(ids) == len(set(ids)), name
        for panel in board["panels"]:
            assert panel["targets"], f"{name}: panel {panel['title']} has no query"
            assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        assert all(expr.count("(") == expr.count(")") for _, expr in dashboard_queries(board))
    assert len(uids) == 4


def test_every_alert_has_severity_summary_and_for() -> None:
    rules = [rule for group in alert_rules()["groups"] for rule in group["rules"]]
    assert len(rules) == 9
    for rule in rules:
        assert rule["labels"]["severity"] in ("warning", "critical"), rule["alert"]
        assert rule["annotations"]["summary"] and rule["for"] == "60s", rule["alert"]


RULES_TEST = Path(__file__).resolve().parent / "rules-test.yaml"


def test_rule_unit_tests_cover_every_alert_firing_and_not() -> None:
    """tests/monitoring/rules-test.yaml (run by promtool in test_alert_rules_promtool.py) tests
    the chart's rules file, and has for every alert a case where it fires and one where it
    must not."""
    tests = yaml.safe_load(RULES_TEST.read_text())
    assert tests["rule_files"] == ["../../charts/kvtrace-operator/files/alert-rules.yaml"]
    firing: dict[str, int] = {}
    quiet: dict[str, int] = {}
    for case in tests["tests"]:
        for check in case["alert_rule_test"]:
            seen = firing if check["exp_alerts"] else quiet
            seen[check["alertname"]] = seen.get(check["alertname"], 0) + 1
            for alert in check["exp_alerts"]:
                assert set(alert) == {"exp_labels", "exp_annotations"}, check["alertname"]
    alerts = {rule["alert"] for group in alert_rules()["groups"] for rule in group["rules"]}
    assert set(firing) == alerts, f"alerts without a firing case: {alerts - set(firing)}"
    assert set(quiet) == alerts, f"alerts without a not-firing case: {alerts - set(quiet)}"
