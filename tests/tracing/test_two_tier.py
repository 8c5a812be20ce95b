"""Two collector replicas with tail sampling: the two-tier topology keeps every trace whole.

``render_collector_config(pipeline, "loadbalancer")`` is the tier the nodes send to; its
``load_balancing`` exporter routes by ``traceID`` to the two collectors running
``render_collector_config(pipeline, "sampling")``. In Kubernetes it finds them with the DNS
resolver on the sampling tier's headless Service; loopback processes have no DNS names, so
this test replaces only the resolver: ``static`` with the two sampling collectors' loopback
OTLP gRPC addresses (``tracing_stack.loopback_config``). Routing key, protocol and every
processor are as rendered.
"""

from __future__ import annotations

import urllib.request
from collections.abc import Callable

import pytest
from tracing_stack import (
    SPANS_PER_WRITE,
    RestartableCollector,
    Stack,
    kept_after_markers,
    within,
    workload,
)

pytestmark = pytest.mark.dataplane


def metric(collector: RestartableCollector, name: str) -> float:
    """Sum of a collector's own Prometheus metric over all label sets."""
    url = f"http://{collector.backend.endpoint('metrics')}/metrics"
    with urllib.request.urlopen(url, timeout=10) as resp:  # loopback collector
        text = resp.read().decode()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(name) and line[len(name)] in " {"
    )


def test_no_trace_is_split_or_partially_sampled_across_two_sampling_collectors(
    trace_stack: Callable[..., Stack],
) -> None:
    ratio = 0.5
    spec = {
        "sampling": {"mode": "production", "ratio": ratio, "decisionWait": "8s"},
        "collector": {"replicas": 2},
    }
    stack = trace_stack(
        spec, faults="error:fail/", stagger=1.7
    )  # export timers out of phase, as pods
    assert len(stack.samplers) == 2
    assert "tail_sampling" not in stack.collector.backend.config["processors"]
    assert stack.collector.backend.config["exporters"]["load_balancing"]["routing_key"] == "traceID"
    ops = workload(stack, normal=150, errors=10, slow=0, seed=4)
    kept = kept_after_markers(stack)
    traces = len(ops) + len(stack.nodes)  # every operation and marker is one trace

    # Each trace id reached exactly one sampling collector, and both took a share.
    received = [
        metric(s, "otelcol_processor_tail_sampling_new_trace_id_received_total")
        for s in stack.samplers
    ]
    print(f"two tiers: trace ids per sampling collector {received}, {traces} traces sent")
    assert sum(received) == traces and min(received) > 0
    spans_in = metric(stack.collector, "otelcol_receiver_accepted_spans_total")
    assert (
        sum(metric(s, "otelcol_receiver_accepted_spans_total") for s in stack.samplers) == spans_in
    )

    # What Jaeger shows is whole: all spans of a kept write, and every error trace.
    for op in ops:
        for trace in kept.get(op.key_hash, []):
            assert len(trace.spans) == (1 if op.key.startswith("fail/") else SPANS_PER_WRITE), (
                f"{op.key}: partial trace"
            )
            assert len({s.resource["kvstore.member.id"] for s in trace.spans}) == (
                1 if op.key.startswith("fail/") else 3
            )
    assert all(op.key_hash in kept for op in ops if op.key.startswith("fail/")), (
        "every error trace is kept"
    )
    normal = [op for op in ops if op.key.startswith("norm/")]
    ok, text = within(sum(op.key_hash in kept for op in normal), len(normal), ratio)
    print(f"two tiers, ratio {ratio}: {text}")
    assert ok, text
