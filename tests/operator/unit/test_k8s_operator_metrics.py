"""The operator's Prometheus metrics (handlers/metrics.py) and their HTTP endpoint (main)."""

from __future__ import annotations

import socket

import httpx2
import pytest
from prometheus_client.parser import text_string_to_metric_families

from kvtrace_operator.handlers.metrics import Metrics
from kvtrace_operator.main import serve_metrics

pytestmark = pytest.mark.unit


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of the exposition, by name and labels (parsed, so format details such as
    label order or 1 versus 1.0 do not matter)."""
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def types(text: str) -> dict[str, str]:
    return {family.name: family.type for family in text_string_to_metric_families(text)}


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
    got = samples(text)
    reconciles = "kvtrace_operator_reconciles_total"
    assert got[(reconciles, frozenset({("kind", "KVCluster"), ("outcome", "success")}))] == 1
    assert got[(reconciles, frozenset({("kind", "KVCluster"), ("outcome", "invalid_spec")}))] == 1
    assert got[(reconciles, frozenset({("kind", "TracingPipeline"), ("outcome", "error")}))] == 1
    assert (
        got[
            (
                "kvtrace_operator_child_actions_total",
                frozenset({("kind", "KVCluster"), ("action", "created")}),
            )
        ]
        == 7
    )
    assert 'action="deleted"' not in text
    duration = "kvtrace_operator_reconcile_duration_seconds"
    assert got[(f"{duration}_count", frozenset({("kind", "KVCluster")}))] == 2
    assert (
        got[(f"{duration}_bucket", frozenset({("kind", "TracingPipeline"), ("le", "+Inf")}))] == 1
    )
    assert types(text)["kvtrace_operator_reconciles"] == "counter"
    assert types(text)[duration] == "histogram"
    assert "_created" not in text


def test_process_metrics_are_exposed() -> None:
    got = samples(Metrics().render())
    assert got[("process_resident_memory_bytes", frozenset())] > 0
    assert ("python_gc_collections_total", frozenset({("generation", "0")})) in got


def test_label_values_are_escaped() -> None:
    metrics = Metrics()
    metrics.canary('odd "reason"\\with\nnewline')
    got = samples(metrics.render())
    assert (
        got[
            (
                "kvtrace_operator_canaries_total",
                frozenset({("reason", 'odd "reason"\\with\nnewline')}),
            )
        ]
        == 1
    )


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
        assert response.headers["content-type"].startswith("text/plain; version=")
        assert ("kvtrace_operator_reconciles", "counter") in types(response.text).items()
    finally:
        await runner.cleanup()
