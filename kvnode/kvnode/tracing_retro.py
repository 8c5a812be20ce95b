"""Retroactive sampling: spans of undecided traces wait in a bounded in-memory buffer.

In `spec.sampling.mode: retroactive` every operation is recorded, but only the spans of a trace
the head sampler (`OTEL_TRACES_SAMPLER`, parent-based trace-id ratio) kept leave at once. The
coordinator of an operation decides when its SERVER span ends (`decide`, docs/tracing.md,
"Retroactive sampling"):

- keep (the operation failed, took at least the latency threshold, or a span of this node in
  that trace ended with status ERROR): the root and the spans held for that trace go to the
  export queue, and so does every span of that trace that ends here later (the late answer of
  a third replica, a read repair); the coordinator then tells the replicas it called to do the
  same (a KEEP peer frame, `keep` on the replica);
- drop: the root is discarded, unencoded. It was never held: only spans that end before their
  trace is decided here (a replica's spans, a coordinator's read repair) are.

A replica is never told about drops: its spans of a dropped trace expire after `max_age`.
An ERROR span is never held: it leaves at once and keeps its trace on this node.

Recording is cheap because most of it is thrown away: a held span is one plain tuple of its
fields (no span object, no per-trace entry), filed by trace id in the current *slice* of the
buffer. A replica's SERVER span under an unsampled parent is held rawer still (`hold_remote`:
its parent's span id, the peer message's tracestate, its name, start and end, and its deferred
attributes): its own span id is drawn and its attributes built only if its trace is kept. The
coordinator's SERVER span is never held: it is decided when the operation ends (`decide`;
`dropped` for the stand-in of `kvnode.tracing_held`, which becomes a span only if kept). Every held record refers only to numbers, strings, bytes and tuples or dicts of them (a
deferred attribute builder by its index in `builders`, never the function): the garbage
collector untracks it at its first pass. A slice is one dict covering `max_age / SLICES` of
time; eviction drops whole slices (the oldest once it is older than `max_age`, or while the
estimated bytes exceed `max_bytes`, counted as `overflow`), so nothing is done per span to
expire it. A span is held at least `max_age`, at most an eighth longer. Adding a span never
blocks.

Runs on the event loop only (no lock). Imports only the standard library and the OTLP encoder's
`SpanData`; the spans are `tracing_lean.LeanSpan`s, read by field.
"""

from __future__ import annotations

import collections
import random
from collections.abc import Callable
from typing import Any

from kvnode.tracing_otlp import SpanData

# What one held span costs in memory, estimated without measuring each span: its record (a
# tuple of 14 fields, then its deferred attributes' arguments, then its attributes' keys and
# values), its trace id and its place in the slice's dict. A replica's span (its four
# attributes deferred, a key among their arguments) measures ~350 bytes under CPython 3.11
# (tracemalloc: tests/kvnode/test_tracing_retro_unit.py); the estimate is 352.
SPAN_BYTES = 256
ATTRIBUTE_BYTES = 64
KEPT_BYTES = 128  # a kept trace's id, remembered for max_age (its late spans leave at once)
SLICES = 8  # the buffer's age is covered by this many slices (eviction granularity)
_ERROR = 2  # OTLP status code ERROR

LAZY_BYTES = 96  # deferred attributes: their builder's arguments in the record (a key among them)
# A replica's span held raw (`hold_remote`): one tuple of numbers, strings and bytes (the parent
# id, times, the index of its attribute builder, then the builder's arguments). Measured ~260
# bytes under CPython 3.11 from the Python source, ~320 compiled (tracemalloc, with a key:
# tests/kvnode/test_tracing_retro_unit.py).
REMOTE_BYTES = 288
REMOTE_FIELDS = 6  # and then the attribute builder's arguments
FULL_FIELDS = 14  # a full record's fields before its attribute builder's arguments


def is_raw(record: Record) -> bool:
    """A raw replica span's record starts with its tracestate (a str), a full one with its
    span id (an int)."""
    return type(record[0]) is str


