"""Retroactive sampling's buffer (kvnode.tracing_retro) and its KEEP frame, as pure functions:
what is kept, dropped, expired and evicted, and the counts on /metrics."""

from __future__ import annotations

import gc
import itertools
import tracemalloc
from typing import Any

import pytest
from opentelemetry.trace import SpanKind

from kvnode.metrics import Metrics
from kvnode.storage import Record
from kvnode.tracing_lean import LeanSpan
from kvnode.tracing_otlp import AttributeCache, SpanData, encode_span
from kvnode.tracing_retro import KEPT_BYTES, REMOTE_BYTES, SLICES, RetroBuffer, record_size
from kvnode.transport import frames
from kvnode.transport.peer_server import _peer_attributes

pytestmark = pytest.mark.unit

MS = 1_000_000
_span_ids = itertools.count(1)


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000 * MS

    def __call__(self) -> int:
        return self.now


def make(max_bytes: int = 1 << 20, age_s: float = 5.0) -> tuple[RetroBuffer, list[Any], Clock]:
    exported: list[Any] = []
    clock = Clock()
    return RetroBuffer(exported.append, max_bytes, age_s, 0.5, clock), exported, clock


def span(buf: RetroBuffer, clock: Clock, trace_id: int, ms: float = 1, **kw: Any) -> LeanSpan:
    """An undecided span of `trace_id` that started `ms` before the clock (not ended); by
    default a replica's, its attributes deferred as the peer server defers them."""
    s = LeanSpan(
        buf,
        kw.get("name", "kvstore.replicate"),
        kw.get("kind", SpanKind.SERVER),
        trace_id,
        next(_span_ids),
        0,
        "",
        kw.get("parent_id", 0x1234),
        True,
        kw.get("attributes", {}),
        clock.now - int(ms * MS),
    )
    if "attributes" not in kw:
        s.defer_attributes(
            _peer_attributes, ("replicate", "127.0.0.2", f"key-{trace_id}".encode(), 1)
        )
    return s


def ended(buf: RetroBuffer, clock: Clock, trace_id: int, ms: float = 1, **kw: Any) -> LeanSpan:
    s = span(buf, clock, trace_id, ms, **kw)
    s.end(clock.now)
    return s


def root(buf: RetroBuffer, clock: Clock, trace_id: int, ms: float, error: bool = False) -> LeanSpan:
    """The coordinator's SERVER span, closed as telemetry.finish closes it (never held)."""
    s = span(buf, clock, trace_id, ms, name="PUT /v1/kv/{key}", parent_id=0, attributes={})
    if error:
        s.status_code, s.status_message = 2, "not enough replicas"
    assert s.close(clock.now)
    return s


def test_a_fast_successful_operation_is_dropped_unexported() -> None:
    buf, exported, clock = make(age_s=1.0)
    repair = ended(buf, clock, 7, name="kvstore.read_repair")  # a child ending before the root
    coordinator = root(buf, clock, 7, ms=3)
    coordinator.note_call("b")
    assert buf.decide(coordinator) == []
    assert exported == []
    assert buf.counts["dropped"] == 1, "the root is dropped unheld"
    assert buf.held_traces() == 1, "the held child waits for its age"
    clock.now += 1200 * MS
    buf.expire()
    assert buf.counts["expired"] == 1 and buf.held_traces() == 0 and buf.bytes == 0
    assert repair.end_ns and exported == []


def test_a_slow_operation_is_kept_with_every_member_it_called() -> None:
    buf, exported, clock = make()
    repair = span(buf, clock, 9, name="kvstore.read_repair")
    repair.note_call("d")
    repair.end(clock.now)  # held with the member it called
    coordinator = root(buf, clock, 9, ms=500)  # exactly the threshold: kept
    for member in ("b", "c", "b"):  # c called, b called twice: told once
        coordinator.note_call(member)
    assert buf.decide(coordinator) == ["b", "c", "d"]
    assert [getattr(s, "span_id", None) for s in exported] == [repair.span_id, coordinator.span_id]
    assert isinstance(exported[0], SpanData) and exported[1] is coordinator
    late = ended(buf, clock, 9)  # ends after the decision (a late answer): leaves at once
    assert exported[-1] is late
    assert buf.counts["kept"] == 3 and buf.counts["dropped"] == 0
    assert buf.bytes == KEPT_BYTES, "only the kept trace's id is remembered"


