"""Traces from real nodes to an in-test OTLP/HTTP receiver: one client op = one trace."""

from __future__ import annotations

import gzip
import http.server
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from kvharness import Harness, free_port, wait_until
from kvharness import http as request
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

pytestmark = pytest.mark.dataplane

SECRET_KEY = "customer-42-secret-key"


class Receiver:
    """Collects every span exported over OTLP/HTTP (protobuf), with its node's id."""

    def __init__(self) -> None:
        self.spans: list[tuple[str, Span]] = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                request = ExportTraceServiceRequest()
                request.ParseFromString(body)
                with receiver.lock:
                    for rs in request.resource_spans:
                        attrs = {a.key: a.value.string_value for a in rs.resource.attributes}
                        for ss in rs.scope_spans:
                            receiver.spans += [(attrs.get("service.instance.id", "?"), s) for s in ss.spans]
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.port = free_port("127.0.0.1")
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def trace(self, trace_id: bytes) -> list[tuple[str, Span]]:
        with self.lock:
            return [(node, s) for node, s in self.spans if s.trace_id == trace_id]

    def find(self, predicate: Callable[[str, Span], bool]) -> list[tuple[str, Span]]:
        with self.lock:
            return [(node, s) for node, s in self.spans if predicate(node, s)]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


def attrs(span: Span) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for a in span.attributes:
        v = a.value
        out[a.key] = v.string_value if v.HasField("string_value") else v.int_value if v.HasField("int_value") else str(v)
    return out


def traced_cluster(kv_cluster: Callable[..., Harness], receiver: Receiver | str, **env: str) -> Harness:
    endpoint = receiver if isinstance(receiver, str) else f"http://127.0.0.1:{receiver.port}"
    otel = {
        "OTEL_SDK_DISABLED": "false", "OTEL_SERVICE_NAME": "kvnode", "OTEL_TRACES_EXPORTER": "otlp",
        "OTEL_METRICS_EXPORTER": "none", "OTEL_LOGS_EXPORTER": "none", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
        "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint, "OTEL_BSP_SCHEDULE_DELAY": "100",
        "OTEL_TRACES_SAMPLER": "parentbased_always_on", "OTEL_PROPAGATORS": "tracecontext,baggage",
    }
    return kv_cluster(3, **otel, **env)


def test_one_quorum_write_is_one_trace_across_three_nodes(kv_cluster: Callable[..., Harness], receiver: Receiver) -> None:
    h = traced_cluster(kv_cluster, receiver, KVNODE_FAULTS="error:fail/")
    a, b, c = h.nodes
    assert a.put(SECRET_KEY, b"value", "quorum")[0] == 204

    def coordinator() -> Span | None:
        found = receiver.find(lambda n, s: s.kind == Span.SPAN_KIND_SERVER and s.name == "PUT /v1/kv/{key}")
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
    # the coordinator (a replica itself) applies its own copy in-process: one span per peer call
    replica_calls = [s for _, s in spans if s.parent_span_id == root.span_id]
    assert len(replica_calls) == 2, "one span per replica call"
    assert {attrs(s)["kvstore.operation"] for s in replica_calls} == {"replicate"}
    assert {s.kind for s in replica_calls} == {Span.SPAN_KIND_CLIENT}
    assert {attrs(s)["server.address"] for s in replica_calls} == {b.ip, c.ip}
    for call in replica_calls:
        assert attrs(call)["server.address"] in {b.ip, c.ip}
        assert attrs(call)["network.peer.address"] == attrs(call)["server.address"]
        children = [(n, s) for n, s in spans if s.parent_span_id == call.span_id]
        assert len(children) == 1 and children[0][1].kind == Span.SPAN_KIND_SERVER
        assert children[0][0] in {b.id, c.id} and attrs(children[0][1])["kvstore.operation"] == "replicate"
    assert all(s.parent_span_id in by_id or s is root for _, s in spans)
    for _, s in receiver.find(lambda n, s: True):
        for key, value in attrs(s).items():
            assert SECRET_KEY not in str(value), f"raw key in {s.name} {key}"
        assert SECRET_KEY not in s.name

    # a client that is traced itself: the coordinator span joins the client's trace
    trace_id, parent_id = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    headers = {"traceparent": f"00-{trace_id}-{parent_id}-01"}
    assert request("GET", a.kv_url(SECRET_KEY, "quorum"), headers=headers)[0] == 200
    joined = wait_until(lambda: receiver.find(lambda n, s: s.trace_id.hex() == trace_id and s.parent_span_id.hex() == parent_id),
                        20, what="the span continuing the client's trace")
    assert joined[0][1].kind == Span.SPAN_KIND_SERVER and attrs(joined[0][1])["kvstore.operation"] == "read"

    # a failed write: ERROR status and a recorded exception on the coordinator span
    assert a.put("fail/x", b"v")[0] == 500
    failed = wait_until(
        lambda: receiver.find(lambda n, s: s.kind == Span.SPAN_KIND_SERVER and attrs(s).get("http.response.status_code") == 500),
        20, what="the failed write's span",
    )[0][1]
    assert failed.status.code == Status.STATUS_CODE_ERROR
    assert any(e.name == "exception" for e in failed.events)

    # not enough replicas: 503, ERROR on the coordinator and on the failed replica call
    c.kill()
    assert a.put("unavailable", b"v", "all")[0] == 503
    unavailable = wait_until(
        lambda: receiver.find(lambda n, s: s.kind == Span.SPAN_KIND_SERVER and attrs(s).get("http.response.status_code") == 503),
        20, what="the 503 span",
    )[0][1]
    assert unavailable.status.code == Status.STATUS_CODE_ERROR
    failed_calls = wait_until(
        lambda: [s for _, s in receiver.trace(unavailable.trace_id)
                 if s.parent_span_id == unavailable.span_id and s.status.code == Status.STATUS_CODE_ERROR],
        20, what="the failed replica call",
    )
    assert attrs(failed_calls[0])["server.address"] == c.ip


def test_quorum_write_trace_reaches_jaeger_through_the_collector(
    kv_cluster: Callable[..., Harness], jaeger: Callable[..., Any], collector: Callable[..., Any],
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
    assert len(calls) == 2 and {s.kind for s in calls} == {"CLIENT"}
    for call in calls:
        replica = found.children(call)
        assert len(replica) == 1 and replica[0].kind == "SERVER" and replica[0].name == "kvstore.replicate"
    assert {s.resource.get("service.instance.id") for s in found.spans} == {a.id, b.id, c.id}
    assert all(SECRET_KEY not in str(v) for s in found.spans for v in s.attributes.values())
