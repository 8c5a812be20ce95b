"""The lean span path (kvnode.tracing_lean) under SDK pipelines built as opentelemetry-instrument
builds them from the OTEL_* environment: which pipelines it takes over, the sampler's word,
and what reaches an OTLP/HTTP receiver (headers, compression, batches, drops)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from kvharness import wait_until
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SimpleSpanProcessor,
)
from opentelemetry.sdk.trace.sampling import (
    ALWAYS_OFF,
    ALWAYS_ON,
    Decision,
    ParentBased,
    TraceIdRatioBased,
)
from opentelemetry.trace import (
    INVALID_SPAN,
    NonRecordingSpan,
    SpanContext,
    SpanKind,
    TraceFlags,
    TraceState,
)
from tracing_receiver import Receiver

from kvnode import tracing_lean
from kvnode.tracing_held import HeldRemoteSpan, HeldRootSpan
from kvnode.tracing_lean import LeanSpan, LeanTracer, fixed_decisions

DEAD_ENDPOINT = "http://127.0.0.1:9/v1/traces"  # never contacted: these tests flush nothing there


def provider(exporter: Any, *, sampler: Any = ALWAYS_ON, **bsp: Any) -> TracerProvider:
    p = TracerProvider(
        sampler=sampler,
        resource=Resource({"service.name": "orders", "service.instance.id": "orders-1"}),
    )
    p.add_span_processor(BatchSpanProcessor(exporter, **bsp))
    return p


@pytest.fixture
def providers() -> Iterator[list[TracerProvider]]:
    made: list[TracerProvider] = []
    yield made
    for p in made:
        for processor in p._active_span_processor._span_processors:
            if isinstance(processor, tracing_lean.LeanExport):
                processor.queue.clear()  # nothing left for a dead endpoint
        p.shutdown()


def lean(providers: list[TracerProvider], exporter: Any = None, **kw: Any) -> LeanTracer:
    p = provider(exporter or OTLPSpanExporter(endpoint=DEAD_ENDPOINT), **kw)
    providers.append(p)
    tracer = tracing_lean.attach(p, "kvnode")
    assert tracer is not None
    return tracer


@pytest.mark.unit
def test_only_the_otlp_http_batch_pipeline_is_taken_over(providers: list[TracerProvider]) -> None:
    console = provider(ConsoleSpanExporter())
    simple = TracerProvider()
    simple.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(endpoint=DEAD_ENDPOINT)))
    two = provider(OTLPSpanExporter(endpoint=DEAD_ENDPOINT))
    two.add_span_processor(BatchSpanProcessor(ConsoleSpanExporter()))
    providers += [console, simple, two]
    for p in (console, simple, two, trace.NoOpTracerProvider()):
        assert tracing_lean.attach(p, "kvnode") is None
    tracer = lean(
        providers, max_queue_size=100, schedule_delay_millis=60_000, max_export_batch_size=7
    )
    export = tracer.export
    assert (export.max_queue, export.batch_size, export.delay) == (100, 7, 60.0), (
        "the OTEL_BSP_* sizes"
    )
    assert providers[-1]._active_span_processor._span_processors == (export,)


@pytest.mark.unit
def test_the_configured_sampler_decides(providers: list[TracerProvider]) -> None:
    never = lean(
        providers, sampler=ParentBased(TraceIdRatioBased(0.0)), schedule_delay_millis=60_000
    )
    assert never.start("GET /v1/kv/{key}", SpanKind.SERVER, {"a": 1}, None) is INVALID_SPAN
    sampled_parent = SpanContext(7, 8, is_remote=True, trace_flags=TraceFlags(TraceFlags.SAMPLED))
    child = never.start(
        "kvstore.read",
        SpanKind.SERVER,
        {"a": 1},
        trace.set_span_in_context(NonRecordingSpan(sampled_parent)),
    )
    assert isinstance(child, LeanSpan), "parent-based: a sampled remote parent is followed"
    data = child.data()
    assert (data.trace_id, data.parent_id, data.parent_remote, data.kind) == (
        7,
        8,
        True,
        SpanKind.SERVER.value + 1,
    )
    unsampled_parent = SpanContext(7, 8, is_remote=True, trace_flags=TraceFlags(TraceFlags.DEFAULT))
    assert (
        never.start(
            "kvstore.read",
            SpanKind.SERVER,
            None,
            trace.set_span_in_context(NonRecordingSpan(unsampled_parent)),
        )
        is INVALID_SPAN
    )

    always = lean(providers, schedule_delay_millis=60_000)
    root = always.start("PUT /v1/kv/{key}", SpanKind.SERVER, None, None)
    assert isinstance(root, LeanSpan) and root.is_recording()
    ctx = root.get_span_context()
    assert ctx.is_valid and ctx.trace_flags.sampled and ctx.trace_flags.random_trace_id
    local = always.start(
        "kvstore.read_repair", SpanKind.INTERNAL, None, trace.set_span_in_context(root), start_ns=5
    )
    assert isinstance(local, LeanSpan)
    assert (local.data().parent_id, local.data().parent_remote, local.start_ns) == (
        ctx.span_id,
        False,
        5,
    )
    root.end()
    root.end()  # a second end changes nothing
    assert not root.is_recording() and always.export.ended == 1


@pytest.mark.unit
def test_status_follows_the_api_rules(providers: list[TracerProvider]) -> None:
    span = lean(providers, schedule_delay_millis=60_000).start("x", SpanKind.INTERNAL, None, None)
    assert isinstance(span, LeanSpan)
    span.set_status(trace.Status(trace.StatusCode.ERROR, "boom"))
    assert (span.status_code, span.status_message) == (2, "boom")
    span.set_status(trace.StatusCode.UNSET)
    assert span.status_code == 2, "UNSET does not clear ERROR"
    span.set_status(trace.StatusCode.OK, "ignored")
    span.set_status(trace.StatusCode.ERROR, "too late")
    assert (span.status_code, span.status_message) == (1, ""), "OK is final"
    try:
        raise ValueError("bad value")
    except ValueError as exc:
        span.record_exception(exc)
    name, _, attrs = span.events[0]
    assert (
        name == "exception"
        and attrs["exception.type"] == "ValueError"
        and attrs["exception.message"] == "bad value"
    )
    assert "Traceback" in attrs["exception.stacktrace"]


@pytest.mark.dataplane
def test_spans_reach_a_receiver_with_the_configured_headers_and_compression(
    receiver: Receiver,
    providers: list[TracerProvider],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{receiver.port}")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", "authorization=Bearer%20t0ken,x-tenant=shop")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_COMPRESSION", "gzip")
    tracer = lean(
        providers,
        OTLPSpanExporter(),
        schedule_delay_millis=60_000,
        max_export_batch_size=4,
        max_queue_size=10,
    )
    export = tracer.export
    with export.lock:  # the export thread waits: the queue fills up deterministically
        for i in range(14):  # 4 more than the queue holds: the 4 oldest are dropped
            span = tracer.start(f"op-{i}", SpanKind.SERVER, {"i": i}, None)
            if i == 13:
                span.set_status(trace.StatusCode.ERROR, "failed")
            span.end()
        assert export.stats() == {
            "ended": 14,
            "exported": 0,
            "failed": 0,
            "dropped": 4,
            "queued": 10,
        }
    # the woken thread sends the full batches (4 + 4); a flush sends the last 2
    wait_until(lambda: export.exported >= 8 or None, 20, what="the full batches")
    assert providers[-1].force_flush()
    assert export.stats() == {"ended": 14, "exported": 10, "failed": 0, "dropped": 4, "queued": 0}
    assert sorted(s.name for _, s in receiver.spans) == sorted(f"op-{i}" for i in range(4, 14))
    assert [len(r.resource_spans[0].scope_spans[0].spans) for _, r in receiver.requests] == [
        4,
        4,
        2,
    ]
    for headers, _ in receiver.requests:
        assert headers["authorization"] == "Bearer t0ken" and headers["x-tenant"] == "shop"
        assert headers["Content-Encoding"] == "gzip"
    assert all(node == "orders-1" for node, _ in receiver.spans)
    last: Span = next(s for _, s in receiver.spans if s.name == "op-13")
    assert last.status.code == Status.STATUS_CODE_ERROR and last.status.message == "failed"
    assert last.kind == Span.SPAN_KIND_SERVER and last.attributes[0].value.int_value == 13


@pytest.mark.unit
def test_fixed_sampler_answers_are_read_once_and_match_the_sampler() -> None:
    on, off = Decision.RECORD_AND_SAMPLE, Decision.DROP
    assert fixed_decisions(ParentBased(TraceIdRatioBased(0.1))) == (
        None,
        {(True, True): on, (True, False): off, (False, True): on, (False, False): off},
    )
    assert fixed_decisions(ALWAYS_OFF) == (
        off,
        dict.fromkeys([(True, True), (True, False), (False, True), (False, False)], off),
    )
    assert fixed_decisions(TraceIdRatioBased(0.5))[0] is None

    class Custom(ParentBased):
        def should_sample(self, *args: Any, **kwargs: Any) -> Any:
            return super().should_sample(*args, **kwargs)

    assert fixed_decisions(Custom(ALWAYS_ON)) == (
        None,
        dict.fromkeys([(True, True), (True, False), (False, True), (False, False)]),
    )


@pytest.mark.unit
def test_a_followed_parent_passes_its_trace_state_on(providers: list[TracerProvider]) -> None:
    tracer = lean(providers, sampler=ParentBased(ALWAYS_OFF), schedule_delay_millis=60_000)
    parent = SpanContext(
        7,
        8,
        is_remote=True,
        trace_flags=TraceFlags(TraceFlags.SAMPLED),
        trace_state=TraceState([("congo", "t61rcWkgMzE")]),
    )
    span = tracer.start_under("kvstore.replicate", SpanKind.SERVER, {"k": "v"}, parent)
    assert isinstance(span, LeanSpan) and span.data().trace_state == "congo=t61rcWkgMzE"
    assert span.attributes == {"k": "v"}
    assert tracer.start_under("x", SpanKind.SERVER, None, None) is INVALID_SPAN, "root: ALWAYS_OFF"


@pytest.mark.unit
def test_sdk_internals_of_another_version_keep_the_sdk_path(
    providers: list[TracerProvider],
) -> None:
    p = provider(OTLPSpanExporter(endpoint=DEAD_ENDPOINT))
    providers.append(p)
    (bsp,) = p._active_span_processor._span_processors
    batch = bsp._batch_processor
    size = batch._max_export_batch_size
    del batch._max_export_batch_size  # as if the SDK had renamed it
    try:
        assert tracing_lean.attach(p, "kvnode") is None
        assert p._active_span_processor._span_processors == (bsp,), (
            "the SDK's pipeline is left as it was"
        )
    finally:
        batch._max_export_batch_size = size  # its worker thread still reads it


@pytest.mark.unit
def test_retroactive_records_what_the_sampler_drops_into_the_buffer(
    providers: list[TracerProvider],
) -> None:
    """With a RetroBuffer attached, a span the ratio sampler does not keep is recorded anyway,
    not sampled (its traceparent says so: replicas buffer too), and ends into the buffer; a kept
    one goes to the export queue as before."""
    from kvnode.tracing_retro import RetroBuffer

    tracer = lean(providers, sampler=ParentBased(TraceIdRatioBased(0.5)))
    buffer = RetroBuffer(lambda s: None, 1 << 20, 5.0, 0.5, lambda: 0)
    tracer.retro = buffer
    queue = tracer.export.queue
    kinds = {"sampled": 0, "unsampled": 0}
    for _ in range(200):
        span = tracer.start("PUT /v1/kv/{key}", SpanKind.SERVER, {}, None)
        assert isinstance(span, LeanSpan), "every root is recorded"
        sampled = bool(span.flags & TraceFlags.SAMPLED)
        assert sampled == (span.trace_id & TraceIdRatioBased.TRACE_ID_LIMIT < 1 << 63)
        kinds["sampled" if sampled else "unsampled"] += 1
        assert span.traceparent()[0].endswith("-03" if sampled else "-02")  # W3C random flag
        child = tracer.start_under(
            "kvstore.read_repair", SpanKind.INTERNAL, {}, span.get_span_context()
        )
        replica = tracer.continue_remote(
            "kvstore.replicate", SpanKind.SERVER, {}, span.trace_id, span.span_id, span.flags, ""
        )
        for s in (child, replica):
            assert isinstance(s, LeanSpan) and bool(s.flags & TraceFlags.SAMPLED) == sampled
            s.end()
        span.end()
    assert min(kinds.values()) > 50, kinds
    assert sum(piece.count for piece in buffer.slices) == 3 * kinds["unsampled"], "all held"
    assert len(queue) == 3 * kinds["sampled"]
    tracer.retro = None  # without the buffer the sampler's "no" is no span at all
    unsampled_parent = SpanContext(1, 2, True, TraceFlags(0))
    assert tracer.start_under("x", SpanKind.SERVER, {}, unsampled_parent) is INVALID_SPAN


def _held_setup(
    providers: list[TracerProvider], monkeypatch: pytest.MonkeyPatch
) -> tuple[LeanTracer, list[Any]]:
    """A lean tracer sampling at ratio 0 with a retroactive buffer, wired into `telemetry` as
    `telemetry.setup(retro=...)` wires it; returns it and what the buffer exports."""
    from kvnode import telemetry
    from kvnode.tracing_retro import RetroBuffer

    tracer = lean(providers, sampler=ParentBased(TraceIdRatioBased(0)))
    exported: list[Any] = []
    tracer.retro = RetroBuffer(exported.append, 1 << 20, 5.0, 0.5, lambda: 0)
    assert tracer.holds_remote()
    monkeypatch.setattr(telemetry, "LEAN", tracer)
    monkeypatch.setattr(telemetry, "RETRO", tracer.retro)
    monkeypatch.setattr(telemetry, "_lean_span", LeanSpan)
    monkeypatch.setattr(telemetry, "_held_remote", HeldRemoteSpan)
    monkeypatch.setattr(telemetry, "_held_root", HeldRootSpan)
    monkeypatch.setattr(telemetry, "_roots", tracer.roots())
    return tracer, exported


def _replica_attributes(operation: str, key: bytes) -> dict[str, Any]:
    return {"kvstore.operation": operation, "kvstore.key.len": len(key)}


@pytest.mark.unit
def test_a_replica_span_under_an_unsampled_parent_is_held_raw_and_kept_whole(
    providers: list[TracerProvider], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Retroactive sampling: a replica's span under an unsampled parent is held without a span
    object; a KEEP exports it as the full path would have made it (its own span id, the
    caller's ids, its deferred attributes), and one that ends after the KEEP leaves at once."""
    from kvnode import telemetry
    from kvnode.tracing_otlp import AttributeCache, SpanData, encode_span

    tracer, exported = _held_setup(providers, monkeypatch)
    trace_id, parent_id = 0x0AF7651916CD43DD8448EB211C80319C, 0xB7AD6B7169203331
    traceparent = f"00-{trace_id:032x}-{parent_id:016x}-02"
    args = ("replicate", b"k1")
    held = telemetry.replica_span(
        "kvstore.replicate", traceparent, "vendor=x", _replica_attributes, args
    )
    assert type(held) is HeldRemoteSpan and held.is_recording()
    held.end()
    held.end()  # a second end changes nothing
    assert not held.is_recording() and exported == [] and tracer.retro is not None
    assert tracer.retro.held_traces() == 1
    tracer.retro.keep(trace_id)
    (out,) = exported
    assert isinstance(out, SpanData) and out.span_id and out.span_id != parent_id
    # what the full path makes of the same message
    full = tracer.continue_remote(
        "kvstore.replicate", SpanKind.SERVER, {}, trace_id, parent_id, 2, "vendor=x"
    )
    assert isinstance(full, LeanSpan)
    full.defer_attributes(_replica_attributes, args)
    full.start_ns, full.end_ns, full.span_id = out.start_ns, out.end_ns, out.span_id
    assert out.start_ns <= out.end_ns
    cache = AttributeCache()
    assert encode_span(out, cache) == encode_span(full.data(), cache)
    later = telemetry.replica_span("kvstore.replicate", traceparent, "", _replica_attributes, args)
    later.end()
    assert len(exported) == 2 and exported[1].parent_id == parent_id, "kept: leaves at once"
    assert tracer.retro.counts["kept"] == 2


