"""Retroactive sampling: spans of undecided traces wait in a bounded in-memory buffer.

In `spec.sampling.mode: retroactive` every operation is recorded, but only the spans of a trace
the head sampler (`OTEL_TRACES_SAMPLER`, parent-based trace-id ratio) kept leave at once. The
others wait here, by trace id, until the coordinator of the operation decides when it ends
(docs/tracing.md, "Retroactive sampling"):

- keep (the operation failed, took at least the latency threshold, or a span of this node in
  that trace ended with status ERROR): its spans go to the export queue, and so does every span
  of that trace that ends here later (the late answer of a third replica, a read repair);
  the coordinator then tells the replicas it called to do the same (a KEEP peer frame);
- drop: its spans are discarded, unencoded.

A replica is never told about drops: its spans of a dropped trace expire after `max_age`.
An ERROR span is never held: it leaves at once and keeps its trace on this node. The buffer is
bounded by an estimate of its bytes: when full, the oldest trace is evicted (counted as
`overflow`); adding a span never blocks and never allocates more than the span's entry.

Runs on the event loop only (no lock). Imports only the standard library; the spans are
`tracing_lean.LeanSpan`s, read by field.
"""

from __future__ import annotations

import collections
from collections.abc import Callable
from typing import Any

# What one buffered span costs in memory, estimated without measuring each span: the span
# object with its slots and attribute dict (measured ~900 bytes for a replica's span with
# three attributes under CPython 3.12) plus a share for each further attribute.
SPAN_BYTES = 1024
ATTRIBUTE_BYTES = 96
TRACE_BYTES = 256  # a trace's entry, its list and its place in the eviction order
_ERROR = 2  # OTLP status code ERROR


class _Trace:
    __slots__ = ("trace_id", "spans", "bytes", "kept", "called", "first_ns")

    def __init__(self, trace_id: int, first_ns: int):
        self.trace_id = trace_id
        self.spans: list[Any] = []
        self.bytes = TRACE_BYTES
        self.kept = False
        self.called: list[str] = []  # members the coordinator called in this trace
        self.first_ns = first_ns


class RetroBuffer:
    """Undecided traces of one node. `export` is the export queue's `emit` (a kept span)."""

    def __init__(
        self,
        export: Callable[[Any], None],
        max_bytes: int,
        max_age_s: float,
        latency_threshold_s: float,
        clock: Callable[[], int],
    ):
        self.export = export
        self.max_bytes = max_bytes
        self.max_age_ns = int(max_age_s * 1e9)
        self.threshold_ns = int(latency_threshold_s * 1e9)
        self.clock = clock  # time.time_ns in the node; a test's own clock in unit tests
        self.traces: dict[int, _Trace] = {}
        self.order: collections.deque[_Trace] = collections.deque()
        self.bytes = 0
        # spans by outcome: kept (exported), dropped (the coordinator decided so), expired
        # (no decision within max_age: a replica's spans of dropped traces), overflow
        # (evicted before max_age because the buffer was full)
        self.counts = dict.fromkeys(("kept", "dropped", "expired", "overflow"), 0)
        self.keeps_received = 0

    # -- spans -----------------------------------------------------------------------
    def emit(self, span: Any) -> None:
        """A span of an undecided trace ended (LeanSpan.end calls this in place of the export
        queue's `emit`)."""
        now = span.end_ns
        entry = self.traces.get(span.trace_id)
        if entry is None:
            entry = self._open(span.trace_id, now)
        if entry.kept:
            self.counts["kept"] += 1
            self.export(span)
            return
        if span.status_code == _ERROR:  # an error keeps its trace on this node, at once
            entry.spans.append(span)
            self._keep(entry)
            return
        size = SPAN_BYTES + ATTRIBUTE_BYTES * len(span.attributes)
        entry.spans.append(span)
        entry.bytes += size
        self.bytes += size
        self._trim(now)

    def note_call(self, trace_id: int, member: str) -> None:
        """The coordinator called `member` in this (undecided) trace: it is told on a keep."""
        entry = self.traces.get(trace_id)
        if entry is None:
            entry = self._open(trace_id, self.clock())
        entry.called.append(member)

    # -- decisions -------------------------------------------------------------------
    def decide(self, root: Any) -> list[str]:
        """The coordinator's operation ended with its SERVER span `root` (ended, not
        head-sampled): keep the trace if it failed, was slow, or an error kept it here
        already. Returns the members to tell (empty when dropped)."""
        entry = self.traces.get(root.trace_id)
        failed = root.status_code == _ERROR
        slow = root.end_ns - root.start_ns >= self.threshold_ns
        if entry is None:  # nothing buffered (the root alone was an ERROR span, kept)
            return []
        if failed or slow or entry.kept:
            self._keep(entry)
            called, entry.called = entry.called, []
            return list(dict.fromkeys(called))
        del self.traces[root.trace_id]
        self.counts["dropped"] += len(entry.spans)
        self.bytes -= entry.bytes
        return []

    def keep(self, trace_id: int) -> None:
        """A KEEP from the coordinator of this trace: export what is held, and what ends later."""
        self.keeps_received += 1
        entry = self.traces.get(trace_id)
        if entry is None:
            entry = self._open(trace_id, self.clock())
        self._keep(entry)

    def _keep(self, entry: _Trace) -> None:
        entry.kept = True
        spans, entry.spans = entry.spans, []
        self.bytes -= entry.bytes - TRACE_BYTES
        entry.bytes = TRACE_BYTES
        self.counts["kept"] += len(spans)
        for span in spans:
            self.export(span)

    # -- bounds ----------------------------------------------------------------------
    def _open(self, trace_id: int, now: int) -> _Trace:
        entry = self.traces[trace_id] = _Trace(trace_id, now)
        self.order.append(entry)
        self.bytes += TRACE_BYTES
        self._trim(now)
        return entry

    def expire(self) -> None:
        """Evict what is older than max_age now (the node calls this every second, so an idle
        node frees its buffer too)."""
        self._trim(self.clock(), keep=0)

    def _trim(self, now: int, keep: int = 1) -> None:
        """Evict the oldest traces: those older than max_age, then while over max_bytes (the
        newest `keep` traces, the one being added to, stay)."""
        order, traces = self.order, self.traces
        oldest = now - self.max_age_ns
        while len(order) > keep and (order[0].first_ns < oldest or self.bytes > self.max_bytes):
            entry = order.popleft()
            if traces.get(entry.trace_id) is not entry:
                continue  # decided already (a dropped trace leaves its place in the order)
            del traces[entry.trace_id]
            self.bytes -= entry.bytes
            if entry.spans:
                reason = "expired" if entry.first_ns < oldest else "overflow"
                self.counts[reason] += len(entry.spans)

    def stats(self) -> dict[str, int]:
        return {
            **{f"buffer_{k}": v for k, v in self.counts.items()},
            "buffer_bytes": self.bytes,
            "buffer_traces": len(self.traces),
            "buffer_keeps_received": self.keeps_received,
        }