def test_a_held_span_is_exported_exactly_as_the_span_itself() -> None:
    buf, exported, clock = make()
    held = span(buf, clock, 21, ms=2)
    held.add_event("retry", {"attempt": 2}, clock.now - MS)
    held.set_attribute("kvstore.replicas.acked", 2)
    held.end(clock.now)
    buf.keep(21)
    (out,) = exported
    held.materialize()
    assert held.attributes == {
        **_peer_attributes("replicate", "127.0.0.2", b"key-21", 1),
        "kvstore.replicas.acked": 2,
    }
    cache = AttributeCache()
    assert encode_span(out, cache) == encode_span(held, cache)


def test_deferred_attributes_are_built_only_for_spans_that_leave() -> None:
    buf, exported, clock = make(age_s=1.0)
    built: list[str] = []

    def build(name: str) -> dict[str, Any]:
        built.append(name)
        return {"kvstore.operation": name, "kvstore.consistency": "quorum"}

    dropped = span(buf, clock, 31, attributes={}, name="GET /v1/kv/{key}")
    dropped.defer_attributes(build, ("read",))
    assert dropped.close(clock.now)
    assert buf.decide(dropped) == []
    held = span(buf, clock, 32, attributes={})
    held.defer_attributes(build, ("replicate",))
    held.end(clock.now)
    clock.now += 1200 * MS
    buf.expire()
    assert built == [] and buf.counts["dropped"] == buf.counts["expired"] == 1
    slow = span(buf, clock, 33, ms=600, attributes={}, name="PUT /v1/kv/{key}")
    slow.defer_attributes(build, ("write",))
    slow.set_attribute("kvstore.consistency", "all")  # set on the span: wins
    assert slow.close(clock.now)
    buf.decide(slow)
    assert built == ["write"]
    assert exported == [slow]
    assert slow.attributes == {"kvstore.operation": "write", "kvstore.consistency": "all"}


def test_an_error_span_leaves_at_once_and_keeps_its_trace() -> None:
    buf, exported, clock = make()
    first = ended(buf, clock, 5)
    assert exported == []
    failed = span(buf, clock, 5, name="kvstore.replicate", kind=SpanKind.CLIENT)
    failed.status_code = 2  # e.g. the CLIENT span of a failed replica call
    failed.end(clock.now)
    assert [s.span_id for s in exported] == [first.span_id, failed.span_id], "held ones too"
    coordinator = root(buf, clock, 5, ms=2)
    coordinator.note_call("c")  # noted before the root ended, in a real coordinator
    assert buf.decide(coordinator) == ["c"], "the coordinator still tells the replicas"
    assert exported[-1] is coordinator


def test_a_failed_root_keeps_the_trace() -> None:
    buf, exported, clock = make()
    coordinator = root(buf, clock, 3, ms=1, error=True)
    coordinator.note_call("b")
    assert buf.decide(coordinator) == ["b"]
    assert exported == [coordinator]


def test_a_keep_from_the_coordinator_exports_held_and_later_spans() -> None:
    buf, exported, clock = make()
    held = ended(buf, clock, 11)
    buf.keep(11)
    assert [s.span_id for s in exported] == [held.span_id]
    later = ended(buf, clock, 11)
    buf.keep(12)  # before the replica's span of trace 12 ended (a slow third replica)
    early = ended(buf, clock, 12)
    assert exported[1:] == [later, early]
    assert buf.keeps_received == 2


def test_a_kept_trace_is_forgotten_after_the_age() -> None:
    buf, exported, clock = make(age_s=1.0)
    buf.keep(13)
    assert buf.bytes == KEPT_BYTES and buf.stats()["buffer_traces"] == 1
    clock.now += 1200 * MS
    buf.expire()
    assert buf.bytes == 0 and buf.kept == {}
    ended(buf, clock, 13)
    assert exported == [], "a span of it after the age is undecided again"


def test_undecided_spans_are_held_at_least_the_age_and_at_most_a_slice_more() -> None:
    buf, exported, clock = make(age_s=1.0)
    ended(buf, clock, 1)
    ended(buf, clock, 1)
    clock.now += 999 * MS
    ended(buf, clock, 2)  # a later span advances the buffer: trace 1 is not old enough yet
    assert buf.held_traces() == 2 and buf.counts["expired"] == 0
    clock.now += 1000 * MS // SLICES + 2 * MS
    ended(buf, clock, 3)
    assert buf.counts["expired"] == 2 and buf.held_traces() == 2
    assert exported == []
    buf.keep(1)  # a KEEP after expiry finds nothing: the spans are gone, nothing breaks
    assert exported == []


