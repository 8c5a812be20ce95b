"""The node's span export in its `GET /metrics`: a real node exporting to the in-test receiver,
first down (the exporter fails, a full queue drops), then up (every span exported)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from kvharness import Harness, Node, free_port, http, wait_until
from test_kv_tracing import traced_cluster
from tracing_receiver import Receiver

pytestmark = pytest.mark.dataplane

QUEUE_FULL = 'kvnode_spans_dropped_total{reason="queue_full"}'
EXPORT_FAILED = 'kvnode_spans_dropped_total{reason="export_failed"}'
SPAN_SERIES = (
    "kvnode_spans_ended_total",
    "kvnode_spans_exported_total",
    QUEUE_FULL,
    EXPORT_FAILED,
    "kvnode_spans_queued",
)


def span_metrics(node: Node) -> dict[str, float]:
    """The span export's series as the node renders them, by series name with labels."""
    text = http("GET", node.url + "/metrics")[2].decode()
    series = dict(
        line.rsplit(" ", 1) for line in text.splitlines() if line.startswith("kvnode_spans_")
    )
    return {name: float(value) for name, value in series.items()}


def settled(node: Node) -> dict[str, float] | None:
    """The span metrics once every span ended has left the queue and its export is over."""
    m = span_metrics(node)
    done = m["kvnode_spans_exported_total"] + m[QUEUE_FULL] + m[EXPORT_FAILED]
    return m if m["kvnode_spans_queued"] == 0 and m["kvnode_spans_ended_total"] == done else None


def test_span_export_counts_on_metrics_with_the_collector_down_then_up(
    kv_cluster: Callable[..., Harness],
) -> None:
    port = free_port("127.0.0.1")  # nothing listens there yet: the collector is down
    # a queue of 2 drained one span at a time; a refused export is retried once (~1 s), then given up
    h = traced_cluster(
        kv_cluster,
        f"http://127.0.0.1:{port}",
        count=1,
        OTEL_BSP_MAX_QUEUE_SIZE="2",
        OTEL_BSP_MAX_EXPORT_BATCH_SIZE="1",
        OTEL_EXPORTER_OTLP_TIMEOUT="2",
    )
    node = h.nodes[0]
    assert span_metrics(node) == dict.fromkeys(SPAN_SERIES, 0.0)

    # one write per span; while the exporter retries the first, the queue fills and drops the oldest
    writes = 0
    for writes in range(1, 41):
        assert node.put(f"down-{writes}", b"v", "one")[0] == 204
        if span_metrics(node)[QUEUE_FULL] > 0:
            break
    down = wait_until(
        lambda: settled(node), 30, what="every span of the writes exported, failed or dropped"
    )
    assert down["kvnode_spans_ended_total"] == writes
    assert down["kvnode_spans_exported_total"] == 0
    assert down[QUEUE_FULL] >= 1, down
    assert down[EXPORT_FAILED] >= 1, down

    # the collector comes up on the configured endpoint: new spans are exported, the losses stay counted
    receiver = Receiver(port)
    try:
        for i in range(3):  # the exporter holds one, the queue two: nothing can be dropped
            assert node.put(f"up-{i}", b"v", "one")[0] == 204
        up = wait_until(
            lambda: (m := settled(node)) and m["kvnode_spans_exported_total"] == 3 and m,
            30,
            what="the three spans exported",
        )
        assert up["kvnode_spans_ended_total"] == writes + 3
        assert (up[QUEUE_FULL], up[EXPORT_FAILED]) == (down[QUEUE_FULL], down[EXPORT_FAILED])
        assert len(receiver.find(lambda n, s: n == node.id)) == 3
    finally:
        receiver.close()


def test_no_span_series_when_tracing_is_off(kv_cluster: Callable[..., Harness]) -> None:
    node = kv_cluster(1).nodes[0]
    assert node.put("k", b"v")[0] == 204
    text = http("GET", node.url + "/metrics")[2].decode()
    assert "# TYPE kvnode_spans_exported_total counter" in text
    assert [line for line in text.splitlines() if line.startswith("kvnode_spans_")] == []
