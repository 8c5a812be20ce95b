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
    """Zero errors while the collector is down. The p99 is measured and printed against
    baseline runs just before and after; the design goal is "within 10%", but on this shared 2-core CI
    machine, with other test sessions running, two runs of the same load differ by more than
    that on their own, so the assertion is only a generous bound (3x baseline + 20 ms) that
    still catches a node blocking on its exporter."""
    stack = trace_stack(DEVELOPMENT)
    flush(stack, timeout=60)

    before = run_sync(bench(stack, 3.0))
    killer = threading.Timer(1.0, stack.collector.kill)
    killer.start()
    try:
        outage = run_sync(bench(stack, 5.0))
    finally:
        killer.join()
    assert stack.collector.backend.process is not None and not stack.collector.backend.process.alive()
    assert outage.errors == 0 and outage.ops > 0, outage.error_samples

    stack.collector.restart()
    flush(stack, timeout=FLOW_AGAIN)  # a new trace from every node reaches Jaeger
    after = run_sync(bench(stack, 3.0))
    # the baseline is the slower of the runs with the collector up, just before and just after,
    # so a load swing on the shared machine during one of them does not decide the outcome
    baseline = max(before, after, key=lambda r: r.p99_ms)
    print()
    print(table([("collector up, before", before), ("collector killed after 1s", outage),
                 ("collector up, after restart", after)]))
    print(f"p99 outage/baseline: {outage.p99_ms / baseline.p99_ms:.2f}")
    assert before.errors == after.errors == 0 and before.ops > 0 and after.ops > 0
    assert outage.p99_ms < 3 * baseline.p99_ms + 20, (baseline.p99_ms, outage.p99_ms)


@pytest.mark.parametrize("storage", ["memory", "badger"])
def test_jaeger_restart_loses_memory_storage_and_keeps_badger(trace_stack: Callable[..., Stack], storage: str) -> None:
    # failing markers are one-span traces: once Jaeger shows them, nothing of them is in flight
    stack = trace_stack({**DEVELOPMENT, "jaeger": {"storage": {"type": storage}}}, faults="error:fail/")
    backends = stack.jaeger.backend.config["extensions"]["jaeger_storage"]["backends"]
    assert list(backends["traces"]) == [storage]
    client = stack.jaeger.client
    before = flush(stack, "fail/", timeout=60)
    assert all(len(t.spans) == 1 for t in before.values())

    stack.jaeger.kill(graceful=True)  # SIGTERM, as the kubelet stops a pod
    stack.jaeger.restart()
    after = {tid: client.trace(tid) for tid in before}
    if storage == "memory":
        assert after == dict.fromkeys(before), "memory storage starts empty"
    else:
        for tid, trace in before.items():
            kept = after[tid]
            assert kept is not None, f"badger lost trace {tid}"
            # badger keeps every span it had; spans still in flight at the snapshot may add to it
            assert {s.span_id for s in trace.spans} <= {s.span_id for s in kept.spans}
    # and new traces flow into the restarted Jaeger
    flush(stack, timeout=FLOW_AGAIN)
