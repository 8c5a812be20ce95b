"""Traces from real nodes to an in-test OTLP/HTTP receiver: one client op = one trace."""

from __future__ import annotations

import ast
from collections.abc import Callable
from typing import Any

import pytest
from kvharness import Harness, wait_until
from kvharness import http as request
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status
from tracing_receiver import Receiver

pytestmark = pytest.mark.dataplane

SECRET_KEY = "customer-42-secret-key"


def attrs(span: Span) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for a in span.attributes:
        v = a.value
        out[a.key] = (
            v.string_value
            if v.HasField("string_value")
            else v.int_value
            if v.HasField("int_value")
            else str(v)
        )
    return out


def traced_cluster(
    kv_cluster: Callable[..., Harness], receiver: Receiver | str, count: int = 3, **env: str
) -> Harness:
    endpoint = receiver if isinstance(receiver, str) else f"http://127.0.0.1:{receiver.port}"
    otel = {
        "OTEL_SDK_DISABLED": "false",
        "OTEL_SERVICE_NAME": "kvnode",
        "OTEL_TRACES_EXPORTER": "otlp",
        "OTEL_METRICS_EXPORTER": "none",
        "OTEL_LOGS_EXPORTER": "none",
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
        "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
        "OTEL_BSP_SCHEDULE_DELAY": "100",
        "OTEL_TRACES_SAMPLER": "parentbased_always_on",
        "OTEL_PROPAGATORS": "tracecontext,baggage",
    }
    return kv_cluster(count, **{**otel, **env})


def test_one_quorum_write_is_one_trace_across_three_nodes(
    kv_cluster: Callable[..., Harness], receiver: Receiver
) -> None:
    h = traced_cluster(kv_cluster, receiver, KVNODE_FAULTS="error:fail/", KVNODE_LOG_LEVEL="info")
    a, b, c = h.nodes
    assert a.put(SECRET_KEY, b"value", "quorum")[0] == 204

    def coordinator() -> Span | None:
        found = receiver.find(
            lambda n, s: s.kind == Span.SPAN_KIND_SERVER and s.name == "PUT /v1/kv/{key}"
        )
        return found[0][1] if found else None

    root = wait_until(coordinator, 20, what="the coordinator span")
    assert attrs(root)["kvstore.operation"] == "write"

    def whole_trace() -> list[tuple[str, Span]] | None:
        spans = receiver.trace(root.trace_id)
        servers = {n for n, s in spans if s.kind == Span.SPAN_KIND_SERVER}
        return spans if len(servers) >= 3 else None

    spans = wait_until(whole_trace, 20, what="server spans from 3 nodes")
    by_id = {s.span_id: (n, s) for n, s in spans}
    assert {n for n, _ in spans} == {a.id, b.id, c.id}
    root_attrs = attrs(root)
    assert root.parent_span_id == b""
    assert root_attrs["kvstore.consistency"] == "quorum"
    assert root_attrs["kvstore.replicas.required"] == 2
    assert root_attrs["kvstore.replicas.acked"] >= 2
    assert len(root_attrs["kvstore.key.hash"]) == 16
    assert root_attrs["db.operation.name"] == "write"
    # the coordinator (a replica itself) applies its own copy in-process; each peer call is one
    # span: the replica's SERVER span, a child of the coordinator's span (docs/design.md section 4)
    assert len(spans) == 3, [(n, s.name) for n, s in spans]
    replica_calls = [(n, s) for n, s in spans if s.parent_span_id == root.span_id]
    assert len(replica_calls) == 2, "one span per replica call"
    assert {n for n, _ in replica_calls} == {b.id, c.id}
    for _, call in replica_calls:
        assert call.kind == Span.SPAN_KIND_SERVER and call.name == "kvstore.replicate"
        assert attrs(call)["kvstore.operation"] == "replicate"
        assert attrs(call)[
            "network.peer.address"
        ]  # the coordinator's connection (its source address)
        assert attrs(call)["kvstore.key.hash"] == root_attrs["kvstore.key.hash"]
        assert call.flags & 0x300 == 0x300, "the parent is remote"
        assert root.start_time_unix_nano <= call.start_time_unix_nano <= call.end_time_unix_nano
    assert all(s.parent_span_id in by_id or s is root for _, s in spans)
    for _, s in receiver.find(lambda n, s: True):
        for key, value in attrs(s).items():
            assert SECRET_KEY not in str(value), f"raw key in {s.name} {key}"
        assert SECRET_KEY not in s.name

    # a client that is traced itself: the coordinator span joins the client's trace
    trace_id, parent_id = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    headers = {"traceparent": f"00-{trace_id}-{parent_id}-01"}
    assert request("GET", a.kv_url(SECRET_KEY, "quorum"), headers=headers)[0] == 200
    joined = wait_until(
        lambda: receiver.find(
            lambda n, s: s.trace_id.hex() == trace_id and s.parent_span_id.hex() == parent_id
        ),
        20,
        what="the span continuing the client's trace",
    )
    assert (
        joined[0][1].kind == Span.SPAN_KIND_SERVER
        and attrs(joined[0][1])["kvstore.operation"] == "read"
    )

    # a failed write: ERROR status and a recorded exception on the coordinator span
    assert a.put("fail/x", b"v")[0] == 500
    failed = wait_until(
        lambda: receiver.find(
            lambda n, s: (
                s.kind == Span.SPAN_KIND_SERVER and attrs(s).get("http.response.status_code") == 500
            )
        ),
        20,
        what="the failed write's span",
    )[0][1]
    assert failed.status.code == Status.STATUS_CODE_ERROR
    assert any(e.name == "exception" for e in failed.events)

    # not enough replicas: 503, ERROR on the coordinator; the failed replica call is a CLIENT
    # span recorded after the fact (from the call's start to its failure), ERROR, naming the replica
    c.kill()
    assert a.put("unavailable", b"v", "all")[0] == 503
    unavailable = wait_until(
        lambda: receiver.find(
            lambda n, s: (
                s.kind == Span.SPAN_KIND_SERVER and attrs(s).get("http.response.status_code") == 503
            )
        ),
        20,
        what="the 503 span",
    )[0][1]
    assert unavailable.status.code == Status.STATUS_CODE_ERROR
    failed_calls = wait_until(
        lambda: [
            s
            for _, s in receiver.trace(unavailable.trace_id)
            if s.parent_span_id == unavailable.span_id and s.status.code == Status.STATUS_CODE_ERROR
        ],
        20,
        what="the failed replica call",
    )
    assert len(failed_calls) == 1
    call = failed_calls[0]
    assert call.kind == Span.SPAN_KIND_CLIENT and call.name == "kvstore.replicate"
    assert attrs(call)["server.address"] == c.ip and attrs(call)["kvstore.member.id"] == c.id
    assert call.status.message and any(e.name == "exception" for e in call.events)
    assert unavailable.start_time_unix_nano <= call.start_time_unix_nano < call.end_time_unix_nano
    replica_spans = [
        (n, s)
        for n, s in receiver.trace(unavailable.trace_id)
        if s.kind == Span.SPAN_KIND_SERVER and n != a.id
    ]
    assert {n for n, _ in replica_spans} <= {b.id}, "the killed replica recorded nothing"

    # the node recorded and exported its spans itself (tracing_lean under opentelemetry-instrument):
    # at shutdown it logs its counts, every span ended was exported, none dropped
    assert a.terminate() == 0
    logged = [line for line in a.log.read_text().splitlines() if "kvnode.tracing: spans:" in line]
    assert logged, a.log.read_text()[-2000:]
    stats = ast.literal_eval(logged[-1].split("spans: ", 1)[1])
    assert stats["ended"] == stats["exported"] == len(receiver.find(lambda n, s: n == a.id)) > 0
    assert stats["dropped"] == stats["failed"] == stats["queued"] == 0


