"""kvtrace's alert rules through the real ``promtool`` (Prometheus 3, from the tool cache):

- ``promtool check rules`` on the chart's plain rules file and on a pipeline's rendered rules;
- ``promtool test rules`` on tests/monitoring/rules-test.yaml: every alert firing on a bad
  input and silent on a healthy one (tests/monitoring/test_monitoring_unit.py holds that
  coverage);
- a pipeline's own thresholds reach its rules: the same input fires its latency and buffer
  alerts under ``latencyThreshold: 200ms`` / ``numTraces: 1000`` and not under the defaults.

Seconds: promtool evaluates the rules on its own in-memory series; no server runs.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from kvtrace.devstack import tools
from kvtrace.devstack.pytest_plugin import require_binaries
from kvtrace_operator.render.monitoring import alert_rules, rules_for
from kvtrace_operator.spec import parse_pipeline

pytestmark = pytest.mark.dataplane

REPO = Path(__file__).resolve().parents[2]
PLAIN_RULES = REPO / "charts" / "kvtrace-operator" / "files" / "alert-rules.yaml"
RULES_TEST = Path(__file__).resolve().parent / "rules-test.yaml"
TUNED = {
    "sampling": {"latencyThreshold": "200ms", "numTraces": 1000},
    "metrics": {"prometheus": {"scrapeInterval": "5s"}},
}


def promtool(*args: str) -> str:
    """promtool's output; fails the test with it when promtool exits non-zero."""
    require_binaries("promtool")
    done = subprocess.run(
        [str(tools.binary("promtool")), *args], capture_output=True, text=True, timeout=120
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, f"promtool {' '.join(args)} exited {done.returncode}:\n{output}"
    return output


def rendered_rules(tmp_path: Path, spec: dict[str, Any]) -> Path:
    """The rules file a pipeline with ``spec`` renders into its Prometheus ConfigMap."""
    pipe = {"metadata": {"name": "traces", "namespace": "shop"}, "spec": spec}
    path = tmp_path / f"rules-{len(list(tmp_path.iterdir()))}.yml"
    path.write_text(yaml.safe_dump(rules_for(pipe, parse_pipeline(spec))))
    return path


def test_promtool_checks_the_plain_and_the_rendered_rules(tmp_path: Path) -> None:
    count = sum(len(group["rules"]) for group in alert_rules()["groups"])
    for path in (PLAIN_RULES, rendered_rules(tmp_path, {}), rendered_rules(tmp_path, TUNED)):
        assert f"SUCCESS: {count} rules found" in promtool("check", "rules", str(path)), path


def test_promtool_unit_tests_every_alert_firing_and_not() -> None:
    output = promtool("test", "rules", str(RULES_TEST))
    assert "SUCCESS" in output and "FAILED" not in output, output


def tuned_case(rules: Path, fires: bool) -> dict[str, Any]:
    """p99 of writes 248.5 ms and 950 traces held: above a 200 ms threshold and 90% of 1000,
    below 500 ms and 90% of 50000."""
    series = 'traces_span_metrics_duration_milliseconds_bucket{service_name="orders", span_kind="SPAN_KIND_SERVER", kvstore_operation="write", le="%s"}'
    latency = [
        {
            "exp_labels": {
                "severity": "warning",
                "service_name": "orders",
                "kvstore_operation": "write",
            },
            "exp_annotations": {
                "summary": "orders: p99 of write above 200 ms",
                "description": "p99 is 248.5 ms.",
            },
        }
    ]
    buffer = [
        {
            "exp_labels": {"severity": "warning", "job": "kvtrace-collector"},
            "exp_annotations": {
                "summary": "Tail-sampling buffer above 90% of 1000 traces",
                "description": "Raise spec.sampling.numTraces or add collector replicas.",
            },
        }
    ]
    return {
        "rule_files": [str(rules)],
        "evaluation_interval": "5s",
        "tests": [
            {
                "interval": "5s",
                "input_series": [
                    {"series": series % "100", "values": "0x40"},
                    {"series": series % "250", "values": "0+50x40"},
                    {"series": series % "+Inf", "values": "0+50x40"},
                    {
                        "series": 'otelcol_processor_tail_sampling_sampling_traces_on_memory{job="kvtrace-collector"}',
                        "values": "950x40",
                    },
                ],
                "alert_rule_test": [
                    {
                        "eval_time": "2m",
                        "alertname": "KVLatencyP99AboveThreshold",
                        "exp_alerts": latency if fires else [],
                    },
                    {
                        "eval_time": "2m",
                        "alertname": "TailSamplingBufferNearFull",
                        "exp_alerts": buffer if fires else [],
                    },
                ],
            }
        ],
    }


def test_a_pipelines_thresholds_reach_its_rules(tmp_path: Path) -> None:
    for rules, fires in ((rendered_rules(tmp_path, TUNED), True), (PLAIN_RULES, False)):
        case = tmp_path / f"case-{fires}.yaml"
        case.write_text(yaml.safe_dump(tuned_case(rules, fires), sort_keys=False))
        output = promtool("test", "rules", str(case))
        assert "SUCCESS" in output, output
