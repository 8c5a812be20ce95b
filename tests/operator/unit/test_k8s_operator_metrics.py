"""The operator's Prometheus metrics (handlers/metrics.py) and their HTTP endpoint (main)."""

from __future__ import annotations

import socket

import httpx2
import pytest

from kvtrace_operator.handlers.metrics import METRICS, Metrics
from kvtrace_operator.main import serve_metrics

pytestmark = pytest.mark.unit


def test_reconciles_are_counted_by_kind_and_outcome() -> None:
    metrics = Metrics()
    with metrics.reconcile("KVCluster"):
        pass
    with metrics.reconcile("KVCluster") as result:
        result["outcome"] = "invalid_spec"
    with pytest.raises(RuntimeError), metrics.reconcile("TracingPipeline"):
        raise RuntimeError("api down")
    metrics.child_actions("KVCluster", "created", 7)
    metrics.child_actions("KVCluster", "deleted", 0)
    text = metrics.render()
    assert 'kvtrace_operator_reconciles_total{kind="KVCluster",outcome="success"} 1' in text
    assert 'kvtrace_operator_reconciles_total{kind="KVCluster",outcome="invalid_spec"} 1' in text
    assert 'kvtrace_operator_reconciles_total{kind="TracingPipeline",outcome="error"} 1' in text
    assert 'kvtrace_operator_child_actions_total{kind="KVCluster",action="created"} 7' in text
    assert 'action="deleted"' not in text
    assert 'kvtrace_operator_reconcile_seconds_total{kind="KVCluster"}' in text
    assert "# TYPE kvtrace_operator_reconciles_total counter" in text


async def test_metrics_endpoint_serves_the_text_format() -> None:
    assert await serve_metrics(0) is None
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    runner = await serve_metrics(port)
    assert runner is not None
    try:
        async with httpx2.AsyncClient() as http:
            response = await http.get(f"http://127.0.0.1:{port}/metrics")
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/plain")
        assert response.text == METRICS.render()
    finally:
        await runner.cleanup()
