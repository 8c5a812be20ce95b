"""The node's hand-written OTLP encoding (kvnode.tracing_otlp) against the SDK's encoder and
opentelemetry-proto: the same spans give an equal ExportTraceServiceRequest, byte for byte."""

from __future__ import annotations

from typing import Any

import pytest
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags, TraceState

from kvnode.tracing_otlp import (
    AttributeCache,
    SpanData,
    any_value,
    encode_request,
    encode_span,
    key_value,
    resource_and_scope,
    varint,
)

pytestmark = pytest.mark.unit

RESOURCE = {
    "service.name": "orders",
    "service.instance.id": "orders-0",
    "k8s.namespace.name": "shop",
    "telemetry.sdk.language": "python",
    "kvtrace.replicas": 3,
}
SCOPE = ("kvnode", None)
TRACE_ID = 0x4BF92F3577B34DA6A3CE929D0E0E4736
_STATUS = {0: StatusCode.UNSET, 1: StatusCode.OK, 2: StatusCode.ERROR}


def span(**over: Any) -> SpanData:
    base: dict[str, Any] = dict(
        trace_id=TRACE_ID,
        span_id=0x00F067AA0BA902B7,
        parent_id=0,
        parent_remote=False,
        trace_state="",
        name="PUT /v1/kv/{key}",
        kind=SpanKind.SERVER.value + 1,
        start_ns=1_764_000_000_123_456_789,
        end_ns=1_764_000_000_124_000_000,
        attributes={},
        events=(),
        status_code=0,
        status_message="",
    )
    return SpanData(**{**base, **over})


def readable(s: SpanData) -> ReadableSpan:
    """The same span as the SDK would hand its exporter."""
    state = TraceState.from_header([s.trace_state]) if s.trace_state else None
    parent = (
        SpanContext(s.trace_id, s.parent_id, is_remote=s.parent_remote) if s.parent_id else None
    )
    return ReadableSpan(
        name=s.name,
        context=SpanContext(
            s.trace_id, s.span_id, is_remote=False, trace_flags=TraceFlags(1), trace_state=state
        ),
        parent=parent,
        resource=Resource(RESOURCE),
        attributes=dict(s.attributes),
        events=[Event(n, dict(a), t) for n, t, a in s.events],
        kind=SpanKind(s.kind - 1),
        instrumentation_scope=InstrumentationScope(*SCOPE),
        status=Status(_STATUS[s.status_code], s.status_message or None),
        start_time=s.start_ns,
        end_time=s.end_ns,
    )


def ours(spans: list[SpanData], cache: AttributeCache | None = None) -> bytes:
    resource, scope = resource_and_scope(RESOURCE, *SCOPE)
    cache = cache or AttributeCache()
    return encode_request(resource, scope, [encode_span(s, cache) for s in spans])


SHAPES = {
    "root server span, the coordinator's attributes": span(
        attributes={
            "http.request.method": "PUT",
            "http.route": "/v1/kv/{key}",
            "db.operation.name": "write",
            "kvstore.operation": "write",
            "kvstore.consistency": "quorum",
            "kvstore.replicas.required": 2,
            "kvstore.key.hash": "0123456789abcdef",
            "kvstore.replicas.acked": 2,
            "http.response.status_code": 204,
        }
    ),
    "replica span under a remote parent, with trace state": span(
        name="kvstore.replicate",
        parent_id=0xB7AD6B7169203331,
        parent_remote=True,
        trace_state="congo=t61rcWkgMzE,rojo=00f067aa0ba902b7",
        attributes={"kvstore.operation": "replicate", "network.peer.address": "10.0.0.7"},
    ),
    "client span under a local parent, ERROR with an exception event": span(
        name="kvstore.replicate",
        kind=SpanKind.CLIENT.value + 1,
        parent_id=0x1234,
        status_code=2,
        status_message="peer unreachable: connection refused",
        events=(
            (
                "exception",
                1_764_000_000_123_999_999,
                {
                    "exception.type": "kvnode.replication.peers.PeerError",
                    "exception.message": "connection refused",
                    "exception.stacktrace": "Traceback…\n",
                    "exception.escaped": "False",
                },
            ),
        ),
    ),
    "internal span, status OK, every value type": span(
        name="kvstore.anti_entropy ünïcode",
        kind=SpanKind.INTERNAL.value + 1,
        status_code=1,
        attributes={
            "s": "",
            "t": True,
            "f": False,
            "zero": 0,
            "neg": -5,
            "big": 2**62,
            "pi": 3.25,
            "nan_free": -0.0,
            "raw": b"\x00\xff",
            "strs": ["a", "b"],
            "ints": [1, -2],
            "bools": (True, False),
            "floats": [0.5],
            "empty": [],
        },
    ),
    "span ids with leading zero bytes": span(trace_id=1, span_id=1, parent_id=1, name="x"),
}


@pytest.mark.parametrize("name", list(SHAPES))
def test_one_span_encodes_as_the_sdk_does(name: str) -> None:
    s = SHAPES[name]
    expected = encode_spans([readable(s)])
    decoded = ExportTraceServiceRequest.FromString(ours([s]))
    assert decoded == expected
    assert ours([s]) == expected.SerializeToString(deterministic=True)


def test_a_batch_is_one_resource_and_one_scope_in_order() -> None:
    batch = list(SHAPES.values()) * 3
    expected = encode_spans([readable(s) for s in batch])
    cache = AttributeCache(per_key=2)  # small: keys with more values stop being cached on the way
    body = ours(batch, cache)
    assert body == expected.SerializeToString(deterministic=True)
    decoded = ExportTraceServiceRequest.FromString(body)
    assert len(decoded.resource_spans) == 1 and len(decoded.resource_spans[0].scope_spans) == 1
    assert decoded.resource_spans[0].scope_spans[0].scope.name == "kvnode"
    assert [s.name for s in decoded.resource_spans[0].scope_spans[0].spans] == [
        s.name for s in batch
    ]
    assert ours(batch, cache) == body, "a warm cache encodes the same bytes"


def test_the_attribute_cache_tells_equal_values_of_different_types_apart() -> None:
    cache = AttributeCache()
    one_int, one_bool, one_float = (cache.attributes({"v": v}) for v in (1, True, 1.0))
    assert len({one_int, one_bool, one_float}) == 3


def test_varints_and_int_values_match_protobuf() -> None:
    for n in (0, 1, 127, 128, 300, 16383, 16384, 2**32, 2**63 - 1, -1, -128, -(2**63)):
        assert any_value(n) == AnyValue(int_value=n).SerializeToString()
    assert varint(300) == b"\xac\x02" and varint(2**64 - 1) == b"\xff" * 9 + b"\x01"


def test_an_unsupported_attribute_value_is_a_clear_error() -> None:
    with pytest.raises(
        TypeError, match=r"attribute value \{'nested': 1\}: expected str, bool, int, float, bytes"
    ):
        any_value({"nested": 1})


def test_a_key_whose_values_keep_changing_stops_being_cached() -> None:
    cache = AttributeCache(per_key=3)
    for i in range(10):
        encoded = cache.attributes({"kvstore.operation": "read", "kvstore.key.hash": f"{i:016x}"})
        assert encoded == key_value_field("kvstore.operation", "read") + key_value_field(
            "kvstore.key.hash", f"{i:016x}"
        )
    assert cache.values["kvstore.key.hash"] is None, "the key hash is not cached"
    assert list(cache.values["kvstore.operation"] or {}) == [("read", str)], "a repeating value is"


def key_value_field(key: str, value: Any) -> bytes:
    return b"\x4a" + varint(len(key_value(key, value))) + key_value(key, value)
