"""Tracing backends failing: the KV nodes do not notice, and traces flow again after restarts.

Backends restart on the very same ports and config (``tracing_stack.Restartable``), as a pod
restarted behind its Service would. The pipeline is ``development`` (everything kept), so a
trace's arrival in Jaeger shows the path works without waiting for a sampling decision.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest
from tracing_stack import Stack, flush

from kvnode.bench import BenchConfig, run_sync, table

pytestmark = pytest.mark.dataplane

DEVELOPMENT = {"sampling": {"mode": "development"}}
FLOW_AGAIN = 120  # seconds: the exporters' retry backoff (SDK: up to 10s per batch; collector gRPC reconnect)


def bench(stack: Stack, seconds: float) -> BenchConfig:
    return BenchConfig(endpoints=[n.url for n in stack.nodes], clients=8, duration=seconds, write_ratio=0.5,
                       keys=500, key_prefix="load/", timeout=10)


def test_collector_killed_under_load_then_restarted(trace_stack: Callable[..., Stack]) -> None:
    """Zero errors while the collector is down. The p99 is measured and printed against a
    baseline run just before; the design goal is "within 10%", but on this shared 2-core CI
    machine, with other test sessions running, two runs of the same load differ by more than
    that on their own, so the assertion is only a generous bound (3x baseline + 20 ms) that
    still catches a node blocking on its exporter."""
    stack = trace_stack(DEVELOPMENT)
    flush(stack, timeout=60)

    baseline = run_sync(bench(stack, 4.0))
    killer = threading.Timer(1.0, stack.collector.kill)
    killer.start()
    try:
        outage = run_sync(bench(stack, 5.0))
    finally:
        killer.join()
    assert stack.collector.backend.process is not None and not stack.collector.backend.process.alive()
    print()
    print(table([("collector up (baseline)", baseline), ("collector killed after 1s", outage)]))
    print(f"p99 ratio outage/baseline: {outage.p99_ms / baseline.p99_ms:.2f}")
    assert baseline.errors == 0 and baseline.ops > 0, baseline.error_samples
    assert outage.errors == 0, outage.error_samples
    assert outage.ops > 0
    assert outage.p99_ms < 3 * baseline.p99_ms + 20, (baseline.p99_ms, outage.p99_ms)

    stack.collector.restart()
    flush(stack, timeout=FLOW_AGAIN)  # a new trace from every node reaches Jaeger


@pytest.mark.parametrize("storage", ["memory", "badger"])
def test_jaeger_restart_loses_memory_storage_and_keeps_badger(trace_stack: Callable[..., Stack], storage: str) -> None:
    stack = trace_stack({**DEVELOPMENT, "jaeger": {"storage": {"type": storage}}})
    backends = stack.jaeger.backend.config["extensions"]["jaeger_storage"]["backends"]
    assert list(backends["traces"]) == [storage]
    client = stack.jaeger.client
    before = flush(stack, timeout=60)

    stack.jaeger.kill(graceful=True)  # SIGTERM, as the kubelet stops a pod
    stack.jaeger.restart()
    after = {tid: client.trace(tid) for tid in before}
    if storage == "memory":
        assert after == dict.fromkeys(before), "memory storage starts empty"
    else:
        for tid, trace in before.items():
            kept = after[tid]
            assert kept is not None, f"badger lost trace {tid}"
            assert sorted(s.span_id for s in kept.spans) == sorted(s.span_id for s in trace.spans)
    # and new traces flow into the restarted Jaeger
    flush(stack, timeout=FLOW_AGAIN)
