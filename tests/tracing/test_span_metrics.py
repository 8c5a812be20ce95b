"""Metrics from traces through the rendered stack: the collector's spanmetrics and
servicegraph connectors, computed from every span BEFORE tail sampling, pushed to the
pipeline's Prometheus (its rendered config and alert rules), read back by Jaeger's Monitor tab
(``/api/metrics``) and by PromQL; Prometheus down never blocks traces.

The node's fault switch (``KVNODE_FAULTS=error:fail/``) makes writes of ``fail/`` keys fail
(HTTP 500, one ERROR SERVER span). The secure defaults stay on (TLS and tokens on every hop).
Each test runs about 40-70 s on an idle machine.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

import pytest
from tracing_stack import (
    CLUSTER,
    PUT_OP,
    Op,
    Stack,
    flush,
    kept_after_markers,
    run_ops,
    traceparent,
    within,
    workload,
)

from kvtrace.devstack.pytest_plugin import poll

pytestmark = pytest.mark.dataplane

FAULTS = "error:fail/"
WRITES = (
    f'traces_span_metrics_calls_total{{service_name="{CLUSTER}", span_kind="SPAN_KIND_SERVER", '
    'kvstore_operation="write"'
)
# Ratio 0.5 keeps the binomial check meaningful with 100 writes (within() refuses a vacuous one).
SPEC = {
    "sampling": {"mode": "production", "ratio": 0.5, "decisionWait": "2s"},
    "metrics": {"prometheus": {"scrapeInterval": "2s"}},
}


def counts(stack: Stack) -> tuple[float | None, float | None]:
    """(ok, failed) client writes counted by the spanmetrics connector, from Prometheus."""
    prom = stack.prometheus
    assert prom is not None
    ok = prom.value(f'sum({WRITES}, status_code!="STATUS_CODE_ERROR"}})')
    failed = prom.value(f'sum({WRITES}, status_code="STATUS_CODE_ERROR"}})')
    return ok, failed


def test_span_metrics_count_every_write_while_jaeger_keeps_the_sampled_share(
    trace_stack: Callable[..., Stack],
) -> None:
    n, m = 100, 12
    stack = trace_stack(SPEC, faults=FAULTS, prometheus=True)
    ops = workload(stack, normal=n, errors=m, slow=0, seed=13)
    # The connector flushes every 15 s and pushes over OTLP: poll until the counts are there.
    poll(
        lambda: counts(stack) == (n, m),
        timeout=90,
        interval=1,
        message=f"spanmetrics counts {counts(stack)} == ({n}, {m}) in Prometheus",
    )
    # ...and stay exact over the next flush (no double counting from a second pipeline or tier).
    assert counts(stack) == (n, m)

    # The Monitor tab's API (Jaeger reading the same Prometheus): a non-zero rate for the
    # write operation and an error rate once writes failed.
    client = stack.jaeger.client

    def monitor(metric: str) -> dict[str, float]:
        return {
            s["labels"].get("operation", ""): max(s["points"], default=0.0)
            for s in client.service_metrics(metric, CLUSTER, lookback=dt.timedelta(minutes=5))
        }

    calls = poll(
        lambda: monitor("calls").get(PUT_OP), timeout=60, interval=2, message="SPM call rate of PUT"
    )
    errors = poll(
        lambda: monitor("errors").get(PUT_OP),
        timeout=60,
        interval=2,
        message="SPM error rate of PUT",
    )
    assert calls > 0 and 0 < errors < 1

    # Jaeger holds every error trace and only the sampled share of the rest.
    kept = kept_after_markers(stack)
    normal = [op for op in ops if op.key.startswith("norm/")]
    n_kept = sum(op.key_hash in kept for op in normal)
    ok, text = within(n_kept, len(normal), 0.5)
    print(
        f"spanmetrics counted {n} + {m} writes; Jaeger kept {n_kept} of {n} normal traces ({text})"
    )
    assert ok and n_kept < n, text
    assert all(op.key_hash in kept for op in ops if op.key.startswith("fail/"))


def test_prometheus_down_never_blocks_traces(trace_stack: Callable[..., Stack]) -> None:
    stack = trace_stack(SPEC, faults=FAULTS, prometheus=True)
    assert stack.prometheus is not None
    stack.prometheus.stop()
    ops = []
    for i in range(30):
        trace_id, headers = traceparent()
        ops.append(
            Op(
                stack.nodes[i % 3].url,
                "PUT",
                f"fail/down-{i}",
                b"v",
                headers=headers,
                trace_id=trace_id,
            )
        )
    run_ops(ops)
    assert {op.status for op in ops} == {500}
    flush(stack, "fail/marker-")  # each node's marker after its spans: all of them exported
    missing = [op.trace_id for op in ops if stack.jaeger.client.trace(op.trace_id) is None]
    assert missing == [], f"{len(missing)} error traces missing with Prometheus down"
    collector = stack.collector.backend.process
    assert collector is not None and collector.alive()
    # The metrics exporter did try (and fail) meanwhile: the connectors ran, only their
    # metrics were dropped.
    poll(
        lambda: "otlp_http/metrics" in collector.tail(400),
        timeout=60,
        interval=1,
        message="the collector's log naming the failing otlp_http/metrics exporter",
    )