def test_a_full_buffer_evicts_the_oldest_slices_and_counts_them() -> None:
    per_span = record_size({}, (_peer_attributes, ()))
    buf, _, clock = make(max_bytes=40 * per_span, age_s=8.0)  # slices of one second
    for trace_id in range(1, 101):  # 10 spans a second for 10 s: 4 s of them fit
        ended(buf, clock, trace_id)
        assert buf.bytes <= 40 * per_span
        clock.now += 100 * MS
    assert buf.counts["overflow"] + buf.counts["expired"] + 10 * len(buf.slices) >= 100
    assert buf.counts["overflow"] >= 60 and buf.counts["expired"] == 0
    held = {t for piece in buf.slices for t in piece.spans}
    assert held and max(held) == 100 and min(held) > 60, "the newest traces stay"


def test_one_burst_larger_than_the_buffer_evicts_its_slice_whole() -> None:
    per_span = record_size({}, (_peer_attributes, ()))
    buf, _, clock = make(max_bytes=10 * per_span)
    for trace_id in range(1, 26):  # all in one slice: the 11th and the 22nd span overflow it
        ended(buf, clock, trace_id)
        assert buf.bytes <= 10 * per_span
    assert buf.counts["overflow"] == 22 and buf.held_traces() == 3
    assert {t for piece in buf.slices for t in piece.spans} == {23, 24, 25}


def test_a_held_span_is_one_untracked_object_for_the_garbage_collector() -> None:
    """A span held through the full path (a LeanSpan ended into the buffer: a read repair with
    the members it called, a replica's span with its deferred attributes) becomes one tuple
    that refers only to numbers, strings, bytes and tuples or dicts of them: the collector
    untracks it at its first pass, as a raw replica span's."""
    buf, _, clock = make()
    spans = [span(buf, clock, trace_id) for trace_id in range(1, 1001)]
    for s in spans[::2]:
        s.note_call("b")
    span_type = type(spans[0])
    gc.collect()
    alive_before = sum(1 for o in gc.get_objects() if type(o) is span_type)
    for s in spans:
        s.end(clock.now)
    del spans, s
    gc.collect(0)
    # Counted by type and by record, not as the process's whole object count: in a full run
    # other tests' threads allocate meanwhile.
    alive_after = sum(1 for o in gc.get_objects() if type(o) is span_type)
    assert alive_after <= alive_before - 1000, (alive_before, alive_after)
    held = list(buf.current.spans.values())
    assert len(held) == 1000 and all(type(r) is tuple for r in held)
    assert held[0][11] == "b" and held[1][11] == "", "the members called, in one string"
    assert not any(gc.is_tracked(r) for r in held), "a held record stays tracked"
    buf.keep(2)  # the deferred attributes are still built from the record
    assert buf.export.__self__[-1].attributes == _peer_attributes(  # type: ignore[attr-defined]
        "replicate", "127.0.0.2", b"key-2", 1
    )


def test_the_bytes_estimate_covers_what_held_spans_take() -> None:
    buf, _, clock = make(max_bytes=1 << 30, age_s=60.0)
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    for trace_id in range(1, 2001):  # a replica's spans: what outlives them is what is held
        ended(buf, clock, trace_id)
    gc.collect()
    after = tracemalloc.take_snapshot()
    tracemalloc.stop()
    measured = sum(stat.size_diff for stat in after.compare_to(before, "filename"))
    assert 0.8 * buf.bytes <= measured <= 1.25 * buf.bytes, (measured, buf.bytes)


def test_buffer_counts_reach_metrics() -> None:
    buf, _, clock = make()
    buf.decide(root(buf, clock, 1, ms=1))
    ended(buf, clock, 2)
    metrics = Metrics()
    metrics.span_export(buf.stats)
    text = metrics.render()
    assert 'kvnode_trace_buffer_spans_total{outcome="dropped"} 1.0' in text
    assert 'kvnode_trace_buffer_spans_total{outcome="overflow"} 0.0' in text
    assert f"kvnode_trace_buffer_bytes {float(record_size({}, (_peer_attributes, ())))}" in text
    assert "kvnode_trace_buffer_traces 1.0" in text


def test_keep_frame_round_trips_and_rejects_bad_bodies() -> None:
    trace_id = 0x0AF7651916CD43DD8448EB211C80319C
    body = frames.encode_trace_id(trace_id)
    assert len(body) == 16 and frames.decode_trace_id(body) == trace_id
    payload = frames.encode(42, frames.KEEP, body)[4:]
    msg = frames.decode(payload)
    assert (msg.request_id, msg.type, frames.decode_trace_id(msg.body)) == (
        42,
        frames.KEEP,
        trace_id,
    )
    for bad in (b"", b"\x01" * 15, b"\x01" * 17, bytes(16)):
        with pytest.raises(frames.ProtocolError):
            frames.decode_trace_id(bad)


