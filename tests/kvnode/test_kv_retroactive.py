"""Retroactive sampling on real nodes, spans caught by the in-test OTLP receiver (the real
collector and Jaeger: tests/tracing/test_sampling.py). Ratio 0: only the node's own decision
keeps a trace. ~30 s."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from pathlib import Path

import pytest
from kvharness import Harness, Node, http, wait_until
from opentelemetry.proto.trace.v1.trace_pb2 import Span
from test_kv_tracing import attrs, traced_cluster
from tracing_receiver import Receiver

from kvnode.keys import key_hash

pytestmark = pytest.mark.dataplane

PUT = "PUT /v1/kv/{key}"


def retro_cluster(
    kv_cluster: Callable[..., Harness], receiver: Receiver, partitions: Path
) -> Harness:
    h = traced_cluster(
        kv_cluster,
        receiver,
        OTEL_TRACES_SAMPLER="parentbased_traceidratio",
        OTEL_TRACES_SAMPLER_ARG="0",
        KVNODE_TRACE_RETROACTIVE="true",
        KVNODE_TRACE_LATENCY_THRESHOLD="300ms",
        KVNODE_TRACE_BUFFER_AGE="3s",
        KVNODE_FAULTS=f"error:fail/,delay:slow/:400ms,partitions:{partitions}",
    )
    # Every member reaches every peer before the operations under test: a member that tried a
    # peer before it listened fails its calls to it for a short backoff, and such a failed call
    # is an ERROR span that (rightly) keeps a fast operation's trace.
    wait_until(
        lambda: all(n.put(f"warm/{n.id}", b"v", "all")[0] == 204 for n in h.nodes),
        20,
        what="a write at ALL through every member (every peer reachable)",
    )
    return h


def roots(receiver: Receiver) -> dict[str, Span]:
    return {
        str(attrs(s)["kvstore.key.hash"]): s
        for _, s in receiver.find(lambda n, s: s.kind == Span.SPAN_KIND_SERVER and s.name == PUT)
    }


def kh(key: str) -> str:
    return f"{key_hash(key.encode()):016x}"


def members_of(receiver: Receiver, root: Span) -> set[str]:
    return {n for n, _ in receiver.trace(root.trace_id)}


def metric(node: Node, needle: str) -> float:
    text = http("GET", node.url + "/metrics")[2].decode()
    return sum(
        float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(needle)
    )


def test_errors_and_slow_operations_are_kept_whole_and_the_rest_dropped(
    kv_cluster: Callable[..., Harness], receiver: Receiver, tmp_path: Path
) -> None:
    h = retro_cluster(kv_cluster, receiver, tmp_path / "partitions")
    a, b, c = h.nodes
    normal = [f"norm/{i}" for i in range(40)]
    slow = [f"slow/{i}" for i in range(4)]
    failed = [f"fail/{i}" for i in range(4)]
    for i, key in enumerate(normal + slow + failed):
        status = h.nodes[i % 3].put(key, b"v", "quorum")[0]
        assert status == (500 if key.startswith("fail/") else 204), key
    # a caller that head-samples said "not sampled": its slow operation is kept all the same
    unsampled = "slow/unsampled"
    parent = f"00-{secrets.token_hex(16)}-{secrets.token_hex(8)}-00"
    assert (
        a.http("PUT", a.kv_path(unsampled, "quorum"), b"v", headers={"traceparent": parent})[0]
        == 204
    )

    want = {kh(k): k for k in [*slow, unsampled, *failed]}

    def kept_whole() -> bool:
        got = roots(receiver)
        return all(
            h_ in got and (k.startswith("fail/") or len(members_of(receiver, got[h_])) == 3)
            for h_, k in want.items()
        )

    wait_until(kept_whole, 20, what="every slow trace from 3 members and every error trace")
    got = roots(receiver)
    for key in slow + [unsampled]:
        spans = receiver.trace(got[kh(key)].trace_id)
        assert len(spans) == 3 and {n for n, _ in spans} == {a.id, b.id, c.id}, key
    for key in failed:
        assert got[kh(key)].status.code == 2  # ERROR
    tp = got[kh(unsampled)]
    assert tp.trace_id.hex() == parent[3:35] and tp.parent_span_id.hex() == parent[36:52], (
        "the kept trace continues the caller's, whose own spans are absent"
    )
    # the fast ones are dropped: wait for the replicas' buffers to expire them, then count
    wait_until(
        lambda: all(
            metric(n, 'kvnode_trace_buffer_spans_total{outcome="expired"}') > 0 for n in h.nodes
        ),
        15,
        what="replica spans of dropped traces expired",
    )
    assert [k for k in normal if kh(k) in roots(receiver)] == []
    dropped = sum(metric(n, 'kvnode_trace_buffer_spans_total{outcome="dropped"}') for n in h.nodes)
    assert dropped >= len(normal), "each coordinator dropped its own root span at least"
    assert sum(metric(n, "kvnode_trace_keeps_sent_total") for n in h.nodes) >= 2 * (len(slow) + 1)
    assert all(
        metric(n, 'kvnode_trace_buffer_spans_total{outcome="overflow"}') == 0 for n in h.nodes
    )


def test_a_failed_replica_call_keeps_the_trace_with_the_replicas_that_answered(
    kv_cluster: Callable[..., Harness], receiver: Receiver, tmp_path: Path
) -> None:
    partitions = tmp_path / "partitions"
    h = retro_cluster(kv_cluster, receiver, partitions)
    a, b, c = h.nodes
    partitions.write_text(f"{a.id} {c.id}\n")
    wait_until(
        lambda: a.put(f"probe/{secrets.token_hex(4)}", b"v", "all")[0] == 503,
        10,
        what="a's calls to c failing",
    )
    key = "norm/partitioned"
    assert a.put(key, b"v", "quorum")[0] == 204  # a and b make the quorum; c's call failed

    def kept() -> list[tuple[str, Span]] | None:
        root = roots(receiver).get(kh(key))
        if root is None:
            return None
        spans = receiver.trace(root.trace_id)
        return spans if len(spans) >= 3 else None

    spans = wait_until(kept, 20, what="the trace of the write with a failed replica call")
    kinds = sorted((n, Span.SpanKind.Name(s.kind), s.status.code) for n, s in spans)
    assert kinds == [
        (a.id, "SPAN_KIND_CLIENT", 2),  # the failed call to c, recorded by the coordinator
        (a.id, "SPAN_KIND_SERVER", 0),
        (b.id, "SPAN_KIND_SERVER", 0),  # b's span, kept by the coordinator's KEEP
    ]


def test_a_replica_that_fails_keeps_the_trace_with_its_own_error_span(
    kv_cluster: Callable[..., Harness], receiver: Receiver, tmp_path: Path
) -> None:
    """c refuses the record (its size limit is smaller): its ERROR reply is the coordinator's
    ERROR CLIENT span, which keeps the trace; c's own ERROR span leaves c at once."""
    h = retro_cluster(kv_cluster, receiver, tmp_path / "partitions")
    a, b, c = h.nodes
    c.terminate()
    c.extra_env["KVNODE_MAX_VALUE_SIZE"] = "16"
    c.start()
    keys: list[str] = []

    def kept() -> list[tuple[str, Span]] | None:
        # A write sent before a has reconnected to the restarted c goes to a hint, not to c:
        # write another key each round (a and b make the quorum) until c refuses one.
        keys.append(f"norm/too-big-for-c-{len(keys)}")
        assert a.put(keys[-1], b"x" * 100, "quorum")[0] == 204
        for key in keys:
            root = roots(receiver).get(kh(key))
            spans = receiver.trace(root.trace_id) if root is not None else []
            if len(spans) >= 4:
                return spans
        return None

    spans = wait_until(kept, 30, interval=1.0, what="the trace of a write a replica refused")
    kinds = sorted((n, Span.SpanKind.Name(s.kind), s.status.code) for n, s in spans)
    assert kinds == [
        (a.id, "SPAN_KIND_CLIENT", 2),
        (a.id, "SPAN_KIND_SERVER", 0),
        (b.id, "SPAN_KIND_SERVER", 0),
        (c.id, "SPAN_KIND_SERVER", 2),  # the replica's own failure
    ]