@pytest.mark.unit
def test_a_held_replica_span_that_fails_becomes_a_span_and_keeps_its_trace(
    providers: list[TracerProvider], monkeypatch: pytest.MonkeyPatch
) -> None:
    from kvnode import telemetry

    tracer, exported = _held_setup(providers, monkeypatch)
    traceparent = f"00-{7:032x}-{9:016x}-00"
    first = telemetry.replica_span(
        "kvstore.read", traceparent, "", _replica_attributes, ("read", b"k")
    )
    first.end()
    failing = telemetry.replica_span(
        "kvstore.replicate", traceparent, "", _replica_attributes, ("replicate", b"k")
    )
    assert type(failing) is HeldRemoteSpan
    telemetry.fail(failing, OSError("disk full"), "storage error")
    failing.end()
    assert [s.name for s in exported] == ["kvstore.read", "kvstore.replicate"], "held one too"
    error = exported[1]
    assert isinstance(error, LeanSpan) and error.status_code == 2
    assert error.status_message == "storage error" and error.events[0][0] == "exception"
    assert error.parent_id == 9 and error.trace_id == 7 and error.parent_remote
    assert error.attributes == {"kvstore.operation": "replicate", "kvstore.key.len": 1}
    assert error.start_ns == failing.start_ns


@pytest.mark.unit
@pytest.mark.parametrize(
    "traceparent",
    [
        f"00-{7:032x}-{9:016x}-01",  # sampled: the full path exports it
        f"01-{7:032x}-{9:016x}-00",  # another version: the W3C propagator's business
        f"00-{0:032x}-{9:016x}-00",  # invalid trace id
        f"00-{7:032x}-{0:016x}-00",  # invalid parent id
        f"00-{'g' * 32}-{9:016x}-00",  # not hex
        f"00-{7:032x}-{9:016x}-0g",
        f"00-{7:032x}-{9:016x}-00-",
    ],
)
def test_only_the_common_unsampled_form_is_held_raw(
    providers: list[TracerProvider], monkeypatch: pytest.MonkeyPatch, traceparent: str
) -> None:
    from kvnode import telemetry

    _held_setup(providers, monkeypatch)
    span = telemetry.replica_span(
        "kvstore.read", traceparent, "", _replica_attributes, ("read", b"k")
    )
    assert type(span) is not HeldRemoteSpan


