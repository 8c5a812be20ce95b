"""kvnode.metrics: the span export's counts rendered as Prometheus text."""

from __future__ import annotations

import pytest

from kvnode.metrics import Metrics

pytestmark = pytest.mark.unit


def span_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if "kvnode_spans_" in line]


def test_span_export_counts_are_counters_and_the_queue_a_gauge() -> None:
    stats = {"ended": 10, "exported": 4, "failed": 3, "dropped": 2, "queued": 1}
    metrics = Metrics()
    metrics.span_export(lambda: stats)
    lines = span_lines(metrics.render())
    assert "# TYPE kvnode_spans_ended_total counter" in lines
    assert "# TYPE kvnode_spans_exported_total counter" in lines
    assert "# TYPE kvnode_spans_dropped_total counter" in lines
    assert "# TYPE kvnode_spans_queued gauge" in lines
    samples = [line for line in lines if not line.startswith("#")]
    assert samples == [
        "kvnode_spans_ended_total 10.0",
        "kvnode_spans_exported_total 4.0",
        'kvnode_spans_dropped_total{reason="export_failed"} 3.0',
        'kvnode_spans_dropped_total{reason="queue_full"} 2.0',
        "kvnode_spans_queued 1.0",
    ]
    stats["exported"] = 9  # read at each scrape
    assert "kvnode_spans_exported_total 9.0" in metrics.render().splitlines()


def test_no_span_samples_without_the_nodes_own_export() -> None:
    metrics = Metrics()
    metrics.span_export(dict)  # telemetry.stats() when tracing is off or the SDK exports
    lines = span_lines(metrics.render())
    assert lines and all(line.startswith("#") for line in lines)