_SERVER = 2  # OTLP's SpanKind SERVER
# A held span: SpanData's fields after the trace id (the slice's key) but its attributes
# (span id, parent id, parent remote, tracestate, name, kind, start ns, end ns, events, status
# code, status message), then the members its span called (a coordinator's read repair),
# comma-separated, or "", its deferred attributes' builder (its index in
# `RetroBuffer.builders`, -1 for none), the number of the builder's arguments, the arguments,
# and then its attributes' keys and values, flattened; or a replica's span held raw:
# (tracestate header, parent span id, name, start ns, end ns, attribute builder's index, *its
# arguments). A record refers to no function, dict, list or nested tuple, only to numbers,
# strings and bytes (and `()`: no events): the garbage collector untracks it at its first pass
# (CPython keeps a tuple tracked while it holds a dict, or a tuple not yet untracked), so held
# records never reach the old generation, whose growth would otherwise trigger full
# collections of the node's whole heap.
Record = tuple[Any, ...]
# Attributes whose building is deferred until a span is exported: (build, args).
Deferred = tuple[Callable[..., dict[str, Any]], tuple[Any, ...]]


def with_deferred(attributes: dict[str, Any], lazy: Deferred) -> dict[str, Any]:
    """The deferred attributes built, then `attributes` (set on the span since) over them."""
    built = lazy[0](*lazy[1])
    if attributes:
        built.update(attributes)
    return built


class _Slice:
    __slots__ = ("spans", "until_ns", "bytes", "count")

    def __init__(self, until_ns: int):
        self.spans: dict[int, Record | list[Record]] = {}  # trace id -> its span(s) held here
        self.until_ns = until_ns  # every span held here ended before this time
        self.bytes = 0
        self.count = 0


def record_size(attributes: Any, lazy: object) -> int:
    """The estimated bytes of one held span with these attributes (and deferred ones, when
    `lazy` is true)."""
    return SPAN_BYTES + ATTRIBUTE_BYTES * len(attributes) + (LAZY_BYTES if lazy else 0)


def held_size(record: Record) -> int:
    """The estimated bytes of a held record (as counted when it was held)."""
    if is_raw(record):
        return REMOTE_BYTES
    attributes: int = (len(record) - FULL_FIELDS - record[13]) // 2
    return SPAN_BYTES + ATTRIBUTE_BYTES * attributes + (LAZY_BYTES if record[12] >= 0 else 0)


def random_span_id() -> int:
    """The SDK's `RandomIdGenerator.generate_span_id` (random, never 0), without its method
    call: what the node draws ids with when that is the provider's generator."""
    span_id = random.getrandbits(64)
    while not span_id:
        span_id = random.getrandbits(64)
    return span_id


def random_trace_id() -> int:
    """The SDK's `RandomIdGenerator.generate_trace_id`, as `random_span_id`."""
    trace_id = random.getrandbits(128)
    while not trace_id:
        trace_id = random.getrandbits(128)
    return trace_id


