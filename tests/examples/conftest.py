"""The operator as the chart deploys it, for the controlplane tier: the chart installed in the
test's namespace (namespace scope), and ``kvtrace operator run`` started locally with exactly
the chart's arguments (ports aside) and a kubeconfig holding a token of the chart's
ServiceAccount (TokenRequest API): it has the chart's permissions and nothing more."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "chart"))

from chartlib import ChartOperator  # noqa: E402


@pytest.fixture
def chart_operator(local_cluster: Any, namespace: str, tmp_path: Path,
                   request: pytest.FixtureRequest) -> Iterator[ChartOperator]:
    op = ChartOperator(local_cluster, namespace, tmp_path, scope="namespace")
    try:
        op.install()
        op.start()
        yield op
    finally:
        # Delete the custom resources while the operator still runs: kopf removes its
        # finalizer (it adds one for its timers), so the namespace can go away afterwards.
        local_cluster.kubectl("-n", namespace, "delete", "kvclusters.kvtrace.dev,tracingpipelines.kvtrace.dev",
                              "--all", "--wait", "--timeout=60s", check=False, timeout=90)
        op.stop()
        if getattr(request.node, "rep_call", None) is not None and request.node.rep_call.failed:
            sys.stderr.write(f"\n--- operator log ({op.log_path}) ---\n{op.log()[-20000:]}\n")
        op.uninstall()


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report
