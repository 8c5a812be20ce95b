"""Retroactive sampling's buffer (kvnode.tracing_retro) and its KEEP frame, as pure functions:
what is kept, dropped, expired and evicted, and the counts on /metrics."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

from kvnode.metrics import Metrics
from kvnode.tracing_retro import SPAN_BYTES, TRACE_BYTES, RetroBuffer
from kvnode.transport import frames

pytestmark = pytest.mark.unit

MS = 1_000_000


@dataclass
class FakeSpan:
    """The fields of a LeanSpan the buffer reads."""

    trace_id: int
    start_ns: int
    end_ns: int
    status_code: int = 0
    attributes: dict[str, Any] = field(default_factory=dict)


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000 * MS

    def __call__(self) -> int:
        return self.now


def make(max_bytes: int = 1 << 20, age_s: float = 5.0) -> tuple[RetroBuffer, list[Any], Clock]:
    exported: list[Any] = []
    clock = Clock()
    return RetroBuffer(exported.append, max_bytes, age_s, 0.5, clock), exported, clock


def span(clock: Clock, trace_id: int, ms: float = 1, status: int = 0) -> FakeSpan:
    return FakeSpan(trace_id, clock.now - int(ms * MS), clock.now, status)


def test_a_fast_successful_operation_is_dropped_unexported() -> None:
    buf, exported, clock = make()
    buf.note_call(7, "b")
    buf.emit(span(clock, 7))  # the coordinator's child, e.g. a read repair
    root = span(clock, 7, ms=3)
    buf.emit(root)
    assert buf.decide(root) == []
    assert exported == []
    assert buf.counts["dropped"] == 2 and buf.traces == {}
    assert buf.bytes == 0


def test_a_slow_operation_is_kept_with_every_member_it_called() -> None:
    buf, exported, clock = make()
    for member in ("b", "c", "b"):  # c called, b called twice (a read repair): told once
        buf.note_call(9, member)
    root = span(clock, 9, ms=500)  # exactly the threshold: kept
    buf.emit(root)
    assert buf.decide(root) == ["b", "c"]
    assert exported == [root]
    late = span(clock, 9)  # ends after the decision (a replica's late answer): leaves at once
    buf.emit(late)
    assert exported == [root, late]
    assert buf.counts["kept"] == 2 and buf.counts["dropped"] == 0


def test_an_error_span_leaves_at_once_and_keeps_its_trace() -> None:
    buf, exported, clock = make()
    first = span(clock, 5)
    buf.emit(first)
    assert exported == []
    failed = span(clock, 5, status=2)  # e.g. the CLIENT span of a failed replica call
    buf.emit(failed)
    assert exported == [first, failed], "the error keeps what the trace held too"
    root = span(clock, 5, ms=2)
    buf.emit(root)
    assert exported[-1] is root
    buf.note_call(5, "c")  # noted before the root ended, in a real coordinator
    assert buf.decide(root) == ["c"], "the coordinator still tells the replicas"


def test_a_failed_root_keeps_the_trace() -> None:
    buf, exported, clock = make()
    buf.note_call(3, "b")
    root = span(clock, 3, ms=1, status=2)
    buf.emit(root)
    assert buf.decide(root) == ["b"]
    assert exported == [root]


def test_a_keep_from_the_coordinator_exports_held_and_later_spans() -> None:
    buf, exported, clock = make()
    held = span(clock, 11)
    buf.emit(held)
    buf.keep(11)
    assert exported == [held]
    later = span(clock, 11)
    buf.emit(later)
    buf.keep(12)  # before the replica's span of trace 12 ended (a slow third replica)
    early = span(clock, 12)
    buf.emit(early)
    assert exported == [held, later, early]
    assert buf.keeps_received == 2


def test_undecided_traces_expire_after_the_age() -> None:
    buf, exported, clock = make(age_s=1.0)
    buf.emit(span(clock, 1))
    buf.emit(span(clock, 1))
    clock.now += 1001 * MS
    buf.emit(span(clock, 2))  # a later span trims what is older than the age
    assert 1 not in buf.traces and 2 in buf.traces
    assert buf.counts["expired"] == 2 and buf.counts["overflow"] == 0
    assert exported == []
    buf.keep(1)  # a KEEP after expiry finds nothing: the spans are gone, nothing breaks
    assert exported == []


def test_a_full_buffer_evicts_the_oldest_traces_and_counts_them() -> None:
    per_trace = TRACE_BYTES + SPAN_BYTES
    buf, _, clock = make(max_bytes=10 * per_trace)
    for trace_id in range(1, 31):
        buf.emit(span(clock, trace_id))
        assert buf.bytes <= 10 * per_trace
    assert buf.counts["overflow"] == 20
    assert sorted(buf.traces) == list(range(21, 31)), "the newest traces stay"


def test_a_dropped_trace_leaves_no_stale_order_entry_that_evicts_a_new_one() -> None:
    buf, _, clock = make(age_s=1.0)
    root = span(clock, 4)
    buf.emit(root)
    buf.decide(root)
    clock.now += 900 * MS
    buf.emit(span(clock, 4))  # the same trace id again, after its drop (a late span)
    clock.now += 200 * MS  # the first entry is now older than the age, the new one is not
    buf.emit(span(clock, 8))
    assert 4 in buf.traces and buf.counts["expired"] == 0


def test_buffer_counts_reach_metrics() -> None:
    buf, _, clock = make()
    root = span(clock, 1)
    buf.emit(root)
    buf.decide(root)
    metrics = Metrics()
    metrics.span_export(buf.stats)
    text = metrics.render()
    assert 'kvnode_trace_buffer_spans_total{outcome="dropped"} 1.0' in text
    assert 'kvnode_trace_buffer_spans_total{outcome="overflow"} 0.0' in text
    assert "kvnode_trace_buffer_bytes 0.0" in text


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
    buf.emit(span(clock, 1))
    buf.expire()
    assert 1 in buf.traces, "younger than the age"
    clock.now += 1001 * MS
    buf.expire()
    assert buf.traces == {} and buf.bytes == 0 and buf.counts["expired"] == 1