def test_keep_needs_version_3_and_this_build_still_speaks_2() -> None:
    assert frames.PROTOCOL == (2, 3) and frames.KEEP_VERSION == 3
    assert frames.negotiate(frames.PROTOCOL, (2, 2)) == 2  # the previous build: no KEEP sent
    assert frames.negotiate(frames.PROTOCOL, (1, 2)) == 2
    assert frames.negotiate(frames.PROTOCOL, (1, 1)) is None


def test_expire_frees_an_idle_buffer() -> None:
    buf, _, clock = make(age_s=1.0)
    ended(buf, clock, 1)
    buf.expire()
    assert buf.held_traces() == 1, "younger than the age"
    clock.now += 1200 * MS
    buf.expire()
    assert buf.held_traces() == 0 and buf.bytes == 0 and buf.counts["expired"] == 1


def hold_raw(buf: RetroBuffer, clock: Clock, trace_id: int) -> None:
    """A replica's span held raw, as `tracing_held.HeldRemoteSpan.end` holds it."""
    args = ("replicate", "127.0.0.2", f"key-{trace_id}".encode(), 1)
    buf.hold_remote(
        trace_id, 0x1234, "", "kvstore.replicate", clock.now - MS, clock.now, _peer_attributes, args
    )


def test_the_bytes_estimate_covers_what_raw_replica_spans_take() -> None:
    buf, _, clock = make(max_bytes=1 << 30, age_s=60.0)
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    for trace_id in range(1, 2001):
        hold_raw(buf, clock, trace_id)
    gc.collect()
    after = tracemalloc.take_snapshot()
    tracemalloc.stop()
    measured = sum(stat.size_diff for stat in after.compare_to(before, "filename"))
    assert buf.bytes == 2000 * REMOTE_BYTES
    assert 0.8 * buf.bytes <= measured <= 1.25 * buf.bytes, (measured, buf.bytes)


def test_raw_replica_spans_expire_overflow_and_are_kept_like_the_others() -> None:
    buf, exported, clock = make(max_bytes=10 * REMOTE_BYTES, age_s=1.0)
    for trace_id in range(1, 13):  # the 11th overflows the only slice: all 11 go
        hold_raw(buf, clock, trace_id)
    assert buf.counts["overflow"] == 11 and buf.held_traces() == 1
    assert buf.bytes == REMOTE_BYTES
    buf.keep(12)
    (out,) = exported
    assert (out.trace_id, out.parent_id, out.parent_remote, out.kind) == (12, 0x1234, True, 2)
    assert out.attributes == _peer_attributes("replicate", "127.0.0.2", b"key-12", 1)
    assert out.end_ns - out.start_ns == MS and out.span_id
    hold_raw(buf, clock, 13)
    clock.now += 1200 * MS
    buf.expire()
    assert buf.counts["expired"] == 1 and buf.bytes == 0 and buf.held_traces() == 0


def test_raw_replica_spans_leave_the_garbage_collectors_lists() -> None:
    """A raw record holds only numbers, strings and bytes: one pass of the collector untracks
    it, so held spans never fill the old generation (whose growth triggers full collections
    of the node's whole heap)."""
    buf, _, clock = make()
    for trace_id in range(1, 101):
        hold_raw(buf, clock, trace_id)
    gc.collect(0)
    records = list(buf.current.spans.values())
    assert len(records) == 100 and not any(gc.is_tracked(r) for r in records)


def test_a_traced_frame_in_the_common_form_encodes_as_the_general_layout() -> None:
    """The coordinator's traced peer frames take one struct pack; the bytes are the general
    layout's, so older peers read them."""
    traceparent = f"00-{0x0AF7651916CD43DD8448EB211C80319C:032x}-{0xB7AD6B7169203331:016x}-02"
    body = frames.encode_records([Record(b"key", b"v" * 10, 5, False)], 0)
    frame = frames.encode(7, frames.PUT, body, traceparent)
    general = b"".join(
        (
            frames._HEAD.pack(7, frames.PUT, 55),
            traceparent.encode(),
            frames._U16.pack(0),
            body,
        )
    )
    assert frame == frames._LEN.pack(len(general)) + general
    assert frames.decode(general) == frames.Message(7, frames.PUT, traceparent, "", body)
    with_state = frames.encode(7, frames.PUT, body, traceparent, "k=v")
    assert frames.decode(with_state[4:]).tracestate == "k=v"