@pytest.mark.unit
def test_without_a_retroactive_buffer_nothing_is_held_raw(
    providers: list[TracerProvider], monkeypatch: pytest.MonkeyPatch
) -> None:
    tracer, _ = _held_setup(providers, monkeypatch)
    tracer.retro = None
    assert not tracer.holds_remote()
    always = lean(providers, sampler=ParentBased(ALWAYS_ON, remote_parent_not_sampled=ALWAYS_ON))
    from kvnode.tracing_retro import RetroBuffer

    always.retro = RetroBuffer(lambda s: None, 1 << 20, 5.0, 0.5, lambda: 0)
    assert not always.holds_remote(), "a sampler that records unsampled parents exports them"


def _operation(threshold_s: float = 0.5) -> tuple[str, dict[str, str], Any, tuple[Any, ...]]:
    """telemetry.server_span's arguments for a client operation without a caller's context."""
    return "PUT /v1/kv/{key}", {"host": "kv"}, _replica_attributes, ("write", b"key")


@pytest.mark.unit
def test_an_unsampled_operation_is_dropped_without_becoming_a_span(
    providers: list[TracerProvider], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Retroactive sampling: the coordinator's SERVER span of an operation the sampler did not
    keep is a stand-in: its traceparent (sampled bit clear) and calls are there, attributes set
    on it are kept, and a fast successful operation is dropped at `finish` without a span."""
    from kvnode import telemetry

    tracer, exported = _held_setup(providers, monkeypatch)
    made: list[Any] = []
    monkeypatch.setattr(LeanSpan, "__init__", lambda *a: made.append(a), raising=True)
    root = telemetry.server_span(*_operation())
    assert type(root) is HeldRootSpan and root.is_recording() and telemetry.undecided(root)
    traceparent, tracestate = telemetry.w3c_headers(root)
    assert traceparent == f"00-{root.trace_id:032x}-{root.span_id:016x}-{root.flags:02x}"
    assert not root.flags & 1 and tracestate == ""
    ctx = root.get_span_context()
    assert (ctx.trace_id, ctx.span_id, ctx.trace_flags.sampled) == (
        root.trace_id,
        root.span_id,
        False,
    )
    telemetry.note_call(root, "b")
    root.set_attribute("http.response.status_code", 204)
    assert telemetry.finish(root) == [] and telemetry.finish(root) == []
    assert not root.is_recording() and made == [] and exported == []
    assert tracer.retro is not None and tracer.retro.counts["dropped"] == 1


@pytest.mark.unit
@pytest.mark.parametrize("outcome", ["slow", "failed", "kept already"])
def test_a_kept_operation_is_exported_as_the_span_it_stood_for(
    providers: list[TracerProvider], monkeypatch: pytest.MonkeyPatch, outcome: str
) -> None:
    """A slow or failed operation (or one whose trace an ERROR span kept on this node) becomes
    a LeanSpan with the stand-in's ids, start, attributes (deferred ones built now) and calls,
    and is exported; the members it called are returned to be told."""
    from kvnode import telemetry

    tracer, exported = _held_setup(providers, monkeypatch)
    assert tracer.retro is not None
    root = telemetry.server_span(*_operation())
    assert type(root) is HeldRootSpan
    telemetry.note_call(root, "b")
    if outcome == "slow":
        root.start_ns -= 600_000_000  # threshold 0.5 s
    elif outcome == "failed":
        telemetry.fail(root, RuntimeError("boom"), "not enough replicas")
    else:
        tracer.retro.keep(root.trace_id)
    telemetry.note_call(root, "c")
    root.set_attribute("http.response.status_code", 503 if outcome == "failed" else 204)
    assert telemetry.finish(root) == ["b", "c"]
    (out,) = exported
    assert isinstance(out, LeanSpan) and not out.flags & 1
    assert (out.trace_id, out.span_id, out.start_ns) == (root.trace_id, root.span_id, root.start_ns)
    assert out.end_ns > out.start_ns and out.parent_id == 0 and out.kind == 2
    assert out.attributes == {
        **_replica_attributes("write", b"key"),
        "http.response.status_code": 503 if outcome == "failed" else 204,
    }
    assert out.status_code == (2 if outcome == "failed" else 0)
    assert tracer.retro.counts["kept"] == 1 and tracer.retro.counts["dropped"] == 0


@pytest.mark.unit
def test_a_child_of_an_unsampled_operation_is_its_child_in_the_buffer(
    providers: list[TracerProvider], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A read repair (or a failed call's CLIENT span) under the stand-in is a child of it: the
    API sees the stand-in as a span."""
    from kvnode import telemetry

    tracer, exported = _held_setup(providers, monkeypatch)
    root = telemetry.server_span(*_operation())
    assert isinstance(root, trace.Span)
    repair = telemetry.start_child("kvstore.read_repair", SpanKind.INTERNAL, {}, root)
    assert isinstance(repair, LeanSpan) and repair.trace_id == root.trace_id
    assert repair.parent_id == root.span_id and not repair.flags & 1
    repair.end()
    assert tracer.retro is not None and tracer.retro.held_traces() == 1 and exported == []
    telemetry.record_failure(
        "kvstore.replicate", SpanKind.CLIENT, {}, root, root.start_ns, OSError("x"), "timeout"
    )
    assert [s.name for s in exported] == ["kvstore.read_repair", "kvstore.replicate"]
    assert telemetry.finish(root) == [] and exported[-1].span_id == root.span_id, "kept"


@pytest.mark.unit
@pytest.mark.parametrize("retro", [False, True])
def test_operation_roots_follow_the_trace_id_ratio_rule(
    providers: list[TracerProvider], retro: bool
) -> None:
    """A client operation's root under a ratio sampler is decided by the SDK's
    TraceIdRatioBased rule on its trace id: sampled ones are LeanSpans with their attributes
    built; the others are stand-ins with retroactive sampling, nothing without it."""
    from kvnode.tracing_retro import RetroBuffer

    tracer = lean(providers, sampler=ParentBased(TraceIdRatioBased(0.5)))
    if retro:
        tracer.retro = RetroBuffer(lambda s: None, 1 << 20, 5.0, 0.5, lambda: 0)
    roots = tracer.roots()
    assert roots is not None
    sampler = TraceIdRatioBased(0.5)
    counts = {"sampled": 0, "other": 0}
    for _ in range(200):
        span = roots.start("GET /v1/kv/{key}", _replica_attributes, ("read", b"k"))
        if isinstance(span, LeanSpan):
            counts["sampled"] += 1
            assert span.flags & 1 and span.attributes == _replica_attributes("read", b"k")
            trace_id = span.trace_id
        else:
            counts["other"] += 1
            if not retro:
                assert span is None
                continue
            assert type(span) is HeldRootSpan and not span.flags & 1
            trace_id = span.trace_id
        expected = sampler.should_sample(None, trace_id, "x").decision.is_sampled()
        assert isinstance(span, LeanSpan) == expected
    assert min(counts.values()) > 50, counts
    always = lean(providers, sampler=ParentBased(ALWAYS_ON))
    assert always.roots() is None, "another sampler: the general start path"
