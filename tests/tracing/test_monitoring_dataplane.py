"""kvtrace's alert rules and Grafana dashboards against the real Prometheus and promtool:

- ``promtool check rules`` on the plain rules file and on a pipeline's rendered rules, and
  ``promtool test rules`` (tests/monitoring/rules-test.yaml) on the plain file;
- after load through the rendered stack (a traced client, failing writes), every query of
  every dashboard panel returns data from the pipeline's Prometheus (Grafana is not at hand:
  its ``$__rate_interval`` is replaced by 1m);
- stopping two of three members fires KVQuorumLost in that Prometheus.

About 60-90 s. Security off: the traced client exports without the pipeline's token.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from tracing_stack import Stack, flush, traced_client_writes, workload

from kvtrace.devstack import tools
from kvtrace.devstack.pytest_plugin import poll, require_binaries
from kvtrace_operator.render import apply_defaults_pipeline
from kvtrace_operator.render.monitoring import (
    dashboard,
    dashboard_names,
    dashboard_queries,
    rules_for,
)

pytestmark = pytest.mark.dataplane

REPO = Path(__file__).resolve().parents[2]
PLAIN_RULES = REPO / "charts" / "kvtrace-operator" / "files" / "alert-rules.yaml"
RULES_TEST = REPO / "tests" / "monitoring" / "rules-test.yaml"
SPEC = {"sampling": {"mode": "production", "ratio": 0.5, "decisionWait": "2s"},
        "metrics": {"prometheus": {"scrapeInterval": "1s"}},
        "security": {"auth": {"enabled": False}, "tls": {"enabled": False}}}


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(tools.binary("promtool")), *args], capture_output=True, text=True, timeout=120)


def test_promtool_checks_and_unit_tests_the_rules(tmp_path: Path) -> None:
    require_binaries("promtool")
    rendered = tmp_path / "rules.yml"
    pipe = {"metadata": {"name": "traces", "namespace": "shop"}, "spec": {}}
    rendered.write_text(yaml.safe_dump(rules_for(pipe, apply_defaults_pipeline(SPEC))))
    for path in (PLAIN_RULES, rendered):
        checked = promtool("check", "rules", str(path))
        assert checked.returncode == 0, checked.stdout + checked.stderr
        assert "SUCCESS: 9 rules found" in checked.stdout + checked.stderr, checked.stdout
    tested = promtool("test", "rules", str(RULES_TEST))
    assert tested.returncode == 0, tested.stdout + tested.stderr


def test_every_dashboard_query_returns_data_and_quorum_loss_fires(trace_stack: Callable[..., Stack]) -> None:
    stack = trace_stack(SPEC, faults="error:fail/", prometheus=True)
    prom = stack.prometheus
    assert prom is not None
    traced_client_writes(stack, [f"norm/dash-{i}" for i in range(30)] + [f"fail/dash-{i}" for i in range(6)])
    workload(stack, normal=60, errors=6, slow=0, seed=7)
    flush(stack, "fail/marker-")
    queries = [(name, title, expr.replace("$__rate_interval", "1m"))
               for name in dashboard_names() for title, expr in dashboard_queries(dashboard(name))]
    assert len(dashboard_names()) == 4 and len(queries) >= 20

    def empty() -> list[str]:
        return [f"{name} / {title}: {expr}" for name, title, expr in queries if not prom.query(expr)]

    poll(lambda: not empty(), timeout=120, interval=3, message=f"dashboard queries without data: {empty()}")

    # Two of three members stop: their scrapes fail, KVQuorumLost fires (for: 4 intervals).
    for node in stack.nodes[1:]:
        assert node.process is not None
        node.process.stop(timeout=10)

    def firing() -> set[str]:
        return {a["labels"]["alertname"] for a in prom.alerts() if a["state"] == "firing"}

    poll(lambda: {"KVQuorumLost", "KVMemberDown"} <= firing(), timeout=60, interval=1,
         message=f"KVQuorumLost firing (firing: {firing()})")