class RetroBuffer:
    """Undecided traces of one node. `export` is the export queue's `emit` (a kept span: a
    `LeanSpan`, or the `SpanData` rebuilt from a held record)."""

    def __init__(
        self,
        export: Callable[[Any], None],
        max_bytes: int,
        max_age_s: float,
        latency_threshold_s: float,
        clock: Callable[[], int],
        span_ids: Callable[[], int] = random_span_id,
    ):
        self.export = export
        self.span_ids = span_ids  # a raw replica span's own id, drawn when it is exported
        self.builders: list[Callable[..., dict[str, Any]]] = []  # of raw spans' attributes
        self._builder_index: dict[Callable[..., dict[str, Any]], int] = {}
        self.max_bytes = max_bytes
        self.max_age_ns = int(max_age_s * 1e9)
        self.slice_ns = max(1, self.max_age_ns // SLICES)
        self.threshold_ns = int(latency_threshold_s * 1e9)
        self.clock = clock  # time.time_ns in the node; a test's own clock in unit tests
        self.current = _Slice(self._slice_end(clock()))
        self.slices: collections.deque[_Slice] = collections.deque((self.current,))
        self.kept: dict[int, int] = {}  # trace id -> when it was kept (ns)
        self.bytes = 0
        # spans by outcome: kept (exported), dropped (the coordinator decided so), expired
        # (no decision within max_age: a replica's spans of dropped traces), overflow
        # (evicted before max_age because the buffer was full)
        self.counts = dict.fromkeys(("kept", "dropped", "expired", "overflow"), 0)
        self.keeps_received = 0

    def _slice_end(self, now: int) -> int:
        return now - now % self.slice_ns + self.slice_ns

    # -- spans -----------------------------------------------------------------------
    def emit(self, span: Any) -> None:
        """A span of an undecided trace ended (LeanSpan.end calls this in place of the export
        queue's `emit`); not the coordinator's root, which `decide` ends."""
        trace_id = span.trace_id
        if trace_id in self.kept:
            self._export_span(span)
            return
        if span.status_code == _ERROR:  # an error keeps its trace on this node, at once
            self._keep(trace_id, span.end_ns)
            self._export_span(span)
            return
        attributes, lazy, called = span.attributes, span.lazy, span.called
        build, args = (self._builder(lazy[0]), lazy[1]) if lazy is not None else (-1, ())
        record = (
            span.span_id,
            span.parent_id,
            span.parent_remote,
            span.trace_state,
            span.name,
            span.kind,
            span.start_ns,
            span.end_ns,
            tuple(span.events),
            span.status_code,
            span.status_message,
            ",".join(called) if called else "",  # (member ids have no commas: ring.py)
            build,
            len(args),
            *args,
            *[item for pair in attributes.items() for item in pair],
        )
        self._hold(trace_id, record, record_size(attributes, lazy), span.end_ns)

    def _builder(self, build: Callable[..., dict[str, Any]]) -> int:
        """The index of an attribute builder in `builders` (a record holds the index, not the
        function, which would keep the record tracked by the garbage collector)."""
        index = self._builder_index.get(build)
        if index is None:
            index = self._builder_index[build] = len(self.builders)
            self.builders.append(build)
        return index

    def hold_remote(
        self,
        trace_id: int,
        parent_id: int,
        tracestate: str,
        name: str,
        start_ns: int,
        end_ns: int,
        build: Callable[..., dict[str, Any]],
        args: tuple[Any, ...],
    ) -> None:
        """A replica's SERVER span (status unset) under an unsampled remote parent ended:
        held raw, its attributes `build(*args)` built only if kept (`args`: strings, bytes
        and numbers); a kept trace's leaves at once."""
        record = (tracestate, parent_id, name, start_ns, end_ns, self._builder(build), *args)
        if trace_id in self.kept:
            self.counts["kept"] += 1
            self.export(self._remote_data(trace_id, record))
            return
        self._hold(trace_id, record, REMOTE_BYTES, end_ns)

    def _hold(self, trace_id: int, record: Record, size: int, now: int) -> None:
        current = self.current
        if now >= current.until_ns:
            current = self._advance(now)
        spans = current.spans
        held = spans.get(trace_id)
        if held is None:
            spans[trace_id] = record
        elif type(held) is list:
            held.append(record)
        else:
            spans[trace_id] = [held, record]  # type: ignore[list-item]
        current.count += 1
        current.bytes += size
        self.bytes += size
        if self.bytes > self.max_bytes:
            self._overflow()

    def _remote_data(self, trace_id: int, record: Record) -> SpanData:
        """The SpanData of a raw replica span: its id drawn now, its attributes built now."""
        tracestate, parent_id, name, start_ns, end_ns, build = record[:REMOTE_FIELDS]
        return SpanData(
            trace_id,
            self.span_ids(),
            parent_id,
            True,
            tracestate,
            name,
            _SERVER,
            start_ns,
            end_ns,
            self.builders[build](*record[REMOTE_FIELDS:]),
            (),
            0,
            "",
        )

    def _full_data(self, trace_id: int, record: Record) -> SpanData:
        """The SpanData of a span held through the full path (`emit`)."""
        args_end = FULL_FIELDS + record[13]
        flat = record[args_end:]
        attributes = dict(zip(flat[::2], flat[1::2]))
        if record[12] >= 0:
            lazy = (self.builders[record[12]], record[FULL_FIELDS:args_end])
            attributes = with_deferred(attributes, lazy)
        return SpanData._make((trace_id, *record[:8], attributes, *record[8:11]))

    # -- decisions -------------------------------------------------------------------
    def decide(self, root: Any) -> list[str]:
        """The coordinator's operation ended with its SERVER span `root` (ended, not
        head-sampled, not held): keep the trace if it failed, was slow, or an error kept it
        here already. Returns the members to tell (empty when dropped)."""
        trace_id = root.trace_id
        if root.status_code != _ERROR and self.dropped(trace_id, root.start_ns, root.end_ns):
            return []
        called = self._keep(trace_id, root.end_ns)
        self._export_span(root)
        if root.called:
            called = root.called + called
        return list(dict.fromkeys(called))

    def dropped(self, trace_id: int, start_ns: int, end_ns: int) -> bool:
        """Whether the operation of a root that did not fail is dropped (counted): it was
        faster than the latency threshold and nothing kept its trace here already. What
        `decide` asks, and what `tracing_held.HeldRootSpan` asks before it becomes a span."""
        if end_ns - start_ns >= self.threshold_ns or trace_id in self.kept:
            return False
        self.counts["dropped"] += 1
        return True

    def _export_span(self, span: Any) -> None:
        span.materialize()
        self.counts["kept"] += 1
        self.export(span)

    def keep(self, trace_id: int) -> None:
        """A KEEP from the coordinator of this trace: export what is held, and what ends later."""
        self.keeps_received += 1
        self._keep(trace_id, self.clock())

    def _keep(self, trace_id: int, now: int) -> list[str]:
        """Mark the trace kept and export its held spans; the members they called."""
        if trace_id not in self.kept:
            self.kept[trace_id] = now
            self.bytes += KEPT_BYTES
        called: list[str] = []
        for piece in self.slices:
            held = piece.spans.pop(trace_id, None)
            if held is None:
                continue
            records: list[Record] = held if isinstance(held, list) else [held]
            for record in records:
                size = held_size(record)
                piece.count -= 1
                piece.bytes -= size
                self.bytes -= size
                self.counts["kept"] += 1
                if is_raw(record):
                    self.export(self._remote_data(trace_id, record))
                    continue
                if record[11]:
                    called += record[11].split(",")
                self.export(self._full_data(trace_id, record))
        return called

    # -- bounds ----------------------------------------------------------------------
    def _advance(self, now: int) -> _Slice:
        """Open a new slice if `now` is past the current one; evict slices older than max_age
        and forget kept traces older than max_age."""
        if now >= self.current.until_ns:
            self.current = _Slice(self._slice_end(now))
            self.slices.append(self.current)
        oldest = now - self.max_age_ns
        slices = self.slices
        while len(slices) > 1 and slices[0].until_ns <= oldest:
            self._evict(slices.popleft(), "expired")
        if self.kept:
            old = [t for t, at in self.kept.items() if at <= oldest]
            for trace_id in old:
                del self.kept[trace_id]
            self.bytes -= KEPT_BYTES * len(old)
        return self.current

    def _overflow(self) -> None:
        """Evict the oldest slices while over max_bytes (the current one last)."""
        slices = self.slices
        while self.bytes > self.max_bytes:
            if len(slices) > 1:
                self._evict(slices.popleft(), "overflow")
            elif self.current.count:
                self._evict(slices.popleft(), "overflow")
                self.current = _Slice(self.current.until_ns)
                slices.append(self.current)
            else:  # only kept trace ids left: they expire with their age
                return

    def _evict(self, piece: _Slice, reason: str) -> None:
        self.bytes -= piece.bytes
        self.counts[reason] += piece.count

    def expire(self) -> None:
        """Evict what is older than max_age now (the node calls this every second, so an idle
        node frees its buffer too)."""
        self._advance(self.clock())

    def held_traces(self) -> int:
        return sum(len(piece.spans) for piece in self.slices)

    def stats(self) -> dict[str, int]:
        return {
            **{f"buffer_{k}": v for k, v in self.counts.items()},
            "buffer_bytes": self.bytes,
            "buffer_traces": self.held_traces() + len(self.kept),
            "buffer_keeps_received": self.keeps_received,
        }
