"""The sampling modes of docs/design.md section 4, measured in Jaeger behind the rendered collector.

The node's test-only fault switch (``KVNODE_FAULTS``, docs/kvnode.md) makes operations on
``fail/`` keys fail (HTTP 500, ERROR span) and operations on ``slow/`` keys take 800 ms longer
than they would. Every operation writes its own key, so each trace is found in Jaeger by the
``kvstore.key.hash`` of its root span.

Binomial tolerance: with ``ratio`` p and n independent traces the kept count has mean n·p and
standard deviation sqrt(n·p·(1-p)); the tests accept 5 standard deviations (a false alarm
about once in 1.7 million runs). The collector's probabilistic policy hashes the trace id and
the SDK's ratio sampler reads its low 64 bits: both are random per trace, so the binomial
model holds. ``within`` refuses a sample so small that its tolerance would accept none (or
all) of the traces kept, so a ratio assertion cannot pass vacuously.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable

import pytest
from tracing_stack import (
    PUT_OP,
    SPANS_PER_WRITE,
    Op,
    Stack,
    kept_after_markers,
    run_ops,
    within,
    workload,
)

from kvtrace.shared.jaeger_client import Trace
from kvtrace_operator.render.status import sampling_status
from kvtrace_operator.spec import parse_pipeline

pytestmark = pytest.mark.dataplane

FAULTS = "error:fail/,delay:slow/:800ms"
SLOW = 0.8
LOOP_CLOCK_SLACK_MS = 20  # what a loaded event loop's cached clock may lag the wall clock
# The nodes start 1.7s apart, so their batch span processors' export timers are out of phase
# as pods' are, and the spans of one trace leave the three nodes up to one export delay
# (OTEL_BSP_SCHEDULE_DELAY, rendered as a quarter of decisionWait) apart.
DECISION_WAIT = "8s"
STAGGER = 1.7


def test_production_keeps_every_error_and_slow_trace_and_ratio_of_the_rest(
    trace_stack: Callable[..., Stack],
) -> None:
    ratio, threshold = 0.5, 0.5
    spec = {
        "sampling": {
            "mode": "production",
            "ratio": ratio,
            "latencyThreshold": "500ms",
            "decisionWait": DECISION_WAIT,
        }
    }
    stack = trace_stack(spec, faults=FAULTS, stagger=STAGGER)
    assert {n.env["OTEL_TRACES_SAMPLER"] for n in stack.nodes} == {"parentbased_always_on"}
    ops = workload(stack, normal=200, errors=20, slow=10, seed=1)
    assert_errors_slow_and_ratio_kept(
        "production", ops, kept_after_markers(stack), ratio, threshold
    )


def assert_errors_slow_and_ratio_kept(
    mode: str, ops: list[Op], kept: dict[str, list[Trace]], ratio: float, threshold: float
) -> list[Op]:
    """Every error trace kept (the coordinator's one ERROR span: the fault fails it before any
    replica call), every slow trace kept whole from the three members, ``ratio`` of the fast
    ones within the binomial bound, every kept trace whole. Returns the fast operations."""
    errors = [op for op in ops if op.key.startswith("fail/")]
    slow = [op for op in ops if op.key.startswith("slow/")]
    assert [op.key for op in errors if op.key_hash not in kept] == [], "every error trace is kept"
    assert [op.key for op in slow if op.key_hash not in kept] == [], "every slow trace is kept"
    for op in errors:
        (trace,) = kept[op.key_hash]
        assert [s.status_code for s in trace.spans] == ["ERROR"]
    for op in slow:
        (trace,) = kept[op.key_hash]
        assert len(trace.spans) == SPANS_PER_WRITE
        assert len({s.resource["kvstore.member.id"] for s in trace.spans}) == 3
        # the delay is an asyncio sleep: uvloop times it from the loop's cached clock, read
        # when the iteration began, so by the wall clock it may end a little early
        assert max(s.duration_ms for s in trace.spans) >= SLOW * 1000 - LOOP_CLOCK_SLACK_MS

    # Normal operations that took a good part of the threshold might be kept by the latency
    # rule (the trace also spans the third replica's late answer): count only the fast ones.
    normal = [op for op in ops if op.key.startswith("norm/")]
    fast = [op for op in normal if op.seconds < threshold / 2]
    assert len(fast) >= 50, f"only {len(fast)} of {len(normal)} normal writes were fast"
    n_kept = sum(op.key_hash in kept for op in fast)
    ok, text = within(n_kept, len(fast), ratio)
    print(
        f"{mode} ratio {ratio}: {text}; errors {len(errors)}/{len(errors)}, slow {len(slow)}/{len(slow)} kept"
    )
    assert ok, text
    for op in normal:
        for trace in kept.get(op.key_hash, []):
            assert len(trace.spans) == SPANS_PER_WRITE, "a kept trace is whole"
    return fast


def test_a_short_decision_wait_keeps_traces_from_three_nodes_whole(
    trace_stack: Callable[..., Stack],
) -> None:
    """decisionWait 1.4s, the shortest validation accepts with the default latencyThreshold
    (500ms) and batch timeout (200ms), well below the SDK's own 5s export delay: the rendered
    environment exports every 350ms, so every slow trace reaches the sampler whole before its
    decision. With ratio 0 only the latency policy keeps a normal trace, and it judges a trace
    by the spans it holds: had the sampler decided on the replicas' spans alone (a few ms
    each), the trace would be dropped, or kept without them once the root arrived (with the
    SDK's 5s delay forced, see docs/tracing.md)."""
    spec = {
        "sampling": {
            "mode": "production",
            "ratio": 0.0,
            "latencyThreshold": "500ms",
            "decisionWait": "1.4s",
        }
    }
    stack = trace_stack(spec, faults=FAULTS, stagger=STAGGER)
    assert {n.env["OTEL_BSP_SCHEDULE_DELAY"] for n in stack.nodes} == {"350"}
    ops = workload(stack, normal=30, errors=0, slow=60, seed=5)
    kept = kept_after_markers(stack)

    slow = [op for op in ops if op.key.startswith("slow/")]
    partial = {
        op.key: sorted(
            s.resource["kvstore.member.id"] for t in kept.get(op.key_hash, []) for s in t.spans
        )
        for op in slow
        if [len(t.spans) for t in kept.get(op.key_hash, [])] != [SPANS_PER_WRITE]
    }
    print(
        f"decisionWait 1.4s, export delay 350ms: {len(slow) - len(partial)} of {len(slow)} slow traces kept whole"
    )
    assert partial == {}, (
        f"slow traces missing or not whole (members of their kept spans): {partial}"
    )
    for op in slow:
        (trace,) = kept[op.key_hash]
        assert len({s.resource["kvstore.member.id"] for s in trace.spans}) == 3
    fast = [
        op.key
        for op in ops
        if op.key.startswith("norm/") and op.seconds < 0.25 and op.key_hash in kept
    ]
    assert fast == [], "ratio 0 keeps no fast trace"


def test_development_keeps_everything(trace_stack: Callable[..., Stack]) -> None:
    stack = trace_stack({"sampling": {"mode": "development"}}, faults=FAULTS)
    ops = workload(stack, normal=60, errors=10, slow=0, seed=2)
    kept = kept_after_markers(stack)
    missing = [op.key for op in ops if op.key_hash not in kept]
    print(f"development: kept {len(ops) - len(missing)} of {len(ops)}")
    assert missing == []
    assert all(
        len(kept[op.key_hash][0].spans) == (1 if op.key.startswith("fail/") else SPANS_PER_WRITE)
        for op in ops
    )


def test_head_sampling_keeps_about_ratio_of_everything_errors_included(
    trace_stack: Callable[..., Stack],
) -> None:
    ratio = 0.5
    spec = {"sampling": {"mode": "head", "ratio": ratio}}
    note = sampling_status(parse_pipeline(spec))["note"]
    assert "errors" in note and "sampled" in note and "not every error is kept" in note, note
    stack = trace_stack(spec, faults=FAULTS)
    assert {
        (n.env["OTEL_TRACES_SAMPLER"], n.env["OTEL_TRACES_SAMPLER_ARG"]) for n in stack.nodes
    } == {("parentbased_traceidratio", "0.5")}
    ops = workload(stack, normal=200, errors=40, slow=0, seed=3)
    kept = kept_after_markers(stack)

    n_kept = sum(op.key_hash in kept for op in ops)
    ok, text = within(n_kept, len(ops), ratio)
    errors = [op for op in ops if op.key.startswith("fail/")]
    kept_errors = sum(op.key_hash in kept for op in errors)
    print(f"head ratio {ratio}: {text}; errors kept {kept_errors} of {len(errors)}")
    assert ok, text
    # P(all 40 kept) = 2^-40: head sampling decides at the root, before the error happens
    assert 0 < kept_errors < len(errors)
    for op in ops:  # the replicas follow the root's decision (parent-based): kept traces are whole
        for trace in kept.get(op.key_hash, []):
            assert len(trace.spans) == (1 if op.key.startswith("fail/") else SPANS_PER_WRITE)


def test_retroactive_keeps_every_error_and_slow_trace_and_ratio_of_the_rest(
    trace_stack: Callable[..., Stack],
) -> None:
    """The production assertions, with the decision in the KV nodes: no tail sampler. The ratio
    is the SDK's trace-id rule, so every kept ordinary trace's id is under the bound."""
    ratio, threshold = 0.5, 0.5
    spec = {"sampling": {"mode": "retroactive", "ratio": ratio, "latencyThreshold": "500ms"}}
    stack = trace_stack(spec, faults=FAULTS, stagger=STAGGER)
    assert {
        (n.env["OTEL_TRACES_SAMPLER"], n.env["OTEL_TRACES_SAMPLER_ARG"]) for n in stack.nodes
    } == {("parentbased_traceidratio", "0.5")}
    ops = workload(stack, normal=200, errors=20, slow=10, seed=6)
    kept = kept_after_markers(stack)
    fast = assert_errors_slow_and_ratio_kept("retroactive", ops, kept, ratio, threshold)
    bound = int(ratio * 2**64)
    for op in fast:  # the SDK's TraceIdRatioBased rule: the low 64 bits under the bound
        for trace in kept.get(op.key_hash, []):
            if int(trace.trace_id[16:], 16) >= bound:
                # Kept over the bound only by the latency rule: the coordinator's own span
                # took the threshold (its clock, not the client's, decides).
                (root,) = [s for s in trace.spans if s.name == PUT_OP]
                assert root.duration_ms >= threshold * 1000, (
                    f"{op.key}: kept above the ratio bound, root span {root.duration_ms:.0f} ms"
                )


def test_retroactive_keeps_failed_and_slow_operations_under_an_unsampled_parent(
    trace_stack: Callable[..., Stack],
) -> None:
    """A caller that head-samples said "not sampled": the KV node keeps its failed and slow
    operations anyway, as partial traces (the caller's trace id and parent span id, the
    caller's own span absent); its fast ones are dropped (ratio 0 keeps nothing else)."""
    spec = {"sampling": {"mode": "retroactive", "ratio": 0.0, "latencyThreshold": "500ms"}}
    stack = trace_stack(spec, faults=FAULTS, stagger=STAGGER)
    urls = [n.url for n in stack.nodes]
    ops = []
    for i, prefix in enumerate(["norm"] * 30 + ["fail"] * 6 + ["slow"] * 6):
        trace_id, parent = secrets.token_hex(16), secrets.token_hex(8)
        headers = {"traceparent": f"00-{trace_id}-{parent}-00"}
        ops.append(
            Op(urls[i % 3], "PUT", f"{prefix}/np-{i}", b"v", headers=headers, trace_id=trace_id)
        )
    run_ops(ops, concurrency=8)
    assert [op for op in ops if op.status != (500 if op.key.startswith("fail/") else 204)] == []
    kept = kept_after_markers(stack)

    fast = [op for op in ops if op.key.startswith("norm/") and op.seconds < 0.25]
    assert len(fast) >= 20, f"only {len(fast)} of 30 normal writes were fast"
    for op in ops:
        traces = kept.get(op.key_hash, [])
        if op.key.startswith("norm/"):  # a slow one (a loaded machine) is kept, rightly
            # and so is one whose call to a replica failed (its ERROR CLIENT span), as happens
            # to the first calls while the members' connections come up
            failed_call = any(s.status_code == "ERROR" for t in traces for s in t.spans)
            assert op not in fast or traces == [] or failed_call, (
                f"{op.key}: fast, unsampled parent: dropped; kept "
                f"{[(s.name, s.status_code) for t in traces for s in t.spans]}"
            )
            continue
        (trace,) = traces
        assert trace.trace_id == op.trace_id, "the caller's trace, continued"
        (root,) = [s for s in trace.spans if s.name == PUT_OP]
        assert root.parent_span_id == op.headers["traceparent"][36:52], (
            "the root's parent is the caller's span, absent from Jaeger"
        )
        members = {s.resource["kvstore.member.id"] for s in trace.spans}
        assert len(members) == (1 if op.key.startswith("fail/") else 3), (op.key, members)
