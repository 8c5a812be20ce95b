"""Tracing backends failing: the KV nodes do not notice, and traces flow again after restarts.

Backends restart on the very same ports and config (``tracing_stack.Restartable``), as a pod
restarted behind its Service would. The pipeline is ``development`` (everything kept), so a
trace's arrival in Jaeger shows the path works without waiting for a sampling decision.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest
from paced_load import Phase, Target, paced_load, pooled, ratio_estimate
from tracing_stack import Stack, flush

pytestmark = pytest.mark.dataplane

DEVELOPMENT = {"sampling": {"mode": "development"}}
FLOW_AGAIN = 120  # seconds: the exporters' retry backoff (SDK: up to 10s per batch; collector gRPC reconnect)
ROUNDS = 6  # each of the two clusters loses its collector in three of them
OPS, RATE = 1500, 150.0  # per cluster and round: 10 s at 150 ops/s, far below what the nodes serve
KILL_AFTER = 0.5  # seconds into the round: the kill itself happens under load
BOUND = 1.10  # "within 10% of the baseline"


def target(stack: Stack, name: str) -> Target:
    return Target(
        name,
        [n.url for n in stack.nodes],
        [n.process.pid for n in stack.nodes if n.process is not None and n.process.pid is not None],
    )


def test_collector_killed_under_load_then_restarted(trace_stack: Callable[..., Stack]) -> None:
    """Zero errors while the collector is down; the nodes' CPU per operation and their p99
    compared with a baseline measured in the same seconds.

    Two identical clusters, each with its own collector and Jaeger, get the same paced load at
    the same moments; in each round one of them loses its collector (SIGKILL, half a second in)
    and the other keeps it. The roles alternate (A/B/A/B), so each cluster is three times the
    baseline and three times the outage; the killed collector is restarted and flushed after
    its round. What is asserted, and why (docs/tracing.md, "Failures"):

    - zero errors, every operation answered, in every phase;
    - the nodes' CPU per operation with the collector down is within 10% of the baseline's
      (all rounds pooled): CPU time does not depend on what else runs on the machine;
    - p99: the geometric mean of the rounds' outage/baseline p99 ratios is not above 1.10 with
      95% confidence (one-sided t on the logs). On a quiet machine that interval is narrow and
      this is the 10% bound itself; with other work on the two cores the rounds' ratios
      spread (0.52 to 1.81 in the runs docs/tracing.md lists, load average 6 to 18) and only a
      clear slowdown fails."""
    stacks = [trace_stack(DEVELOPMENT), trace_stack(DEVELOPMENT)]
    for stack in stacks:
        flush(stack, timeout=60)
    baseline: list[Phase] = []
    outage: list[Phase] = []
    for r in range(ROUNDS):
        victim, other = stacks[r % 2], stacks[1 - r % 2]
        killer = threading.Timer(KILL_AFTER, victim.collector.kill)
        killer.start()
        try:
            phases = paced_load(
                [
                    target(victim, f"{r + 1}: cluster {r % 2 + 1}, collector killed"),
                    target(other, f"{r + 1}: cluster {2 - r % 2}, collector up"),
                ],
                ops=OPS,
                rate=RATE,
                seed=r + 1,
            )
        finally:
            killer.join()
        down, up = phases.values()
        outage.append(down)
        baseline.append(up)
        assert (
            victim.collector.backend.process is not None
            and not victim.collector.backend.process.alive()
        )
        victim.collector.restart()
        flush(victim, timeout=FLOW_AGAIN)  # a new trace from every node reaches Jaeger again

    print()
    print(
        f"{'round: cluster, collector':<36} {'ops':>5} {'errors':>6} {'p50 ms':>7} {'p99 ms':>7} {'node CPU us/op':>14}"
    )
    for phase in [p for pair in zip(outage, baseline) for p in pair]:
        print(
            f"{phase.name:<36} {len(phase.latencies):>5} {len(phase.errors):>6} {phase.quantile(0.5) * 1000:>7.2f} "
            f"{phase.quantile(0.99) * 1000:>7.2f} {phase.cpu_us_per_op:>14.0f}"
        )
    for phase in baseline + outage:
        assert phase.errors == [] and len(phase.latencies) == OPS, (phase.name, phase.errors[:5])
    p99 = ratio_estimate([o.quantile(0.99) / b.quantile(0.99) for o, b in zip(outage, baseline)])
    cpu = sum(p.cpu_seconds for p in outage) / sum(p.cpu_seconds for p in baseline)
    print(
        f"outage/baseline: node CPU per op {cpu:.3f}; p99 per round {', '.join(f'{x:.3f}' for x in p99.ratios)}, "
        f"geometric mean {p99.point:.3f} (95% one-sided bounds {p99.low:.3f} .. {p99.high:.3f}); "
        f"pooled p99 {pooled(outage, 0.99) * 1000:.2f} / {pooled(baseline, 0.99) * 1000:.2f} ms"
    )
    assert cpu <= BOUND, f"the nodes work {cpu:.2f}x as hard per operation with the collector down"
    assert p99.low <= BOUND, f"p99 with the collector down is above {BOUND}x the baseline's: {p99}"


@pytest.mark.parametrize("storage", ["memory", "badger"])
def test_jaeger_restart_loses_memory_storage_and_keeps_badger(
    trace_stack: Callable[..., Stack], storage: str
) -> None:
    # failing markers are one-span traces: once Jaeger shows them, nothing of them is in flight
    stack = trace_stack(
        {**DEVELOPMENT, "jaeger": {"storage": {"type": storage}}}, faults="error:fail/"
    )
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