def test_quorum_write_trace_reaches_jaeger_through_the_collector(
    kv_cluster: Callable[..., Harness],
    jaeger: Callable[..., Any],
    collector: Callable[..., Any],
) -> None:
    """The same trace through the real pipeline: nodes → OpenTelemetry Collector → Jaeger v2."""
    backend = jaeger()
    pipeline = collector(jaeger=backend)
    a, b, c = traced_cluster(kv_cluster, pipeline.otlp_http).nodes
    trace_id = "0af7651916cd43dd8448eb211c80319c"
    headers = {"traceparent": f"00-{trace_id}-b7ad6b7169203331-01"}
    assert request("PUT", a.kv_url(SECRET_KEY, "quorum"), b"v", headers=headers)[0] == 204
    client = backend.client()

    def complete() -> Any:
        t = client.trace(trace_id)
        if t is None or len({s.resource.get("service.instance.id") for s in t.spans}) < 3:
            return None
        return t

    found = wait_until(complete, 30, interval=0.5, what="the trace in Jaeger")
    coordinator = found.named("PUT /v1/kv/{key}")
    assert len(coordinator) == 1 and coordinator[0].kind == "SERVER"
    assert coordinator[0].attributes["kvstore.consistency"] == "quorum"
    calls = found.children(coordinator[0])
    assert (
        len(calls) == 2
        and {s.kind for s in calls} == {"SERVER"}
        and {s.name for s in calls} == {"kvstore.replicate"}
    )
    assert {s.resource.get("service.instance.id") for s in calls} == {b.id, c.id}
    assert len(found.spans) == 3
    assert {s.resource.get("service.instance.id") for s in found.spans} == {a.id, b.id, c.id}
    assert all(SECRET_KEY not in str(v) for s in found.spans for v in s.attributes.values())
